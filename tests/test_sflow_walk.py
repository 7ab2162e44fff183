"""The batch walker of sFlow datagrams (`flowd.decode.sflow_walk`) against the per-datagram
decoder (`decode_sflow`, itself checked against tshark and pmacct):

- sound: for every datagram it takes, `decode_sflow` reports no error and gives exactly one batch
  of common-shape samples whose rows and datagram values equal the walker's, row for row;
- complete: every aligned datagram that `decode_sflow` reads wholly as common-shape samples is
  taken (so the fast path is not quietly unused);
- in the pipeline, walking changes neither the documents nor the counters.

Over the corpus, the benchmark traffic, and generated datagrams that mix every kind of sample,
some cut short or with bytes overwritten.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowd.bench.traffic import build_traffic
from flowd.decode.sflow import decode_flow_sample, decode_sflow
from flowd.decode.sflow_batch import SampleBatch
from flowd.decode.sflow_walk import MAX_SAMPLES, walk_sflow_datagrams
from flowd.errors import DecodeError
from tests.batch_decoding import assert_at_once_equals_per_datagram
from tests.test_sflow_properties import (
    PAYLOADS,
    address,
    counter_sample,
    datagram,
    expanded_flow_sample,
    ipv4_tcp_frame,
    needs_corpus,
    raw_header,
    u32_list,
    xdr,
)
from tests.test_sflow_table import AGENTS, flow_samples, frames

EXPORTER = ("192.0.2.1", 6343)
RECEIVED_AT = 1_764_072_000.5


def _walkable(payload: bytes) -> bool:
    """Whether `decode_sflow` reads the datagram wholly as common-shape samples (the generated
    datagrams are XDR-aligned, so this is when the walker must take them)."""
    try:
        result = decode_sflow(payload, EXPORTER, RECEIVED_AT)
    except DecodeError:
        return False
    parts = result.flows.parts
    declared = struct.unpack_from("!I", payload, 24 if payload[7] == 1 else 36)[0]
    return (
        not result.errors
        and len(parts) == 1
        and isinstance(parts[0], SampleBatch)
        and len(parts[0]) == declared
        and declared <= MAX_SAMPLES
    )


def assert_walk_agrees(payloads: list[bytes]) -> list[int]:
    """The walker is sound on `payloads` walked as one batch; returns the indices it took."""
    items = [(p, EXPORTER, RECEIVED_AT + n) for n, p in enumerate(payloads)]
    batch, left = walk_sflow_datagrams(items, decode_flow_sample)
    assert left == sorted(set(left)) and all(0 <= n < len(items) for n in left)
    taken = [n for n in range(len(items)) if n not in set(left)]
    assert (batch is None) == (not taken)
    row = 0
    for position, number in enumerate(taken):
        assert batch is not None
        result = decode_sflow(*items[number])
        assert not result.errors
        (expected,) = result.flows.parts
        assert isinstance(expected, SampleBatch)
        assert batch.datagrams[position] == expected.datagrams[0]
        assert batch.counts[position] == len(expected)
        assert [batch.walked(row + k) for k in range(len(expected))] == expected.rows
        row += len(expected)
    assert row == (len(batch) if batch is not None else 0)
    return taken


@pytest.mark.parametrize("router_records", [False, True], ids=["switch", "router"])
def test_benchmark_traffic_is_walked_whole_and_equal(router_records: bool) -> None:
    traffic = build_traffic("sflow", exporters=4, datagrams_per_exporter=16, router_records=router_records)
    payloads = [d.payload for s in traffic.streams for d in s.datagrams]
    assert assert_walk_agrees(payloads) == list(range(len(payloads)))


@needs_corpus
def test_corpus_datagrams() -> None:
    taken = assert_walk_agrees(PAYLOADS)
    assert taken == [n for n, p in enumerate(PAYLOADS) if _walkable(p) and len(p) % 4 == 0]
    assert taken  # some vendors' datagrams are all common-shape flow samples


def test_each_kind_of_datagram_left_for_the_per_datagram_decoder() -> None:
    frame = ipv4_tcp_frame()
    simple = xdr(1, struct.pack("!8I", 1, 4, 8, 0, 0, 1, 2, 1) + raw_header(frame))
    switch = xdr(1001, struct.pack("!IIII", 10, 0, 20, 0))
    switch_first = xdr(1, struct.pack("!8I", 1, 4, 8, 0, 0, 1, 2, 2) + switch + raw_header(frame))
    internal = xdr(1, struct.pack("!8I", 1, 4, 8, 0, 0, 0x3FFFFFFF, 2, 1) + raw_header(frame))
    expanded = xdr(3, struct.pack("!11I", 9, 3, 70000, 100, 5000, 0, 0, 12, 0, 7, 1) + raw_header(frame))
    head = struct.pack("!8I", 1, 4, 8, 0, 0, 1, 2, 2)
    cases = {
        "simple": (datagram(simple, simple), True),
        "switch record first": (datagram(switch_first, simple), True),
        "expanded": (datagram(expanded, simple), True),
        "ipv6 agent": (datagram(simple, agent="2001:db8::1"), True),
        "a counter sample": (datagram(simple, counter_sample()), False),
        "an internal interface": (datagram(simple, internal), False),
        "an expanded sample with ifIndex format 1": (datagram(expanded_flow_sample(raw_header(frame))), False),
        "two raw headers": (datagram(xdr(1, head + raw_header(frame) * 2)), False),
        "not ethernet": (datagram(xdr(1, head[:28] + b"\0\0\0\1" + raw_header(frame, protocol=11))), False),
        "more samples declared than sent": (datagram(simple, simple, count=3), False),
        "no samples": (datagram(), False),
        "trailing byte": (datagram(simple) + b"\x00", False),
        "a record past its sample": (datagram(_overrun(simple)), False),
        "a record length not a multiple of 4": (datagram(_unaligned(simple)), False),
        "cut short": (datagram(simple, simple)[:-4], False),
        "unknown agent type": (datagram(simple)[:7] + b"\x03" + datagram(simple)[8:], False),
        "version 4": (b"\x00\x00\x00\x04" + datagram(simple)[4:], False),
    }  # fmt: skip
    payloads = [payload for payload, _ in cases.values()]
    taken = set(assert_walk_agrees(payloads))
    assert {name for number, name in enumerate(cases) if number in taken} == {
        name for name, (_, walked) in cases.items() if walked
    }


def _overrun(sample: bytes) -> bytes:
    """The sample with its record's length four bytes longer than the sample holds."""
    length = struct.unpack_from("!I", sample, 44)[0]
    return sample[:44] + struct.pack("!I", length + 4) + sample[48:]


def _unaligned(sample: bytes) -> bytes:
    """The sample with its record's length two bytes shorter (the sample length unchanged)."""
    length = struct.unpack_from("!I", sample, 44)[0]
    return sample[:44] + struct.pack("!I", length - 2) + sample[48:]


@st.composite
def sampled_datagrams(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A datagram of generated samples (mostly common-shape ones), and whether it was then cut
    or had bytes overwritten."""
    frame = draw(frames())
    plain = xdr(1, struct.pack("!8I", 1, 4, 8, 0, 0, 1, 2, 1) + raw_header(frame))
    samples = draw(
        st.lists(
            st.one_of(
                st.just(plain),
                flow_samples(),
                st.just(xdr(3, struct.pack("!11I", 9, 3, 7, 1, 5, 0, 0, 12, 0, 7, 1) + raw_header(frame))),
                st.just(counter_sample()),
            ),
            min_size=1,
            max_size=8,
        )
    )
    payload = datagram(*samples, agent=draw(AGENTS), sequence=draw(st.integers(0, 2**32 - 1)))
    mutated = draw(st.integers(0, 3)) == 0
    if mutated:
        if draw(st.booleans()):
            payload = payload[: draw(st.integers(0, len(payload)))]
        else:
            data = bytearray(payload)
            for _ in range(draw(st.integers(1, 4))):
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
            payload = bytes(data)
    return payload, mutated


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(sampled_datagrams(), min_size=1, max_size=12))
def test_generated_datagrams(datagrams: list[tuple[bytes, bool]]) -> None:
    payloads = [payload for payload, _ in datagrams]
    taken = set(assert_walk_agrees(payloads))
    for number, (payload, mutated) in enumerate(datagrams):
        if not mutated:
            assert (number in taken) == _walkable(payload)


def test_pipeline_documents_and_counters_are_those_of_the_per_datagram_path(monkeypatch: pytest.MonkeyPatch) -> None:
    traffic = build_traffic("sflow", exporters=2, datagrams_per_exporter=16)
    payloads = [d.payload for s in traffic.streams for d in s.datagrams]
    frame = ipv4_tcp_frame()
    simple = xdr(1, struct.pack("!8I", 1, 4, 8, 0, 0, 1, 2, 1) + raw_header(frame))
    payloads[3:3] = [datagram(simple, counter_sample()), datagram(simple, count=2), b"\x00\x00\x00\x05\x00"]
    netflow = build_traffic("v5", exporters=1, datagrams_per_exporter=2).streams[0].datagrams[0].payload
    batch = [(p, ("192.0.2.7", 6343), RECEIVED_AT + n) for n, p in enumerate([*payloads, netflow])]

    rows = sum(d.flows for s in traffic.streams for d in s.datagrams)
    walking, _ = assert_at_once_equals_per_datagram(monkeypatch, batch, "walk_sflow_datagrams", rows)
    assert walking.stats.counter("flowd_datagrams_decoded", ("sflow",)) == len(payloads) - 1


def test_router_and_gateway_records_of_every_length_are_walked_as_decoded() -> None:
    """Router and gateway records cut at every word, with IPv4 and IPv6 next hops, no AS path,
    one segment (of an invalid type 0 too) and two: the walker takes a sample exactly when the
    per-sample decoder reads its records without an error (two segments through the per-sample
    functions), with the same fields."""
    frame = ipv4_tcp_frame()
    tail = u32_list([1, 2]) + struct.pack("!I", 100)  # communities, local preference
    segment = struct.pack("!I", 2) + u32_list([64600, 64700])  # an AS_SEQUENCE
    paths = ([], [segment], [struct.pack("!I", 0) + u32_list([7])], [struct.pack("!I", 1) + u32_list([1])] * 2)
    gateways = [
        address(hop) + struct.pack("!IIII", 65000, 64500, 0, len(path)) + b"".join(path) + tail
        for hop in ("192.0.2.254", "2001:db8::fe")
        for path in paths
    ]
    routers = [address(hop) + struct.pack("!II", 24, 16) for hop in ("192.0.2.254", "2001:db8::fe")]
    payloads, whole = [], []
    for kind, bodies in ((1003, gateways), (1002, routers)):
        for body in bodies:
            for cut in range(16, len(body) + 1, 4):
                record = xdr(kind, body[:cut])
                whole.append(cut == len(body))
                sample = xdr(1, struct.pack("!8I", 1, 4, 8, 0, 0, 1, 2, 2) + raw_header(frame) + record)
                payloads.append(datagram(sample))
    taken = assert_walk_agrees(payloads)
    assert taken == [n for n, payload in enumerate(payloads) if _walkable(payload)]
    assert [n for n, full in enumerate(whole) if full] == taken
