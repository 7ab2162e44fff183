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
from collections.abc import Sequence

import numpy as np

from flowd.decode.batch import RecordBatch, RowHeaders
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


HEADER_DTYPE = np.dtype(
    [
        ("version", ">u2"),
        ("count", ">u2"),
        ("uptime_ms", ">u4"),
        ("unix_secs", ">u4"),
        ("unix_nsecs", ">u4"),
        ("sequence", ">u4"),
        ("engine_type", "u1"),
        ("engine_id", "u1"),
        ("sampling", ">u2"),
    ]
)
assert HEADER_DTYPE.itemsize == HEADER.size
V5_PREFIX = b"\x00\x05"
"""The version word of a NetFlow v5 datagram."""

Item = tuple[bytes, Exporter, float]
"""A datagram, its exporter, and when it was received."""


def decode_netflow_v5_batch(items: Sequence[Item]) -> tuple[list[RecordBatch], list[int]]:
    """The records of every well-formed v5 datagram of `items` (a receive batch's), decoded at once,
    and the indices of the others, for `decode_netflow_v5`.

    Well-formed: at least one record, and the declared records after the header (then less than
    a record, which is padding). For those, `decode_netflow_v5` reports no error, and what it
    gives, joined by `merge_batches`, is what this gives: one batch per engine and sampling word,
    its rows in datagram order with their headers as runs (`RowHeaders`). A test holds the two
    to it. Per datagram, this costs a length check and two slices instead of a decoder call with
    its result objects.
    """
    sizes = [len(item[0]) for item in items]
    whole = [i for i, size in enumerate(sizes) if size >= HEADER.size + RECORD_LENGTH]
    if not whole:
        return [], list(range(len(items)))
    headers = np.frombuffer(b"".join([items[i][0][: HEADER.size] for i in whole]), HEADER_DTYPE)
    counts = headers["count"].astype(np.int64)
    fits = counts == (np.array([sizes[i] for i in whole]) - HEADER.size) // RECORD_LENGTH  # a shorter tail is padding
    fits &= headers["version"] == 5
    taken = np.flatnonzero(fits)
    left = sorted(set(range(len(items))) - {whole[i] for i in taken.tolist()})
    if not len(taken):
        return [], left
    headers = headers[taken]
    counts_taken = counts[taken]
    numbers = [whole[i] for i in taken.tolist()]
    sampling = headers["sampling"].astype(np.int64)
    keys = (headers["engine_type"].astype(np.int64) << 24) | (headers["engine_id"].astype(np.int64) << 16) | sampling
    batches = []
    for key in np.unique(keys).tolist():
        rows = np.flatnonzero(keys == key)
        group = [items[numbers[row]] for row in rows.tolist()]
        lengths = counts_taken[rows].tolist()
        ends = [HEADER.size + RECORD_LENGTH * count for count in lengths]
        records = np.frombuffer(
            b"".join([data[HEADER.size : end] for (data, _, _), end in zip(group, ends, strict=True)]), V5_RECORD.dtype
        )
        interval = key & 0x3FFF
        exporters = [exporter for _, exporter, _ in group]
        received = [received_at for _, _, received_at in group]
        export_times = headers["unix_secs"][rows].tolist()
        uptimes = headers["uptime_ms"][rows].tolist()
        sequences = headers["sequence"][rows].tolist()
        batch = RecordBatch(
            V5_RECORD,
            records,
            KIND_NETFLOW_FLOW,
            exporters[0],
            5,
            received[0],
            0,
            sequences[0],
            export_times[0],
            uptimes[0],
            interval or 1,
            {"engine_type": key >> 24, "engine_id": (key >> 16) & 0xFF, "sampling_interval": interval},
        )
        runs = len(group)
        batch.row_headers = RowHeaders(
            lengths, exporters, [0] * runs, [V5_RECORD.template_id] * runs, export_times, uptimes, sequences, received
        )
        batches.append(batch)
    return batches, left
