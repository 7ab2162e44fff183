"""sFlow discarded packet notifications (sflow.org sflow_drops.txt, sample format 5).

The samples are built here from the structure's XDR layout (sequence, expanded source id, drops,
input and output ifIndex, reason, flow records); the expected values are what was packed and the
reason names of the structure's `drop_reason` enumeration.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from flowd.decode import TemplateCache, decode_datagram
from flowd.output.documents import flow_document
from flowd.output.table import DocumentTable
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.metrics import WorkerStats
from tests.test_sflow_properties import datagram, flow_sample, ipv4_tcp_frame, raw_header, xdr

EXPORTER = ("192.0.2.1", 6343)
RECEIVED_AT = 1_764_072_000.5


def discarded(*records: bytes, reason: int, input_ifindex: int = 7, output_ifindex: int = 0, drops: int = 3) -> bytes:
    head = struct.pack("!8I", 41, 0, 7, drops, input_ifindex, output_ifindex, reason, len(records))
    return xdr(5, head + b"".join(records))


def documents(payload: bytes) -> list[dict[str, Any]]:
    """Per-datagram documents, checked against the worker's batch path on copies of the datagram."""
    result = decode_datagram(payload, EXPORTER, TemplateCache(), RECEIVED_AT)
    assert result.errors == []
    single = [flow_document(record) for record in result.flows]
    parts = BatchDecoder(TemplateCache(), WorkerStats()).decode_parts([(payload, EXPORTER, RECEIVED_AT)] * 20)
    worker = [d for p in parts for d in (p.to_dicts() if isinstance(p, DocumentTable) else p)]
    assert sorted(map(_canonical, worker)) == sorted(map(_canonical, single * 20))
    return single


def _canonical(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def test_an_acl_drop_is_a_denied_event_with_the_packet_and_its_reason() -> None:
    frame = ipv4_tcp_frame()
    (document,) = documents(datagram(discarded(raw_header(frame), reason=258)))
    assert document["event.action"] == "sflow_drop" and document["event.type"] == ["denied"]
    assert document["event.reason"] == "acl" and document["sflow.drop_reason"] == 258
    assert (document["source.ip"], document["destination.ip"]) == ("10.0.0.1", "10.0.0.2")
    assert (document["source.port"], document["destination.port"], document["network.transport"]) == (1234, 80, "tcp")
    assert document["observer.ingress.interface.id"] == 7 and "observer.egress.interface.id" not in document
    assert (document["sflow.drops"], document["sflow.sample_sequence"], document["sflow.source_id_index"]) == (3, 41, 7)
    assert document["sflow.frame_length"] == len(frame) + 4
    # Dropped packets did not go through: they add nothing to traffic volumes.
    assert not {"network.bytes", "network.packets", "flowd.raw_bytes"} & set(document)


def test_reasons_from_both_ranges_and_unnamed_ones() -> None:
    payload = datagram(
        discarded(raw_header(ipv4_tcp_frame()), reason=0, input_ifindex=0, output_ifindex=9),
        discarded(raw_header(ipv4_tcp_frame()), reason=289),
        discarded(raw_header(ipv4_tcp_frame()), reason=4000),
        flow_sample(raw_header(ipv4_tcp_frame())),
    )
    reasons = [d.get("event.reason") for d in documents(payload)]
    assert reasons == ["net_unreachable", "unknown_l4", "4000", None]
    first = documents(payload)[0]
    assert "observer.ingress.interface.id" not in first and first["observer.egress.interface.id"] == 9


def test_a_discarded_packet_sample_cut_short_is_a_soft_error() -> None:
    cut = xdr(5, struct.pack("!6I", 1, 0, 7, 0, 4, 0))
    result = decode_datagram(datagram(cut, flow_sample(raw_header(ipv4_tcp_frame()))), EXPORTER, TemplateCache(), 1.0)
    assert [e.reason for e in result.errors] == ["truncated"]
    assert [record.kind for record in result.flows] == ["sflow_flow"]
