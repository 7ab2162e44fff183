"""sFlow flow samples as tables (`flowd.output.sflow_table`) must give exactly the documents of
the per-sample path (`sflow_document`, itself checked against tshark and pmacct), as dicts and as
NDJSON: over the corpus, over the benchmark traffic, and over generated samples that vary every
branch of the document mapping (layers, rates, interface encodings, VLANs, AS numbers, address
families mixed in one layout, values a table cannot hold). Both table builders are held to it:
from the decoded dicts, and from the header snapshots read in numpy (`sflow_batch`)."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowd.bench.traffic import build_traffic
from flowd.decode import TemplateCache, decode_datagram
from flowd.decode.sflow import decode_flow_sample, decode_sflow
from flowd.decode.sflow_batch import SampleBatch, join_sample_batches
from flowd.errors import DecodeError
from flowd.model import KIND_SFLOW_FLOW, FlowRecord
from flowd.output import sflow_table
from flowd.output.documents import flow_document
from flowd.output.sflow_table import sample_batch_tables, sflow_tables
from flowd.output.table import DocumentTable, split_lines
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.metrics import WorkerStats
from tests.test_sflow_corpus import MALFORMED, SFLOW_FILES, corpus_datagrams
from tests.test_sflow_properties import address, datagram, needs_corpus, u32_list, xdr

RECEIVED_AT = 1_764_072_000.25


def canonical(documents: list[dict[str, Any]]) -> list[bytes]:
    return sorted(orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in documents)


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys in {keys}"
    return dict(pairs)


def assert_sample_batches_match(parts: list[Any]) -> int:
    """The vectorised reader's tables plus its rows left over give the per-sample documents;
    returns how many rows it took."""
    batches = [p for p in parts if isinstance(p, SampleBatch)]
    if not batches:
        return 0
    batch = join_sample_batches(batches)
    expected = canonical([flow_document(r) for r in batch])
    tables, left = sample_batch_tables(batch)
    leftover = [flow_document(batch.record(row)) for row in left]
    assert sum(len(t) for t in tables) + len(left) == len(batch)
    assert canonical([d for t in tables for d in t.to_dicts()] + leftover) == expected
    lines = [line for t in tables for line in split_lines(t.to_ndjson())]
    for line in lines:
        json.loads(line, object_pairs_hook=_no_duplicate_keys)
    assert canonical([orjson.loads(line) for line in lines] + leftover) == expected
    return sum(len(t) for t in tables)


def assert_tables_match(records: list[FlowRecord]) -> list[DocumentTable]:
    """Tables plus the records left over give the per-sample documents, as dicts and as NDJSON."""
    expected = canonical([flow_document(r) for r in records])
    tables, rest = sflow_tables(records)
    assert sum(len(t) for t in tables) + len(rest) == len(records)
    leftover = [flow_document(r) for r in rest]
    assert canonical([d for t in tables for d in t.to_dicts()] + leftover) == expected
    lines = [line for t in tables for line in split_lines(t.to_ndjson())]
    for line in lines:
        json.loads(line, object_pairs_hook=_no_duplicate_keys)
    assert canonical([orjson.loads(line) for line in lines] + leftover) == expected
    return tables


@pytest.fixture
def small_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables for every layout, however few samples share it, so each branch runs."""
    monkeypatch.setattr(sflow_table, "MIN_TABLE_ROWS", 1)


@needs_corpus
@pytest.mark.usefixtures("small_tables")
def test_corpus_samples_as_tables_equal_per_sample_documents() -> None:
    records: list[FlowRecord] = []
    parts: list[Any] = []
    for name, _, _ in SFLOW_FILES:
        if name in MALFORMED:
            continue
        for d in corpus_datagrams(name):
            flows = decode_sflow(d.payload, d.source, d.timestamp).flows
            records.extend(flows)
            parts.extend(flows.parts)
    assert_sample_batches_match(parts)
    tables = assert_tables_match(records)
    flow_samples = sum(r.kind == KIND_SFLOW_FLOW for r in records)
    assert flow_samples > 10
    assert sum(len(t) for t in tables) == flow_samples  # every flow sample went the table way


def test_benchmark_traffic_as_tables_equals_per_sample_documents() -> None:
    traffic = build_traffic("sflow", exporters=4, datagrams_per_exporter=16)
    templates = TemplateCache()
    records: list[FlowRecord] = []
    parts: list[Any] = []
    for stream in traffic.streams:
        for item in stream.datagrams:
            flows = decode_datagram(item.payload, ("127.0.0.1", 6343), templates, RECEIVED_AT).flows
            records.extend(flows)
            parts.extend(flows.parts)
    tables = assert_tables_match(records)
    assert sum(len(t) for t in tables) > len(records) // 2  # real traffic shares layouts
    assert assert_sample_batches_match(parts) > len(records) // 2  # and is mostly read in numpy
    batch_tables, _ = sample_batch_tables(join_sample_batches([p for p in parts if isinstance(p, SampleBatch)]))
    has_flags = [{"sflow.tcp_flags" in d for d in t.to_dicts()} for t in batch_tables]
    assert {True, False} in has_flags  # TCP and UDP samples share a table, UDP rows without flags


# --- generated samples ----------------------------------------------------------------------------


def _ethernet(vlans: list[int], ethertype: int) -> bytes:
    frame = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01"
    for vlan in vlans:
        frame += struct.pack("!HH", 0x8100, vlan)
    return frame + struct.pack("!H", ethertype)


def _l4(protocol: int, source_port: int, destination_port: int) -> bytes:
    if protocol == 6:
        return struct.pack("!HHIIBBHHH", source_port, destination_port, 1, 0, 0x50, 0x18, 512, 0, 0)
    if protocol == 17:
        return struct.pack("!HHHH", source_port, destination_port, 8, 0)
    return struct.pack("!BBHI", source_port & 0xFF, destination_port & 0xFF, 0, 0)  # ICMP type, code


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """An Ethernet frame: 0-2 VLAN tags, IPv4 or IPv6, TCP/UDP/ICMP, maybe cut short."""
    vlans = draw(st.lists(st.integers(0, 4095), max_size=2))
    six = draw(st.booleans())
    protocol = draw(st.sampled_from([6, 17, 1, 47]))
    if six and protocol == 1:
        protocol = 58
    ports = (draw(st.integers(0, 65535)), draw(st.integers(0, 65535)))
    hosts = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    payload = _l4(protocol, *ports)
    if six:
        source, destination = (socket.inet_pton(socket.AF_INET6, f"2001:db8::{h}") for h in hosts)
        ip = struct.pack("!IHBB16s16s", 0x60000000, len(payload), protocol, 64, source, destination)
        frame = _ethernet(vlans, 0x86DD) + ip + payload
    else:
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, protocol, 0, bytes([10, 0, 0, hosts[0]]),
            bytes([10, 0, 0, hosts[1]]),
        )  # fmt: skip
        frame = _ethernet(vlans, 0x0800) + ip + payload
    cut = draw(st.sampled_from([len(frame), len(frame), 40, 18]))
    return frame[:cut]


@st.composite
def flow_samples(draw: st.DrawFn) -> bytes:
    records = []
    kind = draw(st.sampled_from(["raw", "raw", "sampled_ipv4", "sampled_ipv6"]))
    if kind == "raw":
        frame = draw(frames())
        frame_length = draw(st.sampled_from([len(frame) + 4, 1518, 0xFFFFFFFF]))
        records.append(xdr(1, struct.pack("!IIII", 1, frame_length, 4, len(frame)) + frame))
    else:
        six = kind == "sampled_ipv6"
        host = draw(st.integers(1, 3))
        source = socket.inet_pton(socket.AF_INET6, f"2001:db8::{host}") if six else bytes([192, 0, 2, host])
        destination = socket.inet_pton(socket.AF_INET6, "2001:db8::9") if six else bytes([192, 0, 2, 9])
        layout = "!II16s16sIIII" if six else "!II4s4sIIII"
        protocol = draw(st.sampled_from([6, 17, 300]))  # 300: not an IP protocol byte
        body = struct.pack(layout, 1500, protocol, source, destination, 1000, 443, 0x12, 0)
        records.append(xdr(4 if six else 3, body))
    if draw(st.booleans()):
        vlan = draw(st.sampled_from([0, 7, 0xFFFFFFFF]))
        records.append(xdr(1001, struct.pack("!IIII", vlan, 1, 8, 2)))
    if draw(st.booleans()):
        records.append(xdr(1002, next_hops(draw) + struct.pack("!II", draw(st.integers(0, 32)), 24)))
    if draw(st.booleans()):
        source_as = draw(st.sampled_from([0, 64500]))
        segments = draw(st.lists(st.lists(st.integers(1, 2**32 - 1), max_size=3), max_size=2))
        kinds = [draw(st.sampled_from([2, 1, 0])) for _ in segments]  # AS_SEQUENCE, AS_SET, invalid
        path = struct.pack("!I", len(segments)) + b"".join(
            struct.pack("!I", kind) + u32_list(s) for kind, s in zip(kinds, segments, strict=True)
        )
        communities = u32_list(draw(st.lists(st.integers(0, 2**32 - 1), max_size=3)))
        gateway = next_hops(draw) + struct.pack("!III", 65000, source_as, 0) + path + communities + b"\0\0\0\x64"
        records.append(xdr(1003, gateway))
    records = draw(st.permutations(records))
    rate = draw(st.sampled_from([0, 1, 1024, 0xFFFFFFFF]))
    input_word = draw(st.sampled_from([0, 3, 0x3FFFFFFF, (1 << 30) | 5]))
    output_word = draw(st.sampled_from([0, 7, 0x3FFFFFFF, (2 << 30) | 4]))
    head = struct.pack("!8I", draw(st.integers(0, 9)), 4, rate, 1000, 0, input_word, output_word, len(records))
    return xdr(1, head + b"".join(records))


def next_hops(draw: st.DrawFn) -> bytes:
    """An sFlow address: IPv4, IPv6 or of unknown type 0 (no address)."""
    next_hop = draw(st.sampled_from(["192.0.2.254", "2001:db8::fe", None]))
    return struct.pack("!I", 0) if next_hop is None else address(next_hop)


AGENTS = st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::a"])


@pytest.mark.usefixtures("small_tables")
@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::a"]), st.lists(flow_samples(), min_size=1, max_size=6)
        ),
        min_size=1,
        max_size=5,
    ),
    st.integers(1, 3),
)
def test_generated_samples_as_tables_equal_per_sample_documents(
    datagrams: list[tuple[str, list[bytes]]], repeat: int
) -> None:
    records: list[FlowRecord] = []
    parts: list[Any] = []
    for number, (agent, samples) in enumerate(datagrams * repeat):
        payload = datagram(*samples, agent=agent, sequence=number)
        flows = decode_sflow(payload, (agent, 6343), RECEIVED_AT + number).flows
        records.extend(flows)
        parts.extend(flows.parts)
    assert_tables_match(records)
    assert_sample_batches_match(parts)


def test_samples_keep_their_order_and_records_whatever_path_they_take() -> None:
    """A datagram mixing samples of the common shape with others: its records come out in wire
    order and equal, one by one, those of the per-sample decoder."""
    simple = xdr(1, struct.pack("!8I", 1, 4, 8, 0, 0, 1, 2, 1) + xdr(1, struct.pack("!IIII", 1, 64, 4, 54) + _FRAME))
    other = xdr(
        1, struct.pack("!8I", 2, 4, 8, 0, 0, 0x3FFFFFFF, 2, 1) + xdr(1, struct.pack("!IIII", 1, 64, 4, 54) + _FRAME)
    )
    payload = datagram(simple, other, simple, simple, other)
    flows = decode_sflow(payload, ("192.0.2.1", 6343), RECEIVED_AT).flows
    assert [type(p).__name__ for p in flows.parts] == ["SampleBatch", "list", "SampleBatch", "list"]
    assert [r.fields["sample_sequence"] for r in flows] == [1, 2, 1, 1, 2]
    data = memoryview(payload)
    per_sample = []
    position = 28
    for _ in range(5):
        _, length = struct.unpack_from("!II", payload, position)
        fields, _ = decode_flow_sample(data, position + 8, position + 8 + length, False, "192.0.2.9", [])
        per_sample.append(fields)
        position += 8 + length
    assert [r.fields for r in flows] == per_sample


def _frame(
    protocol: int, *, six: bool = False, vlans: tuple[int, ...] = (), ihl: int = 5, fragment: int = 0,
    padding: int = 0, destination_port: int = 80, total: int | None = None,
) -> bytes:  # fmt: skip
    """An Ethernet frame for the vectorised reader's corner cases (options, fragments, padding)."""
    if protocol == 6:
        l4 = struct.pack("!HHIIBBHHH", 40000, destination_port, 7, 0, 0x50, 0x1B, 512, 0, 0)
    elif protocol in (17, 132):
        l4 = struct.pack("!HHHH", 53, destination_port, 8, 0) + (b"\x08\0\0\0\0\0\x2a\0" if protocol == 17 else b"")
    elif protocol in (1, 58):
        l4 = struct.pack("!BBHI", 3, 1, 0, 0)
    else:
        l4 = b"\x00" * 8
    if six:
        source, destination = (socket.inet_pton(socket.AF_INET6, a) for a in ("2001:db8::1", "2001:db8:1::2"))
        ip = struct.pack("!IHBB16s16s", 0x6A012345, len(l4), protocol, 63, source, destination)
        ether_type = 0x86DD
    else:
        options = b"\x01" * (4 * (ihl - 5))
        total = 4 * ihl + len(l4) if total is None else total
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x40 | ihl, 0xB8, total, 77, fragment, 61, protocol, 0, bytes([192, 0, 2, 1]),
            bytes([198, 51, 100, 2]),
        ) + options  # fmt: skip
    tags = b"".join(struct.pack("!HH", tpid, 0x2000 | 100 + n) for n, tpid in enumerate(vlans))
    ether_type = 0x86DD if six else 0x0800
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01" + tags + struct.pack("!H", ether_type) + ip + l4 + bytes(padding)


CORNER_FRAMES = {
    "tcp": _frame(6),
    "tcp-options": _frame(6, ihl=8),
    "tcp-padded": _frame(6, padding=12),
    "udp": _frame(17),
    "udp-short-total": _frame(17, total=22, padding=20),  # the IP length ends inside the UDP header
    "vxlan": _frame(17, destination_port=4789),
    "sctp": _frame(132),
    "icmp": _frame(1),
    "gre": _frame(47),
    "fragment": _frame(6, fragment=0x2000),
    "later-fragment": _frame(6, fragment=0x0010),
    "vlan": _frame(17, vlans=(0x8100,)),
    "qinq": _frame(17, vlans=(0x88A8, 0x8100)),
    "tcp6": _frame(6, six=True),
    "icmp6": _frame(58, six=True),
    "udp6-vlan": _frame(17, six=True, vlans=(0x8100,)),
    "hop-by-hop": _frame(0, six=True),
}


@pytest.mark.usefixtures("small_tables")
@pytest.mark.parametrize("name", sorted(CORNER_FRAMES))
def test_every_snapshot_length_of_corner_frames(name: str) -> None:
    """Each frame cut at every length, as exporters cut their snapshots: the vectorised reader
    takes what it can read whole and leaves the rest, with the per-sample decoder's documents."""
    frame = CORNER_FRAMES[name]
    samples = []
    for cut in range(len(frame) + 1):
        raw = xdr(1, struct.pack("!IIII", 1, len(frame) + 4, 4, cut) + frame[:cut])
        switch = xdr(1001, struct.pack("!IIII", 5, 1, 6, 2)) if cut % 2 else b""
        records = 2 if switch else 1
        samples.append(xdr(1, struct.pack("!8I", cut, 3, 256, 0, 0, 1, 2, records) + raw + switch))
    parts: list[Any] = []
    for start in range(0, len(samples), 8):
        parts += decode_sflow(datagram(*samples[start : start + 8]), ("192.0.2.1", 6343), RECEIVED_AT).flows.parts
    taken = assert_sample_batches_match(parts)
    whole = {"qinq", "vxlan", "fragment", "later-fragment", "hop-by-hop", "udp-short-total"}
    assert (taken == 0) == (name in whole)  # what the reader leaves, it leaves for every cut


_FRAME = (
    b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
    + struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    + struct.pack("!HHIIBBHHH", 1234, 80, 0, 0, 0x50, 0x12, 0, 0, 0)
)


_TRAFFIC = [
    d.payload for s in build_traffic("sflow", exporters=2, datagrams_per_exporter=4).streams for d in s.datagrams
]


@pytest.mark.usefixtures("small_tables")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_byte_flips_read_in_numpy_equal_the_per_sample_documents(data: st.DataObject) -> None:
    """Hostile snapshots (any byte of a datagram overwritten: lengths, IHL, versions, ports):
    whatever the walk accepts, the vectorised reader either reads as the per-sample decoder
    does or leaves to it, and nothing raises."""
    parts: list[Any] = []
    for payload in data.draw(st.lists(st.sampled_from(_TRAFFIC), min_size=1, max_size=4)):
        damaged = bytearray(payload)
        for _ in range(data.draw(st.integers(1, 6))):
            damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
        try:
            parts += decode_sflow(bytes(damaged), ("192.0.2.1", 6343), RECEIVED_AT).flows.parts
        except DecodeError:
            continue
    assert_sample_batches_match(parts)


@pytest.mark.usefixtures("small_tables")
def test_explicit_nulls_and_mixed_families_stay_exact() -> None:
    """A gateway whose next hop is unknown (a null in the dict path) keeps the dict path; sampled
    IPv4 and IPv6 records share one layout, so their flow ids are hashed sample by sample."""
    four = xdr(3, struct.pack("!II4s4sIIII", 60, 6, b"\x0a\0\0\1", b"\x0a\0\0\2", 1, 2, 0, 0))
    six_addresses = [socket.inet_pton(socket.AF_INET6, a) for a in ("2001:db8::1", "2001:db8::2")]
    six = xdr(4, struct.pack("!II16s16sIIII", 60, 6, *six_addresses, 1, 2, 0, 0))
    unknown_hop = xdr(1003, struct.pack("!I", 0) + struct.pack("!IIII", 1, 2, 3, 0) + struct.pack("!II", 0, 5))
    payload = datagram(*(xdr(1, struct.pack("!8I", 1, 4, 8, 0, 0, 1, 2, 1) + r) for r in (four, six, four, six)))
    mixed = list(decode_sflow(payload, ("192.0.2.1", 6343), RECEIVED_AT).flows)
    tables = assert_tables_match(mixed)
    assert [len(t) for t in tables] == [4]
    payload = datagram(xdr(1, struct.pack("!8I", 1, 4, 8, 0, 0, 1, 2, 2) + four + unknown_hop))
    nulls = list(decode_sflow(payload, ("192.0.2.1", 6343), RECEIVED_AT).flows)
    assert nulls[0].fields["bgp_next_hop"] is None
    tables, rest = sflow_tables(nulls)
    assert (tables, rest) == ([], nulls)
    assert flow_document(nulls[0])["sflow.bgp_next_hop"] is None


def test_the_worker_writes_sflow_flow_samples_as_tables() -> None:
    traffic = build_traffic("sflow", exporters=2, datagrams_per_exporter=8)
    batch = [(d.payload, ("127.0.0.1", 6343), RECEIVED_AT) for s in traffic.streams for d in s.datagrams]
    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    parts = decoder.decode_parts(batch)
    assert any(isinstance(p, DocumentTable) for p in parts)
    documents = [d for p in parts for d in (p.to_dicts() if isinstance(p, DocumentTable) else p)]
    templates = TemplateCache()
    expected = [
        flow_document(r) for payload, source, at in batch for r in decode_datagram(payload, source, templates, at).flows
    ]
    assert canonical(documents) == canonical(expected)
