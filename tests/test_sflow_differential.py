"""sFlow's decoding paths held to one another on hostile input (a bounded property over the
mutations of the differential fuzz campaign):

- the generic decoder: `decode_sflow` with every flow sample through `decode_flow_sample`
  (the common-shape shortcut, `walk_simple_sample`, switched off), each record's `flow_document`;
- per datagram: `decode_datagram` as it is, common-shape samples kept as a `SampleBatch`;
- the pipeline's `BatchDecoder` with and without its batch paths (`sflow_walk`, the numpy
  reader `sample_batch_tables`, the dict tables `sflow_tables`), as dicts and as NDJSON.

They must give the same documents, decode errors by reason and flow counts, and the batch
paths must raise nothing (`tests.test_decode_differential.assert_batch_agrees`).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowd.bench.traffic import build_traffic
from flowd.decode import sflow
from flowd.output import sflow_table
from tests.test_decode_differential import Item, _per_datagram, assert_batch_agrees
from tests.test_sflow_properties import PAYLOADS, counter_sample, datagram, expanded_flow_sample, raw_header, xdr
from tests.test_sflow_table import AGENTS, flow_samples, frames

RECEIVED_AT = 1_764_072_000.5
BENCH = [
    d.payload
    for routing in (False, True)
    for s in build_traffic("sflow", exporters=1, datagrams_per_exporter=4, router_records=routing).streams
    for d in s.datagrams
]
"""Datagrams of the benchmark's switch and router traffic: the common shape the fast paths take
(besides the corpus's, `PAYLOADS`, when it is there)."""
BOUNDARIES = [0, 1, 3, 4, 8, 16, 64, 65, 0x3FFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def assert_sflow_paths_agree(batch: list[Item]) -> None:
    """`assert_batch_agrees`, and the generic decoder gives the same documents and errors."""
    assert_batch_agrees(batch)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sflow, "walk_simple_sample", lambda *_: None)
        generic = _per_datagram(batch)
    assert generic == _per_datagram(batch)


@st.composite
def samples(draw: st.DrawFn) -> bytes:
    """A sample of any kind: common-shape and varied flow samples, expanded ones, counters, a
    discarded packet, an unknown format or enterprise."""
    kind = draw(st.sampled_from(["plain", "varied", "varied", "expanded", "counters", "discarded", "unknown"]))
    if kind == "plain":  # common-shape, with the values a table might take for others
        records = [raw_header(draw(frames()))]
        if draw(st.booleans()):
            vlan = draw(st.sampled_from([0, 7, 4096, 0xFFFFFFFF]))
            records.insert(draw(st.integers(0, 1)), xdr(1001, struct.pack("!IIII", vlan, 1, vlan, 2)))
        rate, interface = draw(st.sampled_from([0, 1, 8, 0xFFFFFFFF])), draw(st.sampled_from([0, 1, 0x3FFFFFFE]))
        head = struct.pack("!8I", draw(st.integers(0, 9)), 4, rate, 0, 0, interface, 2, len(records))
        return xdr(1, head + b"".join(records))
    if kind == "varied":
        return draw(flow_samples())
    if kind == "expanded":
        return expanded_flow_sample(raw_header(draw(frames())), out_format=draw(st.sampled_from([0, 1, 2])))
    if kind == "counters":
        generic = xdr(1, bytes(88))
        return counter_sample(*draw(st.lists(st.just(generic), max_size=2)), expanded=draw(st.booleans()))
    if kind == "discarded":
        head = struct.pack("!8I", 41, 0, 7, 3, 7, 0, draw(st.sampled_from([0, 259, 9999])), 1)
        return xdr(5, head + raw_header(draw(frames())))
    return xdr(draw(st.sampled_from([6, (4413 << 12) | 1, (1 << 12) | 3])), bytes(12))


def _mutated(draw: st.DrawFn, payload: bytes) -> bytes:
    """The datagram cut short, with a word set to a boundary (a count, a length, a format, the
    agent's type), bytes flipped, or four bytes inserted or removed."""
    data = bytearray(payload)
    if not data:
        return payload
    how = draw(st.sampled_from(["cut", "word", "flip", "insert", "remove"]))
    at = draw(st.integers(0, len(data) - 1))
    if how == "cut":
        return bytes(data[:at])
    if how == "word":
        at -= at % 4
        data[at : at + 4] = struct.pack("!I", draw(st.sampled_from(BOUNDARIES)))
    elif how == "flip":
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif how == "insert":
        data[at - at % 4 : at - at % 4] = bytes(4)
    else:
        del data[at - at % 4 : at - at % 4 + 4]
    return bytes(data)


@st.composite
def sflow_batches(draw: st.DrawFn) -> list[Item]:
    """A receive batch: generated datagrams (samples duplicated or reordered, the agent's
    address of any type, some mutated) among benchmark ones, from one or two exporters."""
    payloads = []
    for _ in range(draw(st.integers(1, 4))):
        chosen = draw(st.lists(samples(), min_size=1, max_size=5))
        if draw(st.integers(0, 4)) == 0:  # a sample again, somewhere else
            chosen.insert(draw(st.integers(0, len(chosen))), draw(st.sampled_from(chosen)))
        payload = datagram(*chosen, agent=draw(AGENTS), sequence=draw(st.integers(0, 2**32 - 1)))
        if draw(st.integers(0, 5)) == 0:  # sFlow v5 `address`: unknown (0, no bytes), or of no type
            agent_type = draw(st.sampled_from([0, 3, 0xFFFFFFFF]))
            payload = payload[:4] + struct.pack("!I", agent_type) + payload[24 if payload[7] == 2 else 12 :]
        for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
            payload = _mutated(draw, payload)
        payloads.append(payload)
    payloads += draw(st.lists(st.sampled_from(BENCH + PAYLOADS), max_size=4))
    payloads = draw(st.permutations(payloads))
    exporters = [("192.0.2.1", 6343), ("192.0.2.2", 6343)]
    return [(p, draw(st.sampled_from(exporters)), RECEIVED_AT + n * 1e-3) for n, p in enumerate(payloads)]


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(sflow_batches(), st.sampled_from([True, True, True, False]))
def test_generated_sflow_decodes_alike_on_every_path(batch: list[Item], small_tables: bool) -> None:
    """Flow, expanded, counter, discarded and unknown samples, mutated or not, among the common
    shape the fast paths take: every path gives the same documents, errors and counts (tables
    for every layout, however few its rows, when `small_tables`)."""
    with pytest.MonkeyPatch.context() as patch:
        if small_tables:
            patch.setattr(sflow_table, "MIN_TABLE_ROWS", 1)
        assert_sflow_paths_agree(batch)
