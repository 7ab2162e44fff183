"""sFlow sample -> ECS document (design.md section 4), a flat dict with dotted keys.

A flow sample stands for `sampling_rate` packets like the one sampled, so `network.bytes` is the
frame length times the rate and `network.packets` the rate; `flowd.raw_*` keep the one frame.
Every decoded value is also kept under `sflow.<key>`. A counter sample is an `info` event whose
interface is the counters' ifIndex. A discarded packet is a `denied` event with its reason in
`event.reason` and the packet's addresses, ports and interfaces as a flow sample has them, but
no `network.bytes`/`packets`: dropped packets are not traffic that went through.
"""

from __future__ import annotations

from typing import Any

from flowd.model import KIND_SFLOW_COUNTERS, KIND_SFLOW_DROP, FlowRecord
from flowd.output.ecs import TRANSPORTS, ecs_mac, flow_id
from flowd.output.timestamps import iso_from_seconds

VLAN_UNKNOWN = 0xFFFFFFFF
"""Extended switch records carry this when the VLAN is not known."""


def sflow_document(record: FlowRecord) -> dict[str, Any]:
    """The index document for one sFlow flow or counter sample."""
    fields = record.fields
    counters = record.kind == KIND_SFLOW_COUNTERS
    dropped = record.kind == KIND_SFLOW_DROP
    doc: dict[str, Any] = {
        "@timestamp": iso_from_seconds(record.received_at),
        "event.kind": "event",
        "event.category": ["network"],
        "event.type": ["info"] if counters else ["denied"] if dropped else ["connection"],
        "event.action": record.kind,
        "sflow.sub_agent_id": record.domain_id,
        "sflow.datagram_sequence": record.sequence,
    }
    # An agent of unknown address (sFlow v5 address type 0) is known by the datagram's sender.
    doc["observer.ip"] = fields.get("agent_address", record.exporter[0])
    if record.uptime_ms is not None:
        doc["sflow.uptime_ms"] = record.uptime_ms
    for name, value in fields.items():
        doc["sflow." + name] = value
    if counters:
        if_index = fields.get("if_index")
        if if_index is None and fields.get("source_id_type") == 0:
            if_index = fields.get("source_id_index")
        if if_index:  # 0: not an interface (a device-level source, 0:0), as in flow samples
            doc["observer.ingress.interface.id"] = if_index
        return doc
    if dropped:
        reason = fields.get("drop_reason")
        doc["event.reason"] = fields.get("drop_reason_name", str(reason))
    else:
        _add_volume(doc, fields, record.sampling_rate)
    _add_flow_fields(doc, fields, record)
    return doc


def _add_volume(doc: dict[str, Any], fields: dict[str, Any], rate: int) -> None:
    frame_length = fields.get("frame_length")
    if frame_length is None:
        frame_length = fields.get("ip_length", 0)
    doc["network.bytes"] = frame_length * rate
    doc["network.packets"] = rate
    doc["flowd.raw_bytes"] = frame_length
    doc["flowd.raw_packets"] = 1
    doc["flowd.sampling_rate"] = rate


def _add_flow_fields(doc: dict[str, Any], fields: dict[str, Any], record: FlowRecord) -> None:

    ingress = fields.get("input_ifindex")
    if ingress:  # ifIndex 0: the interface is not known (sFlow v5)
        doc["observer.ingress.interface.id"] = ingress
    egress = fields.get("output_ifindex")
    if egress:
        doc["observer.egress.interface.id"] = egress

    source_ip = fields.get("src_ip")
    destination_ip = fields.get("dst_ip")
    if source_ip is not None:
        doc["source.ip"] = source_ip
        doc["related.ip"] = [source_ip] if destination_ip in (None, source_ip) else [source_ip, destination_ip]
    if destination_ip is not None:
        doc["destination.ip"] = destination_ip
        if source_ip is None:
            doc["related.ip"] = [destination_ip]
    version = fields.get("ip_version")
    if version is not None:
        doc["network.type"] = "ipv4" if version == 4 else "ipv6"
    source_port = fields.get("src_port")
    if source_port is not None:
        doc["source.port"] = source_port
    destination_port = fields.get("dst_port")
    if destination_port is not None:
        doc["destination.port"] = destination_port
    protocol = fields.get("protocol")
    if protocol is not None:
        doc["network.iana_number"] = str(protocol)
        doc["network.transport"] = TRANSPORTS.get(protocol, str(protocol))

    mac = fields.get("src_mac")
    if mac is not None:
        doc["source.mac"] = ecs_mac(mac)
    mac = fields.get("dst_mac")
    if mac is not None:
        doc["destination.mac"] = ecs_mac(mac)
    vlan = fields.get("vlan")
    if vlan is None:
        vlan = fields.get("src_vlan")
        if vlan == VLAN_UNKNOWN or vlan == 0:
            vlan = None
    if vlan is not None:
        doc["network.vlan.id"] = str(vlan)
    customer_vlan = fields.get("customer_vlan")
    if customer_vlan is not None:
        doc["network.inner.vlan.id"] = str(customer_vlan)

    source_as = fields.get("src_as")
    if source_as:
        doc["source.as.number"] = source_as
    destination_as = fields.get("dst_as")
    if destination_as:
        doc["destination.as.number"] = destination_as
    if source_ip is not None or destination_ip is not None:
        doc["flow.id"] = flow_id(
            fields.get("agent_address", record.exporter[0]),
            source_ip,
            source_port,
            destination_ip,
            destination_port,
            protocol,
        )
