"""FlowRecord -> ECS document (design.md section 4), as a flat dict with dotted keys.

Flat keys are what Elasticsearch expands into objects anyway, and building them is the cheapest
form in Python. Raw element values stay under `netflow.*`; the ECS fields are derived here once.
Counters are scaled by the record's sampling rate; `flowd.raw_*` keep what the exporter sent.
"""

from __future__ import annotations

from typing import Any

from flowd.model import KIND_NETFLOW_OPTIONS, KIND_SFLOW_COUNTERS, KIND_SFLOW_DROP, KIND_SFLOW_FLOW, FlowRecord
from flowd.output.ecs import TRANSPORTS, ecs_mac, flow_id
from flowd.output.sflow_documents import sflow_document
from flowd.output.timestamps import in_document_range, iso_from_ms, uptime_age_ms

MAX_LONG = 2**63 - 1
"""Elasticsearch `long`; scaled counters saturate here rather than fail the whole document."""
MAX_DURATION_MS = MAX_LONG // 1_000_000
FORWARD_BYTES = ("octet_delta_count", "initiator_octets", "octet_total_count", "layer2_octet_delta_count")
FORWARD_PACKETS = ("packet_delta_count", "initiator_packets", "packet_total_count")
REVERSE_BYTES = ("reverse_octet_delta_count", "responder_octets", "reverse_octet_total_count")
REVERSE_PACKETS = ("reverse_packet_delta_count", "responder_packets", "reverse_packet_total_count")
"""Counters in order of preference: counts since the previous report before running totals, so a
record carrying both (Cisco ASA flow updates and teardowns: NF_F_FWD/REV_FLOW_DELTA_BYTES, IEs
231/232, beside the flow's total in IE 85) adds to sums only what is new, in both directions."""
START_ABSOLUTE = (
    "flow_start_milliseconds",
    "flow_start_seconds",
    "flow_start_microseconds",
    "flow_start_nanoseconds",
)
END_ABSOLUTE = ("flow_end_milliseconds", "flow_end_seconds", "flow_end_microseconds", "flow_end_nanoseconds")
EVENT_TIME = ("observation_time_milliseconds", "observation_time_seconds", "event_time_milliseconds")
"""ASA NSEL and other event exporters stamp records with an observation time instead of an end."""

CONNECTION = ("connection",)
STARTED = ("connection", "start")
ENDED = ("connection", "end")
DENIED = ("connection", "denied")
FIREWALL_EVENT = ("firewall_event", "fw_event")
"""IPFIX firewallEvent (IE 233) and Cisco ASA NSEL NF_F_FW_EVENT (NetFlow v9 40005), same values."""
FIREWALL_EVENT_TYPES: dict[int, tuple[str, ...]] = {1: STARTED, 2: ENDED, 3: DENIED}
"""A firewall's flow created, deleted and denied events (0 ignore, 4 alert and 5 update stay
plain connections)."""
NAT_EVENT = ("nat_event",)
"""natEvent (IE 230)."""
NAT_EVENT_TYPES: dict[int, tuple[str, ...]] = {
    1: STARTED,
    2: ENDED,
    4: STARTED,
    5: ENDED,
    6: STARTED,
    7: ENDED,
    8: STARTED,
    9: ENDED,
}
"""Sessions and bindings created and deleted. RFC 8158 and the draft numbering Juniper exports
agree on these as pairs (1/2 translation or NAT44 session, 4/5, 6/7, 8/9 sessions and bindings);
3 and 10 on are exhaustion, quota and port-block events, numbered differently by the two: left
as plain connections."""
EVENT_SOURCES = ((FIREWALL_EVENT, FIREWALL_EVENT_TYPES), (NAT_EVENT, NAT_EVENT_TYPES))
"""(fields, value -> event.type), in order: the first that names an event decides."""
FORWARDING_STATUS = "forwarding_status"
FORWARDING_DROPPED = 2
"""forwardingStatus (IE 89, RFC 7270): the status is the two high bits of the low octet (whatever
the encoding's length): 1 forwarded, 2 dropped, 3 consumed."""


def event_type(fields: dict[str, Any]) -> tuple[str, ...]:
    """`event.type` of a flow record: a firewall's or NAT's start, end or denied; a flow the
    router dropped (forwardingStatus) denied; else a connection."""
    for names, types in EVENT_SOURCES:
        value = _first_int(fields, names)
        if value is not None and value in types:
            return types[value]
    return DENIED if forwarding_dropped(fields.get(FORWARDING_STATUS)) else CONNECTION


def forwarding_dropped(status: Any) -> bool:
    """Whether a forwardingStatus value says the flow was dropped."""
    return isinstance(status, int) and (status >> 6) & 3 == FORWARDING_DROPPED


COPIED = (
    ("ingress_interface", "observer.ingress.interface.id"),
    ("egress_interface", "observer.egress.interface.id"),
)
COPIED_UNLESS_ZERO = (
    ("bgp_source_as_number", "source.as.number"),
    ("bgp_destination_as_number", "destination.as.number"),
)


def _counter(fields: dict[str, Any], names: tuple[str, ...]) -> int | None:
    """The first counter present as an integer: one a damaged template gave another length (kept
    as hex) gives way to the next, as in the columnar path."""
    return _first_int(fields, names)


def _both_directions(forward: int | None, reverse: int | None) -> int | None:
    """The two directions' counters summed; None when the record has neither."""
    if forward is None and reverse is None:
        return None
    return (forward or 0) + (reverse or 0)


def _first_int(fields: dict[str, Any], names: tuple[str, ...]) -> int | None:
    """The first of `names` the record has as an integer."""
    for name in names:
        value = fields.get(name)
        if isinstance(value, int):
            return value
    return None


def _first_time(fields: dict[str, Any], names: tuple[str, ...]) -> int | None:
    """The first of `names` the record has as an integer, if a document's date can hold it
    (`timestamps.in_document_range`)."""
    value = _first_int(fields, names)
    return value if value is not None and in_document_range(value) else None


def pick_address(ipv4: Any, ipv6: Any) -> Any:
    """Templates with both families (Procera, some firewalls) zero the one a flow does not use."""
    if ipv6 is not None and (ipv4 is None or ipv4 == "0.0.0.0"):
        return ipv6
    return ipv4


def flow_document(record: FlowRecord) -> dict[str, Any]:
    """The index document for any record kind."""
    if record.kind in (KIND_SFLOW_FLOW, KIND_SFLOW_COUNTERS, KIND_SFLOW_DROP):
        return sflow_document(record)
    return netflow_document(record)


def netflow_document(record: FlowRecord) -> dict[str, Any]:
    fields = record.fields
    exporter_address, exporter_port = record.exporter
    start_ms, end_ms = _flow_times(record)
    options = record.kind == KIND_NETFLOW_OPTIONS
    doc: dict[str, Any] = {
        "@timestamp": iso_from_ms(_timestamp_ms(record, end_ms)),
        "event.kind": "event",
        "event.category": ["network"],
        "event.type": ["info"] if options else list(event_type(fields)),
        "event.action": record.kind,
        "observer.ip": exporter_address,
        "netflow.type": record.kind,
        "netflow.exporter.address": f"{exporter_address}:{exporter_port}",
        "netflow.exporter.version": record.version,
        "netflow.exporter.source_id": record.domain_id,
        "netflow.exporter.timestamp": iso_from_ms(record.export_time * 1000),
    }
    if record.uptime_ms is not None:
        doc["netflow.exporter.uptime_millis"] = record.uptime_ms
    for name, value in fields.items():
        doc["netflow." + name] = value
    if start_ms is not None:
        doc["event.start"] = iso_from_ms(start_ms)
    if end_ms is not None:
        doc["event.end"] = iso_from_ms(end_ms)
        if start_ms is not None and 0 <= end_ms - start_ms <= MAX_DURATION_MS:
            doc["event.duration"] = (end_ms - start_ms) * 1_000_000
    if options:
        return doc

    source_ip = pick_address(fields.get("source_ipv4_address"), fields.get("source_ipv6_address"))
    destination_ip = pick_address(fields.get("destination_ipv4_address"), fields.get("destination_ipv6_address"))
    related = []
    if source_ip is not None:
        doc["source.ip"] = source_ip
        related.append(source_ip)
    if destination_ip is not None:
        doc["destination.ip"] = destination_ip
        if destination_ip != source_ip:
            related.append(destination_ip)
    if related:
        doc["related.ip"] = related
        doc["network.type"] = "ipv6" if ":" in related[0] else "ipv4"
    source_port = fields.get("source_transport_port")
    destination_port = fields.get("destination_transport_port")
    if source_port is not None:
        doc["source.port"] = source_port
    if destination_port is not None:
        doc["destination.port"] = destination_port
    protocol = fields.get("protocol_identifier")
    if protocol is not None:
        doc["network.iana_number"] = str(protocol)
        doc["network.transport"] = TRANSPORTS.get(protocol, str(protocol))

    rate = record.sampling_rate
    forward_bytes = _counter(fields, FORWARD_BYTES)
    forward_packets = _counter(fields, FORWARD_PACKETS)
    reverse_bytes = _counter(fields, REVERSE_BYTES)
    reverse_packets = _counter(fields, REVERSE_PACKETS)
    raw_bytes = _both_directions(forward_bytes, reverse_bytes)
    raw_packets = _both_directions(forward_packets, reverse_packets)
    if forward_bytes is not None:
        doc["source.bytes"] = min(forward_bytes * rate, MAX_LONG)
    if forward_packets is not None:
        doc["source.packets"] = min(forward_packets * rate, MAX_LONG)
    if reverse_bytes is not None:
        doc["destination.bytes"] = min(reverse_bytes * rate, MAX_LONG)
    if reverse_packets is not None:
        doc["destination.packets"] = min(reverse_packets * rate, MAX_LONG)
    for key, total, scale in (
        ("network.bytes", raw_bytes, rate),
        ("network.packets", raw_packets, rate),
        ("flowd.raw_bytes", raw_bytes, 1),
        ("flowd.raw_packets", raw_packets, 1),
    ):
        if total is not None:  # a record without counters counts nothing, not 0
            doc[key] = min(total * scale, MAX_LONG)
    doc["flowd.sampling_rate"] = rate

    mac = fields.get("source_mac_address")
    if mac is not None:
        doc["source.mac"] = ecs_mac(mac)
    mac = fields.get("destination_mac_address") or fields.get("post_destination_mac_address")
    if mac is not None:
        doc["destination.mac"] = ecs_mac(mac)
    vlan = fields.get("vlan_id")
    if vlan is not None:
        doc["network.vlan.id"] = str(vlan)
    for name, key in COPIED:
        value = fields.get(name)
        if value is not None:
            doc[key] = value
    for name, key in COPIED_UNLESS_ZERO:  # AS 0 means "not known" (RFC 7012 bgpSourceAsNumber)
        value = fields.get(name)
        if value:
            doc[key] = value
    doc["flow.id"] = flow_id(record.exporter[0], source_ip, source_port, destination_ip, destination_port, protocol)
    return doc


def _timestamp_ms(record: FlowRecord, end_ms: int | None) -> int:
    """Flow end; else the event time; else the export time; else when it was received."""
    if end_ms is not None:
        return end_ms
    event_ms = _first_time(record.fields, EVENT_TIME)
    if event_ms is not None:
        return event_ms
    return clock_ms(record.export_time, record.received_at)


def clock_ms(export_time: int, received_at: float) -> int:
    """The exporter's clock at the export, in epoch ms, which its relative times count back
    from: its export time, or when flowd received it where the exporter sends 0 (no clock set)
    and would otherwise date its flows in 1970."""
    return export_time * 1000 if export_time else int(received_at * 1000)


def _flow_times(record: FlowRecord) -> tuple[int | None, int | None]:
    """Absolute start and end in epoch ms, from absolute elements or sysUpTime-relative ones.
    Only integers count: a template giving a time element an odd length decodes it as hex."""
    fields = record.fields
    start = _first_time(fields, START_ABSOLUTE)
    end = _first_time(fields, END_ABSOLUTE)
    export_ms = clock_ms(record.export_time, record.received_at)
    if record.uptime_ms is not None:
        if start is None:
            relative = _first_int(fields, ("flow_start_sys_up_time",))
            if relative is not None:
                start = export_ms - uptime_age_ms(record.uptime_ms, relative)
        if end is None:
            relative = _first_int(fields, ("flow_end_sys_up_time",))
            if relative is not None:
                end = export_ms - uptime_age_ms(record.uptime_ms, relative)
    if start is None:
        delta = _first_int(fields, ("flow_start_delta_microseconds",))
        if delta is not None:
            start = export_ms - delta // 1000
    if end is None:
        delta = _first_int(fields, ("flow_end_delta_microseconds",))
        if delta is not None:
            end = export_ms - delta // 1000
    return start, end
