"""The `network.community_id` column of a table, built in bulk.

The hash input of every eligible row is built in numpy and hashed one SHA-1 per flow
(`community_id.community_ids_bulk`), per address family and per kind of protocol: with ports
(TCP, UDP, SCTP), with ICMP's type and code mapped to ports as the spec says, or without ports
(every other protocol). The result stays a matrix of quoted JSON strings (`LazyColumn`) until a
row is asked for as a Python value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.enrich.address_ends import End
from flowd.enrich.columns import port_column
from flowd.enrich.community_id import (
    ICMP_COUNTERPARTS,
    ICMPV6_COUNTERPARTS,
    PORT_PROTOCOLS,
    PROTO_ICMP,
    PROTO_ICMPV6,
    community_ids_bulk,
)
from flowd.output.table import LazyColumn, Table


def community_id_column(
    table: Table,
    source: End,
    destination: End,
    protocols: npt.NDArray[np.int64],
    eligible: npt.NDArray[np.bool_],
    seed: bytes,
) -> LazyColumn:
    """Community ID of the eligible rows (absent elsewhere), hashed in bulk per address
    family: with ports (TCP, UDP, SCTP; ICMP type and code mapped as the spec says) or
    without (every other protocol)."""
    count = len(table)
    text = np.zeros((count, 32), dtype=np.uint8)  # "1:" + 28 base64 characters, quoted
    text[:, :3] = np.frombuffer(b'"1:', dtype=np.uint8)
    text[:, 31] = ord('"')
    source_ports = port_column(table, "source.port", count)
    destination_ports = port_column(table, "destination.port", count)
    one_way = np.zeros(count, dtype=np.bool_)
    kind = _PROTOCOL_KINDS[np.where((protocols >= 0) & (protocols <= 255), protocols, 256)]
    icmp = eligible & (kind == _ICMP_KIND)
    if icmp.any():
        icmp_type, icmp_other, icmp_one_way = _icmp_ports(table, protocols, destination_ports)
        source_ports = np.where(icmp, icmp_type, source_ports)
        destination_ports = np.where(icmp, icmp_other, destination_ports)
        one_way = icmp & icmp_one_way
    with_ports = kind != _PORTLESS_KIND
    lengths = source.lengths()[source.index]
    for ported in (True, False):
        for length in (4, 16):
            rows = _selection(eligible & (with_ports == ported) & (lengths == length))
            if rows is not None:
                text[rows, 3:31] = community_ids_bulk(
                    np.take(source.packed(length), source.index[rows], axis=0),
                    np.take(destination.packed(length), destination.index[rows], axis=0),
                    protocols[rows],
                    (source_ports[rows], destination_ports[rows], one_way[rows]) if ported else None,
                    seed,
                )
    return LazyColumn(text, _identity, _quoted_strings, ~eligible)


def _counterparts(mapping: dict[int, int]) -> npt.NDArray[np.int64]:
    table = np.full(256, -1, dtype=np.int64)
    for kind, counterpart in mapping.items():
        table[kind] = counterpart
    return table


_ICMP_COUNTERPARTS = _counterparts(ICMP_COUNTERPARTS)
_ICMPV6_COUNTERPARTS = _counterparts(ICMPV6_COUNTERPARTS)


def _icmp_ports(
    table: Table, protocols: npt.NDArray[np.int64], destination_ports: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Per row, the ICMP type, the port paired with it (the counterpart type, or the code for a
    one-way type) and whether it is one-way, as `community_id.icmp_type_code` reads them."""
    count = len(protocols)
    found = []
    for version in ("ipv4", "ipv6"):
        kind = port_column(table, f"netflow.icmp_type_{version}", count, missing=-1)
        code = port_column(table, f"netflow.icmp_code_{version}", count, missing=0)
        combined = port_column(table, f"netflow.icmp_type_code_{version}", count, missing=-1)
        combined = np.where(combined >= 0, combined, destination_ports)
        found.append((np.where(kind >= 0, kind, (combined >> 8) & 0xFF), np.where(kind >= 0, code, combined & 0xFF)))
    six = protocols == PROTO_ICMPV6
    kind = np.where(six, found[1][0], found[0][0])
    code = np.where(six, found[1][1], found[0][1])
    sampled = port_column(table, "sflow.icmp_type", count, missing=-1)  # from the sampled header
    if (sampled >= 0).any():
        code = np.where(sampled >= 0, port_column(table, "sflow.icmp_code", count, missing=0), code)
        kind = np.where(sampled >= 0, sampled, kind)
    in_table = (kind >= 0) & (kind <= 255)
    counterpart = np.where(six, _ICMPV6_COUNTERPARTS[kind & 0xFF], _ICMP_COUNTERPARTS[kind & 0xFF])
    counterpart = np.where(in_table, counterpart, -1)
    one_way = counterpart < 0
    return kind, np.where(one_way, code, counterpart), one_way


_PORTLESS_KIND, _PORTED_KIND, _ICMP_KIND = range(3)
_PROTOCOL_KINDS = np.full(257, _PORTLESS_KIND, dtype=np.int8)
"""Per protocol number (256: none or out of range), how the Community ID hashes it."""
_PROTOCOL_KINDS[list(PORT_PROTOCOLS)] = _PORTED_KIND
_PROTOCOL_KINDS[[PROTO_ICMP, PROTO_ICMPV6]] = _ICMP_KIND


def _selection(rows: npt.NDArray[np.bool_]) -> slice | npt.NDArray[np.intp] | None:
    """`rows` as an index: every row as a slice (indexing makes views, not copies), else the
    positions; None when there is none."""
    if rows.all():
        return slice(None)
    return np.flatnonzero(rows) if rows.any() else None


def _identity(matrix: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return matrix


def _quoted_strings(matrix: npt.NDArray[np.uint8]) -> list[Any]:
    """Rows of quoted ASCII JSON strings back to Python strings (the missing rows are masked)."""
    width = matrix.shape[1]
    text = matrix.tobytes().decode("ascii")
    return [text[i + 1 : i + width - 1] for i in range(0, len(text), width)]
