"""NetFlow version 5 (Cisco's fixed format): a 24-byte header and 48-byte records.

The header's count is not trusted alone: records are bounded by the datagram length and by the
count, and any disagreement between the two is reported as a soft error (the corpus has headers
that claim more records than the datagram holds, and datagrams with bytes after the last record).
The low 14 bits of the sampling word are the interval, the top 2 the mode. Records are read as
one numpy array through a template of the equivalent IPFIX elements, so v5 documents carry the
same `netflow.*` names as v9 and IPFIX ones.
"""

from __future__ import annotations

import struct

from flowd.decode.batch import RecordBatch
from flowd.decode.records import TemplateField, compile_template
from flowd.decode.templates import TemplateCache
from flowd.errors import TruncatedError
from flowd.model import KIND_NETFLOW_FLOW, DecodeResult, Exporter, SoftError

HEADER = struct.Struct("!HHIIIIBBH")
RECORD_LENGTH = 48
PADDING = 210  # paddingOctets: skipped by the template compiler
V5_RECORD = compile_template(
    0,
    tuple(
        TemplateField(element, length)
        for element, length in (
            (8, 4),  # srcaddr
            (12, 4),  # dstaddr
            (15, 4),  # nexthop
            (10, 2),  # input ifIndex
            (14, 2),  # output ifIndex
            (2, 4),  # dPkts
            (1, 4),  # dOctets
            (22, 4),  # First (sysUpTime ms)
            (21, 4),  # Last
            (7, 2),  # srcport
            (11, 2),  # dstport
            (PADDING, 1),
            (6, 1),  # tcp_flags
            (4, 1),  # prot
            (5, 1),  # tos
            (16, 2),  # src_as
            (17, 2),  # dst_as
            (9, 1),  # src_mask
            (13, 1),  # dst_mask
            (PADDING, 2),
        )
    ),
)


def decode_netflow_v5(
    data: bytes | memoryview, exporter: Exporter, templates: TemplateCache, received_at: float
) -> DecodeResult:
    if len(data) < HEADER.size:
        raise TruncatedError(f"NetFlow v5 header needs {HEADER.size} bytes, datagram has {len(data)}", offset=0)
    _, count, uptime_ms, unix_secs, _, sequence, engine_type, engine_id, sampling = HEADER.unpack_from(data, 0)
    available = (len(data) - HEADER.size) // RECORD_LENGTH
    result = DecodeResult(version=5, declared_records=count)
    if count != available:
        result.errors.append(
            SoftError("record_count_mismatch", f"header claims {count} records, datagram holds {available}", 0)
        )
    if available == 0 and count:
        raise TruncatedError(f"header claims {count} records, datagram holds none", offset=HEADER.size)
    available = min(count, available)  # bytes beyond the declared records are not records
    batch = RecordBatch(
        V5_RECORD,
        V5_RECORD.decode_array(data, HEADER.size, HEADER.size + available * RECORD_LENGTH),
        KIND_NETFLOW_FLOW,
        exporter,
        5,
        received_at,
        0,
        sequence,
        unix_secs,
        uptime_ms,
        (sampling & 0x3FFF) or 1,
        {"engine_type": engine_type, "engine_id": engine_id, "sampling_interval": sampling & 0x3FFF},
    )
    result.flows.add_batch(batch)
    return result
