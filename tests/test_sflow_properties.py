"""Properties of the sFlow v5 decoder: hostile input, error containment, and every record type.

1. Any input either decodes or raises `DecodeError`, nothing else: every corpus datagram cut at
   every offset, and (hypothesis) with random bytes overwritten, or built from random records.
   Whatever decodes must also turn into a document.
2. Errors stay where they happen: a bad sample or record becomes a `SoftError` and the samples
   and records around it still decode; unknown formats are skipped by length and counted.
3. Each record type the decoder knows, built here from the sFlow v5 structure definitions.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowd.decode.sflow import decode_sflow
from flowd.errors import DecodeError
from flowd.model import KIND_SFLOW_COUNTERS, KIND_SFLOW_FLOW, DecodeResult
from flowd.output.sflow_documents import sflow_document
from tests.test_sflow_corpus import CORPUS, MALFORMED, SFLOW_FILES, corpus_datagrams

EXPORTER = ("192.0.2.1", 6343)
RECEIVED_AT = 1_764_072_000.5


def corpus_payloads() -> list[bytes]:
    if not CORPUS.is_dir():
        return []
    return [d.payload for name, _, _ in SFLOW_FILES if name not in MALFORMED for d in corpus_datagrams(name)]


PAYLOADS = corpus_payloads()
needs_corpus = pytest.mark.skipif(not PAYLOADS, reason="shared corpus not found (set FLOWD_CORPUS)")


def decode_or_reject(data: bytes) -> DecodeResult | None:
    """The contract: a result (whose records all make documents) or a DecodeError."""
    try:
        result = decode_sflow(data, EXPORTER, RECEIVED_AT)
    except DecodeError:
        return None
    for record in result.flows:
        assert record.kind in (KIND_SFLOW_FLOW, KIND_SFLOW_COUNTERS)
        assert record.sampling_rate >= 1
        document = sflow_document(record)
        assert document["event.action"] == record.kind
    return result


# --- builders (sFlow v5 XDR) ----------------------------------------------------------------------


def xdr(data_format: int, body: bytes) -> bytes:
    """A sample or record: format word, length, body padded to 4 bytes."""
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!II", data_format, len(body)) + body


def datagram(*samples: bytes, agent: str = "192.0.2.9", sequence: int = 77, count: int | None = None) -> bytes:
    if ":" in agent:
        address = struct.pack("!I", 2) + socket.inet_pton(socket.AF_INET6, agent)
    else:
        address = struct.pack("!I", 1) + socket.inet_aton(agent)
    n = len(samples) if count is None else count
    return struct.pack("!I", 5) + address + struct.pack("!IIII", 3, sequence, 999, n) + b"".join(samples)


def flow_sample(*records: bytes, sequence: int = 1, rate: int = 512, output: int = 5) -> bytes:
    head = struct.pack("!8I", sequence, 4, rate, 10_000, 2, 4, output, len(records))
    return xdr(1, head + b"".join(records))


def expanded_flow_sample(*records: bytes, out_format: int = 1, out_value: int = 258) -> bytes:
    head = struct.pack("!11I", 9, 3, 70000, 100, 5000, 0, 0, 12, out_format, out_value, len(records))
    return xdr(3, head + b"".join(records))


def counter_sample(*records: bytes, expanded: bool = False) -> bytes:
    if expanded:
        return xdr(4, struct.pack("!IIII", 5, 0, 70000, len(records)) + b"".join(records))
    return xdr(2, struct.pack("!III", 5, 12, len(records)) + b"".join(records))


def raw_header(frame: bytes, frame_length: int | None = None, protocol: int = 1) -> bytes:
    length = len(frame) + 4 if frame_length is None else frame_length
    return xdr(1, struct.pack("!IIII", protocol, length, 4, len(frame)) + frame)


def ipv4_tcp_frame() -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    tcp = struct.pack("!HHIIBBHHH", 1234, 80, 0, 0, 0x50, 0x12, 0, 0, 0)
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + tcp


def address(text: str) -> bytes:
    if ":" in text:
        return struct.pack("!I", 2) + socket.inet_pton(socket.AF_INET6, text)
    return struct.pack("!I", 1) + socket.inet_aton(text)


def u32_list(values: list[int]) -> bytes:
    return struct.pack(f"!I{len(values)}I", len(values), *values)


def string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!I", len(data)) + data + b"\x00" * (-len(data) % 4)


# --- 1. hostile input -----------------------------------------------------------------------------


@needs_corpus
def test_every_truncation_of_every_corpus_datagram() -> None:
    for payload in PAYLOADS:
        assert decode_or_reject(payload) is not None
        samples_end = _samples_end(payload)
        for cut in range(len(payload)):
            result = decode_or_reject(payload[:cut])
            if result is not None and cut < samples_end:
                # A cut lands in a sample or before one, so it is reported, never silent.
                assert result.errors, f"cut at {cut} went unnoticed"


def _samples_end(payload: bytes) -> int:
    """Where the declared samples end. akvorado's edited copies of data-1140 declare 1 sample and
    keep the other 4 behind it; like tshark, the decoder ignores bytes after the declared samples."""
    pos = 28 if payload[7] == 1 else 40
    for _ in range(struct.unpack_from("!I", payload, pos - 4)[0]):
        pos += 8 + struct.unpack_from("!I", payload, pos + 4)[0]
    return pos


@needs_corpus
@settings(max_examples=300, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_byte_flips_of_corpus_datagrams(data: st.DataObject) -> None:
    payload = bytearray(data.draw(st.sampled_from(PAYLOADS)))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(payload) - 1), st.integers(0, 255)), min_size=1, max_size=8)
    )
    for offset, value in flips:
        payload[offset] = value
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(payload))))
    decode_or_reject(bytes(payload[:cut]))


_RECORD_FORMATS = st.sampled_from([1, 2, 3, 4, 5, 7, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1012, 2000, 2003, 9999])


@settings(max_examples=200, deadline=500)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 2, 3, 4, 6]),  # 6: no sample format of sFlow v5 (5 is a dropped packet)
            st.lists(st.tuples(_RECORD_FORMATS, st.binary(max_size=120)), max_size=4),
            st.binary(min_size=0, max_size=48),
        ),
        max_size=4,
    )
)
def test_random_records_in_well_framed_samples(samples: list[tuple[int, list[tuple[int, bytes]], bytes]]) -> None:
    """Framing is valid, bodies are noise: every sample is either emitted or a soft error."""
    built = []
    for sample_format, records, head in samples:
        body = head + b"".join(xdr(fmt, data) for fmt, data in records)
        built.append(xdr(sample_format, body))
    result = decode_or_reject(datagram(*built))
    assert result is not None
    # Record errors stay in their record, so every known sample with a complete fixed part is emitted.
    fixed_part = {1: 32, 2: 12, 3: 44, 4: 16}
    emitted = [
        sample_format
        for (sample_format, _, _), sample in zip(samples, built, strict=True)
        if sample_format in fixed_part and len(sample) - 8 >= fixed_part[sample_format]
    ]
    assert len(result.flows) == len(emitted)
    unknown = [e for e in result.errors if e.reason == "unknown_sample_format"]
    assert len(unknown) == sum(1 for sample_format, _, _ in samples if sample_format == 6)


# --- 2. error containment -------------------------------------------------------------------------


def test_header_errors_raise() -> None:
    good = datagram(flow_sample(raw_header(ipv4_tcp_frame())))
    for bad, reason in (
        (b"", "truncated"),
        (good[:27], "truncated"),
        (struct.pack("!I", 4) + good[4:], "unsupported_version"),
        (good[:4] + struct.pack("!I", 3) + good[8:], "bad_address"),
    ):
        with pytest.raises(DecodeError) as raised:
            decode_sflow(bad, EXPORTER, RECEIVED_AT)
        assert raised.value.reason == reason


def test_unknown_and_broken_samples_do_not_stop_the_others() -> None:
    good = flow_sample(raw_header(ipv4_tcp_frame()), sequence=1)
    unknown = xdr((4413 << 12) | 1, b"\x00" * 12)  # a vendor enterprise sample
    too_short = xdr(1, b"\x00" * 12)  # a flow sample needs 32 bytes of header
    bad_record = flow_sample(
        xdr(1, struct.pack("!IIII", 1, 100, 0, 500) + b"\x00" * 16),  # header length overruns its record
        xdr(1001, struct.pack("!IIII", 10, 1, 20, 2)),
        sequence=2,
    )
    result = decode_sflow(datagram(good, unknown, too_short, bad_record, good), EXPORTER, RECEIVED_AT)
    assert [r.fields["sample_sequence"] for r in result.flows] == [1, 2, 1]
    assert [e.reason for e in result.errors] == ["unknown_sample_format", "truncated", "truncated"]
    assert result.flows[1].fields["src_vlan"] == 10  # the record after the bad one decoded
    assert result.flows[0].fields["src_ip"] == "10.0.0.1"


def test_sample_overrunning_the_datagram_is_a_soft_error() -> None:
    good = flow_sample(raw_header(ipv4_tcp_frame()))
    overrun = struct.pack("!II", 1, 4000) + b"\x00" * 40
    result = decode_sflow(datagram(good, overrun), EXPORTER, RECEIVED_AT)
    assert len(result.flows) == 1
    assert [e.reason for e in result.errors] == ["truncated"]
    short = decode_sflow(datagram(good, count=3), EXPORTER, RECEIVED_AT)
    assert len(short.flows) == 1 and short.errors[0].reason == "truncated"


def test_unknown_records_are_skipped_and_counted() -> None:
    sample = flow_sample(
        xdr(1031, b"\x00" * 8),
        xdr((8 << 12) | 1001, b"\x00" * 16),  # enterprise 8: not the standard switch record
        raw_header(ipv4_tcp_frame()),
    )
    (record,) = decode_sflow(datagram(sample), EXPORTER, RECEIVED_AT).flows
    assert record.fields["unknown_records"] == 2
    assert "src_vlan" not in record.fields
    assert record.fields["dst_port"] == 80


def test_zero_sampling_rate_counts_as_one() -> None:
    (record,) = decode_sflow(datagram(flow_sample(rate=0)), EXPORTER, RECEIVED_AT).flows
    assert record.sampling_rate == 1 and record.fields["sampling_rate"] == 0


# --- 3. record types ------------------------------------------------------------------------------


def decode_one(sample: bytes, **kwargs: Any) -> dict[str, Any]:
    result = decode_sflow(datagram(sample, **kwargs), EXPORTER, RECEIVED_AT)
    assert result.errors == []
    (record,) = result.flows
    return record.fields


def test_flow_sample_header_fields_and_record_metadata() -> None:
    result = decode_sflow(
        datagram(flow_sample(raw_header(ipv4_tcp_frame(), 1500)), agent="2001:db8::9"), EXPORTER, RECEIVED_AT
    )
    (record,) = result.flows
    assert (record.kind, record.version, record.domain_id, record.sequence, record.uptime_ms) == (
        KIND_SFLOW_FLOW,
        5,
        3,
        77,
        999,
    )
    assert (record.exporter, record.received_at, record.sampling_rate) == (EXPORTER, RECEIVED_AT, 512)
    f = record.fields
    assert f["agent_address"] == "2001:db8::9"
    assert (f["sample_sequence"], f["source_id_type"], f["source_id_index"]) == (1, 0, 4)
    assert (f["sample_pool"], f["drops"], f["input_ifindex"], f["output_ifindex"]) == (10_000, 2, 4, 5)
    assert (f["frame_length"], f["stripped"], f["header_length"], f["tcp_flags"]) == (1500, 4, 54, 0x12)
    doc = sflow_document(record)
    assert (doc["network.bytes"], doc["network.packets"], doc["source.port"], doc["destination.port"]) == (
        1500 * 512,
        512,
        1234,
        80,
    )
    assert (doc["observer.ip"], doc["observer.egress.interface.id"], doc["sflow.sub_agent_id"]) == (
        "2001:db8::9",
        5,
        3,
    )
    assert doc["@timestamp"] == "2025-11-25T12:00:00.500Z"


def test_expanded_flow_sample_with_discard() -> None:
    f = decode_one(expanded_flow_sample(out_format=1, out_value=258))
    assert (f["source_id_type"], f["source_id_index"], f["input_ifindex"]) == (3, 70000, 12)
    assert (f["output_format"], f["output_discard_reason"]) == (1, 258)


def test_compact_multiple_and_internal_interfaces() -> None:
    assert decode_one(flow_sample(output=(2 << 30) | 0))["output_interface_count"] == 0
    internal = decode_one(flow_sample(output=0x3FFFFFFF))
    assert internal["output_internal"] is True and "output_ifindex" not in internal


def test_sampled_ethernet_ipv4_ipv6_records() -> None:
    ethernet = xdr(2, struct.pack("!I6s2x6s2xI", 1518, b"\x02" * 6, b"\x04" * 6, 0x86DD))
    ipv6 = xdr(
        4,
        struct.pack(
            "!II16s16sIIII",
            1480,
            17,
            socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
            socket.inet_pton(socket.AF_INET6, "2001:db8::2"),
            53,
            5353,
            0,
            3,
        ),
    )
    f = decode_one(flow_sample(ethernet, ipv6))
    assert (f["frame_length"], f["src_mac"], f["dst_mac"], f["ether_type"]) == (
        1518,
        "02:02:02:02:02:02",
        "04:04:04:04:04:04",
        0x86DD,
    )
    assert (f["ip_version"], f["src_ip"], f["dst_ip"], f["protocol"], f["src_port"], f["dst_port"], f["ip_tos"]) == (
        6,
        "2001:db8::1",
        "2001:db8::2",
        17,
        53,
        5353,
        3,
    )
    ipv4 = xdr(3, struct.pack("!II4s4sIIII", 60, 6, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", 1, 2, 0x18, 0))
    alone = decode_sflow(datagram(flow_sample(ipv4)), EXPORTER, RECEIVED_AT).flows[0]
    doc = sflow_document(alone)
    assert (doc["network.bytes"], doc["network.type"], doc["network.transport"]) == (60 * 512, "ipv4", "tcp")


def test_extended_gateway_user_url_mpls_nat_vlan_tunnel() -> None:
    gateway = xdr(
        1003,
        address("2001:db8::ff")
        + struct.pack("!III", 65000, 64500, 64501)
        + struct.pack("!I", 2)
        + struct.pack("!I", 1)
        + u32_list([64600, 64601])
        + struct.pack("!I", 2)
        + u32_list([64501, 64700, 64800])
        + u32_list([(65000 << 16) | 1])
        + struct.pack("!I", 200),
    )
    user = xdr(1004, struct.pack("!I", 106) + string("alice") + struct.pack("!I", 106) + string("bob"))
    url = xdr(1005, struct.pack("!I", 2) + string("/index.html") + string("example.org"))
    mpls = xdr(1006, address("192.0.2.254") + u32_list([(16001 << 12) | 0x1FF]) + u32_list([]))
    nat = xdr(1007, address("198.51.100.1") + address("203.0.113.1"))
    tunnel = xdr(1012, u32_list([0x81000064, 0x810000C8]))
    f = decode_one(flow_sample(gateway, user, url, mpls, nat, tunnel))
    assert (f["bgp_next_hop"], f["router_as"], f["src_as"], f["src_peer_as"]) == ("2001:db8::ff", 65000, 64500, 64501)
    assert f["dst_as_path"] == [64600, 64601, 64501, 64700, 64800]
    assert f["dst_as_path_segment_types"] == [1, 2]
    assert (f["dst_peer_as"], f["dst_as"], f["communities"], f["local_pref"]) == (
        64600,
        64800,
        [(65000 << 16) | 1],
        200,
    )
    assert (f["src_user"], f["dst_user"], f["src_user_charset"]) == ("alice", "bob", 106)
    assert (f["url_direction"], f["url"], f["url_host"]) == (2, "/index.html", "example.org")
    assert (f["mpls_next_hop"], f["mpls_in_stack"], f["mpls_out_stack"]) == ("192.0.2.254", [(16001 << 12) | 0x1FF], [])
    assert (f["nat_src_ip"], f["nat_dst_ip"]) == ("198.51.100.1", "203.0.113.1")
    assert f["vlan_stack"] == [100, 200]


def test_gateway_with_an_oversized_list_is_a_soft_error() -> None:
    gateway = xdr(1003, address("192.0.2.1") + struct.pack("!IIII", 1, 2, 3, 1) + struct.pack("!II", 2, 1_000_000))
    result = decode_sflow(datagram(flow_sample(gateway)), EXPORTER, RECEIVED_AT)
    assert len(result.flows) == 1 and result.errors[0].reason == "bad_length"


def test_counter_records() -> None:
    generic = xdr(
        1, struct.pack("!IIQIIQIIIIIIQIIIIII", 7, 6, 10**10, 1, 3, 1000, 10, 2, 1, 0, 0, 0, 2000, *range(1, 7))
    )
    vlan = xdr(5, struct.pack("!IQIIII", 100, 123456, 1, 2, 3, 4))
    lag = xdr(7, struct.pack("!6s2x6s2xI4B8I", b"\x0a" * 6, b"\x0b" * 6, 9, 1, 2, 3, 4, *range(8)))
    processor = xdr(1001, struct.pack("!iiiQQ", 150, 200, -1, 2**33, 2**32))
    cpu = xdr(2003, struct.pack("!fffIIIIIIIIIIIII", 0.5, 0.25, 0.125, *range(1, 13), 99) + struct.pack("!I", 7))
    memory = xdr(2004, struct.pack("!7Q4I", *range(1, 12)))
    disk = xdr(2005, struct.pack("!QQIIQIIQI", *range(1, 10)))
    net = xdr(2006, struct.pack("!QIIIQIII", *range(1, 9)))
    descr = xdr(2000, string("host1") + bytes(range(16)) + struct.pack("!II", 3, 2) + string("6.1.0"))
    result = decode_sflow(
        datagram(
            counter_sample(generic, vlan, lag, processor), counter_sample(cpu, memory, disk, net, descr, expanded=True)
        ),
        EXPORTER,
        RECEIVED_AT,
    )
    assert result.errors == []
    first, second = (record.fields for record in result.flows)
    assert all(record.kind == KIND_SFLOW_COUNTERS for record in result.flows)
    assert (first["source_id_type"], first["source_id_index"]) == (0, 12)
    assert (first["if_index"], first["if_speed"], first["if_in_octets"], first["if_out_octets"]) == (
        7,
        10**10,
        1000,
        2000,
    )
    assert (first["if_admin_status"], first["if_oper_status"], first["if_promiscuous_mode"]) == ("up", "up", 6)
    assert (first["vlan_id"], first["vlan_octets"], first["vlan_discards"]) == (100, 123456, 4)
    assert (first["lag_actor_system_id"], first["lag_attached_agg_id"], first["lag_partner_oper_state"]) == (
        "0a:0a:0a:0a:0a:0a",
        9,
        4,
    )
    assert (first["cpu_5s"], first["cpu_5m"], first["total_memory"]) == (150, -1, 2**33)
    assert (second["source_id_type"], second["source_id_index"]) == (0, 70000)
    assert (second["host_load_one"], second["host_cpu_num"], second["host_interrupts"], second["host_contexts"]) == (
        0.5,
        3,
        99,
        7,
    )
    assert (second["host_mem_total"], second["host_swap_out"]) == (1, 11)
    assert (second["host_disk_total"], second["host_disk_write_time"]) == (1, 9)
    assert (second["host_net_bytes_in"], second["host_net_drops_out"]) == (1, 8)
    assert (second["host_name"], second["host_os_release"]) == ("host1", "6.1.0")
    assert second["host_uuid"] == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    doc = sflow_document(result.flows[0])
    assert (doc["observer.ingress.interface.id"], doc["event.type"]) == (7, ["info"])


def test_short_counter_record_is_a_soft_error_and_the_next_record_decodes() -> None:
    short = xdr(1, b"\x00" * 40)
    vlan = xdr(5, struct.pack("!IQIIII", 100, 1, 1, 2, 3, 4))
    result = decode_sflow(datagram(counter_sample(short, vlan)), EXPORTER, RECEIVED_AT)
    assert [e.reason for e in result.errors] == ["truncated"]
    assert result.flows[0].fields["vlan_id"] == 100


@needs_corpus
def test_memoryview_input_decodes_like_bytes() -> None:
    for payload in PAYLOADS:
        from_bytes = decode_sflow(payload, EXPORTER, RECEIVED_AT)
        from_view = decode_sflow(memoryview(payload), EXPORTER, RECEIVED_AT)
        assert list(from_view.flows) == list(from_bytes.flows)
