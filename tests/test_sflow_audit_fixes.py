"""sFlow v5 corner cases found by an audit, each checked against values worked out from the spec
(datagrams built here from its XDR layouts) and, where the worker has a batch path, with the
worker's documents held to the per-datagram ones:

1. an 802.1Q priority tag (VID 0) is no VLAN id, so the extended switch record's VLAN is used;
2. host_disk_io `part_max_used` is a signed percentage (-1 unknown);
3. counters sent as all ones ("not available") are left out;
4. `extended_url` / `extended_user` strings have no bound in the spec: long ones are cut;
5. an agent address of type 0 (UNKNOWN, void) decodes, the sender standing in for it;
6. an 802.3 frame's length field is not an EtherType;
7. an expanded sample's interface value 0xFFFFFFFF is the agent itself (as 0x3FFFFFFF is);
8. a device-level counter source (0:0) is no interface;
9. discarded packet samples (sflow_drops.txt, format 5) are not decode errors (their documents:
   tests/test_sflow_drops.py).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import orjson

from flowd.decode import TemplateCache, decode_datagram
from flowd.decode.sflow import MAX_NAME_BYTES, MAX_URL_BYTES, decode_sflow
from flowd.output.documents import flow_document
from flowd.output.table import DocumentTable
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.metrics import WorkerStats
from tests.test_sflow_properties import counter_sample, datagram, raw_header, string, xdr

EXPORTER = ("192.0.2.1", 6343)
RECEIVED_AT = 1_764_072_000.5
COPIES = 20
"""Copies of a datagram in a worker batch: enough for the table paths (16 rows) to take them."""

DST_MAC = b"\x02\x00\x00\x00\x00\x02"
SRC_MAC = b"\x02\x00\x00\x00\x00\x01"


def ipv4_tcp() -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return ip + struct.pack("!HHIIBBHHH", 1234, 80, 0, 0, 0x50, 0x12, 0, 0, 0)


def ethernet(*tags: tuple[int, int, int], ether_type: int = 0x0800, payload: bytes | None = None) -> bytes:
    """A frame with 802.1Q/802.1ad tags given as (TPID, priority, VID)."""
    frame = DST_MAC + SRC_MAC
    for tpid, priority, vid in tags:
        frame += struct.pack("!HH", tpid, (priority << 13) | vid)
    return frame + struct.pack("!H", ether_type) + (ipv4_tcp() if payload is None else payload)


def switch(src_vlan: int, dst_vlan: int = 20) -> bytes:
    return xdr(1001, struct.pack("!IIII", src_vlan, 0, dst_vlan, 0))


def flow(*records: bytes, input_word: int = 4, output_word: int = 5) -> bytes:
    """A compact flow sample (sequence 1, source 0:4, rate 512, pool 10000, 2 drops)."""
    return xdr(1, struct.pack("!8I", 1, 4, 512, 10_000, 2, input_word, output_word, len(records)) + b"".join(records))


def expanded_flow(*records: bytes, input_value: int = 4, output_value: int = 5) -> bytes:
    """An expanded flow sample with ifIndex-format (0) interfaces."""
    head = struct.pack("!11I", 9, 0, 70_000, 512, 10_000, 0, 0, input_value, 0, output_value, len(records))
    return xdr(3, head + b"".join(records))


def canonical(documents: list[dict[str, Any]]) -> list[bytes]:
    return sorted(orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in documents)


def documents_of(payload: bytes) -> list[dict[str, Any]]:
    """The per-datagram documents of `payload`, after checking that the worker's batch path
    (walker, tables, per-datagram decoder) gives the same for a batch of copies of it."""
    result = decode_datagram(payload, EXPORTER, TemplateCache(), RECEIVED_AT)
    assert result.errors == []
    documents = [flow_document(record) for record in result.flows]
    parts = BatchDecoder(TemplateCache(), WorkerStats()).decode_parts([(payload, EXPORTER, RECEIVED_AT)] * COPIES)
    worker = [d for p in parts for d in (p.to_dicts() if isinstance(p, DocumentTable) else p)]
    assert canonical(worker) == canonical(documents * COPIES)
    return documents


# --- 1. priority tags ------------------------------------------------------------------------------


def test_a_priority_tag_gives_no_vlan_id_and_the_switch_vlan_is_used() -> None:
    (tagged,) = documents_of(datagram(flow(raw_header(ethernet((0x8100, 5, 0))), switch(10))))
    assert tagged["sflow.vlan_priority"] == 5
    assert "sflow.vlan" not in tagged
    assert tagged["network.vlan.id"] == "10"  # extended switch src_vlan
    assert (tagged["source.ip"], tagged["destination.port"]) == ("10.0.0.1", 80)

    (alone,) = documents_of(datagram(flow(raw_header(ethernet((0x8100, 3, 0))))))
    assert alone["sflow.vlan_priority"] == 3
    assert "network.vlan.id" not in alone and "sflow.vlan" not in alone

    (unknown_switch,) = documents_of(datagram(flow(raw_header(ethernet((0x8100, 3, 0))), switch(0xFFFFFFFF))))
    assert "network.vlan.id" not in unknown_switch

    (vlan,) = documents_of(datagram(flow(raw_header(ethernet((0x8100, 5, 30))), switch(10))))
    assert (vlan["sflow.vlan"], vlan["network.vlan.id"]) == (30, "30")  # the frame's own tag first

    (qinq,) = documents_of(datagram(flow(raw_header(ethernet((0x88A8, 0, 100), (0x8100, 2, 0))))))
    assert qinq["network.vlan.id"] == "100"
    assert "network.inner.vlan.id" not in qinq and "sflow.customer_vlan" not in qinq


def test_priority_tags_among_other_frames_in_one_batch() -> None:
    """Rows of both kinds in one receive batch: the vectorised reader keeps them apart."""
    frames = [ethernet((0x8100, 5, 0)), ethernet((0x8100, 5, 7)), ethernet()]
    payloads = [datagram(flow(raw_header(frame), switch(10))) for frame in frames] * COPIES
    parts = BatchDecoder(TemplateCache(), WorkerStats()).decode_parts([(p, EXPORTER, RECEIVED_AT) for p in payloads])
    assert any(isinstance(p, DocumentTable) for p in parts)
    worker = [d for p in parts for d in (p.to_dicts() if isinstance(p, DocumentTable) else p)]
    assert sorted(d["network.vlan.id"] for d in worker) == sorted(["10", "7", "10"] * COPIES)
    expected = [
        flow_document(r) for p in payloads for r in decode_datagram(p, EXPORTER, TemplateCache(), RECEIVED_AT).flows
    ]
    assert canonical(worker) == canonical(expected)


# --- 2. and 3. counter records ---------------------------------------------------------------------


def counters(*records: bytes, source: int = 12) -> dict[str, Any]:
    (document,) = documents_of(datagram(xdr(2, struct.pack("!III", 5, source, len(records)) + b"".join(records))))
    return document


def test_host_disk_part_max_used_is_a_signed_percentage() -> None:
    unknown = xdr(2005, struct.pack("!QQiIQIIQI", 100, 50, -1, 1, 2, 3, 4, 5, 6))
    known = xdr(2005, struct.pack("!QQiIQIIQI", 100, 50, 2500, 1, 2, 3, 4, 5, 6))
    assert counters(unknown)["sflow.host_part_max_used"] == -1
    assert counters(known)["sflow.host_part_max_used"] == 2500


ALL_ONES_32 = 2**32 - 1
ALL_ONES_64 = 2**64 - 1


def test_counters_sent_as_all_ones_are_left_out() -> None:
    generic = xdr(
        1,
        struct.pack(
            "!IIQIIQIIIIIIQIIIIII",
            7,  # ifIndex
            6,  # ifType
            ALL_ONES_64,  # ifSpeed: a value, not a counter
            1,  # ifDirection
            3,  # ifStatus
            ALL_ONES_64,  # ifInOctets: not available
            10,
            ALL_ONES_32,  # ifInMulticastPkts: not available
            1,
            0,
            0,
            ALL_ONES_32,  # ifInUnknownProtos: not available
            ALL_ONES_32,  # ifOutOctets: a 64-bit counter at 2^32 - 1, a real count
            *range(1, 7),
        ),
    )
    ethernet_counters = xdr(2, struct.pack("!13I", ALL_ONES_32, *range(1, 13)))
    vlan = xdr(5, struct.pack("!IQIIII", 100, ALL_ONES_64, 1, 2, 3, ALL_ONES_32))
    document = counters(generic, ethernet_counters, vlan)
    for key in (
        "if_in_octets",
        "if_in_multicast_pkts",
        "if_in_unknown_protos",
        "dot3_stats_alignment_errors",
        "vlan_octets",
        "vlan_discards",
    ):
        assert "sflow." + key not in document, key
    assert (document["sflow.if_index"], document["sflow.if_speed"], document["sflow.if_out_octets"]) == (
        7,
        ALL_ONES_64,
        ALL_ONES_32,
    )
    assert (document["sflow.if_in_ucast_pkts"], document["sflow.if_out_errors"]) == (10, 5)  # 6: promiscuous
    assert (document["sflow.dot3_stats_fcs_errors"], document["sflow.vlan_id"], document["sflow.vlan_ucast_pkts"]) == (
        1,
        100,
        1,
    )
    assert document["observer.ingress.interface.id"] == 7

    cpu = xdr(
        2003,
        struct.pack("!fffIIIIIIIIIIIII", 0.5, 0.25, 0.125, 1, 2, 3, ALL_ONES_32, *range(5, 13), 99)
        + struct.pack("!II", ALL_ONES_32, 8),  # contexts unknown, cpu_steal 8
    )
    memory = xdr(2004, struct.pack("!7Q4I", ALL_ONES_64, *range(2, 12)))
    network = xdr(2006, struct.pack("!QIIIQIII", 1, 2, ALL_ONES_32, 4, 5, 6, 7, 8))
    processor = xdr(1001, struct.pack("!iiiQQ", -1, 200, 300, ALL_ONES_64, 2**32))
    host = counters(cpu, memory, network, processor)
    for key in ("host_cpu_speed", "host_contexts", "host_mem_total", "host_net_errs_in", "total_memory"):
        assert "sflow." + key not in host, key
    assert (host["sflow.host_cpu_num"], host["sflow.host_cpu_steal"], host["sflow.host_mem_free"]) == (3, 8, 2)
    assert (host["sflow.host_net_drops_in"], host["sflow.cpu_5s"], host["sflow.free_memory"]) == (4, -1, 2**32)


# --- 4. long strings -------------------------------------------------------------------------------


def test_long_url_and_user_strings_are_cut_and_the_record_kept() -> None:
    long_url = "GET /" + "a" * 4990 + " HTTP/1.1"  # 5004 bytes: padded by 0
    odd_url = "/" + "b" * 300  # 301 bytes: 3 bytes of padding
    long_user = "u" * 301
    for url in (long_url, odd_url):
        url_record = xdr(1005, struct.pack("!I", 2) + string(url) + string("example.com"))
        user_record = xdr(1004, struct.pack("!I", 106) + string(long_user) + struct.pack("!I", 106) + string("bob"))
        (document,) = documents_of(datagram(flow(url_record, user_record, raw_header(ethernet()), switch(10))))
        assert document["sflow.url"] == url[:MAX_URL_BYTES]
        assert (document["sflow.url_direction"], document["sflow.url_host"]) == (2, "example.com")
        assert document["sflow.src_user"] == long_user[:MAX_NAME_BYTES]
        assert (document["sflow.dst_user"], document["sflow.dst_user_charset"]) == ("bob", 106)
        assert (document["sflow.src_vlan"], document["source.ip"]) == (10, "10.0.0.1")  # the records after
    assert len(long_url) > MAX_URL_BYTES and len(long_user) > MAX_NAME_BYTES


def test_a_string_overrunning_its_record_is_still_an_error() -> None:
    body = struct.pack("!I", 2) + struct.pack("!I", 400) + b"c" * 40  # claims 400 bytes, has 40
    result = decode_sflow(datagram(flow(xdr(1005, body), raw_header(ethernet()))), EXPORTER, RECEIVED_AT)
    assert [e.reason for e in result.errors] == ["truncated"]
    (record,) = result.flows
    assert "url" not in record.fields and record.fields["src_ip"] == "10.0.0.1"


# --- 5. unknown agent address ----------------------------------------------------------------------


def unknown_agent_datagram(*samples: bytes) -> bytes:
    """sFlow v5 header with `address` type 0 (UNKNOWN: no address bytes follow)."""
    return struct.pack("!II", 5, 0) + struct.pack("!IIII", 3, 77, 999, len(samples)) + b"".join(samples)


def test_an_unknown_agent_address_decodes_with_the_sender_as_observer() -> None:
    processor = xdr(1001, struct.pack("!iiiQQ", 1, 2, 3, 4, 5))
    payload = unknown_agent_datagram(flow(raw_header(ethernet())), counter_sample(processor))
    result = decode_sflow(payload, EXPORTER, RECEIVED_AT)
    assert result.errors == []
    assert [("agent_address" in r.fields, r.domain_id, r.sequence) for r in result.flows] == [(False, 3, 77)] * 2
    flow_doc, counter_doc = documents_of(payload)
    assert flow_doc["observer.ip"] == counter_doc["observer.ip"] == EXPORTER[0]
    assert "sflow.agent_address" not in flow_doc
    assert (flow_doc["source.ip"], flow_doc["sflow.sample_sequence"], counter_doc["sflow.cpu_5m"]) == ("10.0.0.1", 1, 3)
    # The flow id names the sender as the per-datagram documents of a known agent name the agent.
    known = datagram(flow(raw_header(ethernet())), agent=EXPORTER[0])
    assert flow_doc["flow.id"] == documents_of(known)[0]["flow.id"]


# --- 6. 802.3 frames -------------------------------------------------------------------------------


def test_an_802_3_length_is_not_an_ether_type() -> None:
    llc = b"\x42\x42\x03" + bytes(35)  # an STP BPDU: LLC DSAP/SSAP 0x42, UI
    (plain,) = documents_of(datagram(flow(raw_header(ethernet(ether_type=len(llc), payload=llc)))))
    assert "sflow.ether_type" not in plain
    assert (plain["source.mac"], plain["destination.mac"]) == ("02-00-00-00-00-01", "02-00-00-00-00-02")
    tagged_frame = ethernet((0x8100, 0, 12), ether_type=0x05DC, payload=llc)  # 1500: the largest length
    (tagged,) = documents_of(datagram(flow(raw_header(tagged_frame))))
    assert "sflow.ether_type" not in tagged and tagged["network.vlan.id"] == "12"
    (typed,) = documents_of(datagram(flow(raw_header(ethernet(ether_type=0x0600, payload=llc)))))
    assert typed["sflow.ether_type"] == 0x0600  # the smallest EtherType


# --- 7. internal interface in expanded samples -----------------------------------------------------


def test_an_expanded_interface_of_all_ones_is_the_agent_itself() -> None:
    header = raw_header(ethernet())
    for internal in (0xFFFFFFFF, 0x3FFFFFFF):
        (document,) = documents_of(datagram(expanded_flow(header, input_value=internal, output_value=7)))
        assert document["sflow.input_internal"] is True
        assert "sflow.input_ifindex" not in document and "observer.ingress.interface.id" not in document
        assert document["observer.egress.interface.id"] == 7
        (out,) = documents_of(datagram(expanded_flow(header, input_value=3, output_value=internal)))
        assert out["sflow.output_internal"] is True and "observer.egress.interface.id" not in out
    (large,) = documents_of(datagram(expanded_flow(header, input_value=0x7FFFFFFF)))
    assert large["observer.ingress.interface.id"] == 0x7FFFFFFF  # a large ifIndex is an ifIndex


# --- 8. device-level counter sources ---------------------------------------------------------------


def test_a_device_level_counter_source_is_no_interface() -> None:
    processor = xdr(1001, struct.pack("!iiiQQ", 500, 600, 700, 8, 4))
    device = counters(processor, source=0)
    assert (device["sflow.source_id_type"], device["sflow.source_id_index"]) == (0, 0)
    assert "observer.ingress.interface.id" not in device
    assert counters(processor, source=12)["observer.ingress.interface.id"] == 12


# --- 9. discarded packet samples -------------------------------------------------------------------


def test_discarded_packet_samples_are_not_decode_errors() -> None:
    # sflow_drops.txt: sequence, source id (type, index), drops, input, output, reason, records.
    drop = xdr(5, struct.pack("!IIIIIIII", 1, 0, 3, 0, 4, 0, 258, 1) + raw_header(ethernet()))
    result = decode_sflow(datagram(drop, flow(raw_header(ethernet())), drop), EXPORTER, RECEIVED_AT)
    assert result.errors == []
    assert [record.kind for record in result.flows] == ["sflow_drop", "sflow_flow", "sflow_drop"]
    assert [record.fields["sample_sequence"] for record in result.flows] == [1, 1, 1]
    vendor = xdr((4413 << 12) | 5, bytes(12))  # format 5 of another enterprise is still unknown
    errors = decode_sflow(datagram(vendor), EXPORTER, RECEIVED_AT).errors
    assert [e.reason for e in errors] == ["unknown_sample_format"]


def test_agent_address_bytes_are_those_of_the_spec_layout() -> None:
    """The builders' own check: an IPv4 agent takes 4 bytes after its type, as `unknown_agent_datagram`
    takes none."""
    payload = datagram(flow(raw_header(ethernet())), agent="198.51.100.7")
    assert payload[4:12] == struct.pack("!I", 1) + socket.inet_aton("198.51.100.7")
    assert len(payload) - len(unknown_agent_datagram(flow(raw_header(ethernet())))) == 4
