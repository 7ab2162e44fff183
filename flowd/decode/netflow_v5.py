"""NetFlow version 5 (Cisco's fixed format): a 24-byte header and 48-byte records.

The header's count is not trusted: records are bounded by the datagram length, and a count that
claims more than the datagram holds is reported as a soft error (the corpus has such headers).
The low 14 bits of the sampling word are the interval, the top 2 the mode.
"""

from __future__ import annotations

import struct

from flowd.decode.records import ipv4_string
from flowd.decode.templates import TemplateCache
from flowd.errors import TruncatedError
from flowd.model import KIND_NETFLOW_FLOW, DecodeResult, Exporter, FlowRecord, SoftError

HEADER = struct.Struct("!HHIIIIBBH")
RECORD = struct.Struct("!4s4s4sHHIIIIHHxBBBHHBBxx")
MAX_RECORDS = 30
NAMES = (
    "source_ipv4_address",
    "destination_ipv4_address",
    "ip_next_hop_ipv4_address",
    "ingress_interface",
    "egress_interface",
    "packet_delta_count",
    "octet_delta_count",
    "flow_start_sys_up_time",
    "flow_end_sys_up_time",
    "source_transport_port",
    "destination_transport_port",
    "tcp_control_bits",
    "protocol_identifier",
    "ip_class_of_service",
    "bgp_source_as_number",
    "bgp_destination_as_number",
    "source_ipv4_prefix_length",
    "destination_ipv4_prefix_length",
)


def decode_netflow_v5(
    data: bytes | memoryview, exporter: Exporter, templates: TemplateCache, received_at: float
) -> DecodeResult:
    if len(data) < HEADER.size:
        raise TruncatedError(f"NetFlow v5 header needs {HEADER.size} bytes, datagram has {len(data)}", offset=0)
    _, count, uptime_ms, unix_secs, _, sequence, engine_type, engine_id, sampling = HEADER.unpack_from(data, 0)
    available = (len(data) - HEADER.size) // RECORD.size
    result = DecodeResult(version=5, declared_records=count)
    if count != available:
        result.errors.append(
            SoftError("record_count_mismatch", f"header claims {count} records, datagram holds {available}", 0)
        )
    if available == 0 and count:
        raise TruncatedError(f"header claims {count} records, datagram holds none", offset=HEADER.size)
    rate = (sampling & 0x3FFF) or 1
    body = memoryview(data)[HEADER.size : HEADER.size + available * RECORD.size]
    flows = result.flows
    for values in RECORD.iter_unpack(body):
        row = dict(zip(NAMES, values, strict=True))
        row["source_ipv4_address"] = ipv4_string(values[0])
        row["destination_ipv4_address"] = ipv4_string(values[1])
        row["ip_next_hop_ipv4_address"] = ipv4_string(values[2])
        row["engine_type"] = engine_type
        row["engine_id"] = engine_id
        flows.append(
            FlowRecord(KIND_NETFLOW_FLOW, exporter, 5, received_at, row, 0, 0, sequence, unix_secs, uptime_ms, rate)
        )
    return result
