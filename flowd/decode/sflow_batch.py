"""sFlow flow samples of the common shape, decoded a receive batch at a time in numpy.

Most flow samples a switch sends look alike: ifIndex interfaces, one raw packet header record
(an Ethernet frame, maybe with one 802.1Q tag, carrying IPv4 or IPv6 and TCP, UDP or ICMP) and
perhaps an extended switch record; a router adds extended router and gateway records.
`walk_simple_sample` recognises that shape while the datagram is walked (a few `unpack_from`
calls; the router and gateway records, whose AS paths and communities vary in length, through
the per-sample decoder's own functions, their values packed by layout: `routing_fields`); such
samples are kept as offsets in a `SampleBatch`. Joined across a receive batch
(`join_sample_batches`), their header snapshots become one byte matrix and
`simple_sample_columns` reads every field for all of them at once.

Nothing here decides a value differently from the per-sample decoder: a `SampleBatch` is a
`Sequence[FlowRecord]` whose records *are* the per-sample decoder's (it decodes them from the
kept offsets when iterated), and any sample whose snapshot the vectorised reader does not take
whole (QinQ, MPLS, fragments, IPv6 extension headers, VXLAN, short snapshots, other protocols at
layer 2) is handed back by row number for that decoder. A test holds the columns to the records.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, overload

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from flowd.decode.batch import per_run
from flowd.decode.headers import HEADER_PROTOCOL_ETHERNET
from flowd.decode.sflow_routing import decode_extended_gateway, decode_extended_router
from flowd.errors import DecodeError
from flowd.model import KIND_SFLOW_FLOW, Exporter, FlowRecord, SoftError

SFLOW_VERSION = 5
INTERFACE_INTERNAL = 0x3FFFFFFF
"""sFlow v5 "interface" encoding: ifIndex 0x3FFFFFFF means the packet came from or went to the agent itself."""
INTERFACE_INTERNAL_EXPANDED = 0xFFFFFFFF
"""The same in an expanded sample (sFlow v5 `interface_expanded`: "0xFFFFFFFF ... must be used to
indicate traffic originating or terminating in device"); agents also send 0x3FFFFFFF there, so
both mean the agent itself."""
RECORD_RAW_HEADER = 1
RECORD_SWITCH = 1001
RECORD_ROUTER = 1002
RECORD_GATEWAY = 1003
ROUTING_DECODERS = {RECORD_ROUTER: decode_extended_router, RECORD_GATEWAY: decode_extended_gateway}
"""The records a router adds to its samples, decoded per sample in a common-shape sample too."""
MAX_RECORDS = 4
"""A common-shape sample has a raw header and at most one each of switch, router and gateway."""
ROUTING_ROUTER, ROUTING_GATEWAY, ROUTING_PATH = 1, 2, 4
"""Bits of a packed routing layout: a router record, a gateway record, a non-empty AS path."""
ROUTER_KEYS = ("next_hop", "src_mask_len", "dst_mask_len")
GATEWAY_KEYS = ("bgp_next_hop", "router_as", "src_as", "src_peer_as", "dst_as_path", "dst_as_path_segment_types")
PATH_KEYS = ("dst_peer_as", "dst_as")
GATEWAY_TAIL_KEYS = ("communities", "local_pref")
ROUTING_KEYS = {
    layout: (ROUTER_KEYS if layout & ROUTING_ROUTER else ())
    + (
        (*GATEWAY_KEYS, *(PATH_KEYS if layout & ROUTING_PATH else ()), *GATEWAY_TAIL_KEYS)
        if layout & ROUTING_GATEWAY
        else ()
    )
    for layout in (1, 2, 3, 6, 7)
}
"""The keys of each routing layout, in the order the per-sample decoder sets them. A sample's
routing values are packed as (layout, its values in this order): one tuple per sample, which
the table builder transposes into columns."""
SNAPSHOT_BYTES = 96
"""Header bytes the vectorised reader looks at: Ethernet with one tag (18), the longest IPv4
header (60) and the TCP flags (14) fit; a sample needing more goes to the per-sample decoder."""

_FLOW = struct.Struct("!8I")
_FLOW_EXPANDED = struct.Struct("!11I")
_II = struct.Struct("!II")
_RAW_HEADER = struct.Struct("!IIII")
_SWITCH = struct.Struct("!IIII")
_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
_IPV6_CHAIN = (0, 43, 44, 51, 60, 135, 139, 140)
"""Next-header values the per-sample decoder follows (extension headers, fragment, AH)."""
_VXLAN_PORT = 4789
_INTERNAL = (INTERFACE_INTERNAL, INTERFACE_INTERNAL_EXPANDED)
TRANSPORT_NONE, TRANSPORT_TCP, TRANSPORT_PORTS, TRANSPORT_ICMP = 0, 1, 2, 3
"""What a snapshot's transport header gives: nothing, TCP ports and flags, ports, ICMP type and code."""

Walked = tuple[Any, ...]
"""(start, end, expanded, sequence, source id type, source id index, rate, pool, drops, input
ifIndex, output ifIndex, frame length, stripped, header length, header offset, switch values,
routing values: the router and gateway records' fields as the per-sample decoder sets them,
packed as `ROUTING_KEYS` says, or None without those records)."""
Array = npt.NDArray[Any]


class WalkedColumns(NamedTuple):
    """The `Walked` values of many samples, a column each (int64; `expanded` and `has_switch`
    bool; `switch` one row of four values per sample, zeros where there is no switch record;
    `routing` objects, packed routing values or None). Offsets are in bytes from the start of the
    sample's datagram."""

    start: Array
    end: Array
    expanded: Array
    sequence: Array
    id_type: Array
    id_index: Array
    rate: Array
    pool: Array
    drops: Array
    input_ifindex: Array
    output_ifindex: Array
    frame_length: Array
    stripped: Array
    header_length: Array
    header_offset: Array
    has_switch: Array
    switch: Array
    routing: Array

    @classmethod
    def from_rows(cls, rows: Sequence[Walked]) -> WalkedColumns:
        *values, switches, routing = zip(*rows, strict=True) if rows else [()] * (len(cls._fields) - 1)  # switch: 2
        ints = [np.array(v, dtype=np.int64) for v in values]
        ints[2] = ints[2].astype(np.bool_)
        has_switch = np.array([s is not None for s in switches], dtype=np.bool_)
        switch = np.array([s or (0, 0, 0, 0) for s in switches], dtype=np.int64).reshape(len(rows), 4)
        return cls._make([*ints, has_switch, switch, object_column(routing)])

    @classmethod
    def concatenate(cls, parts: Sequence[WalkedColumns]) -> WalkedColumns:
        return cls._make(np.concatenate(values) for values in zip(*parts, strict=True))

    def row(self, index: int) -> Walked:
        """One sample's values as `walk_simple_sample` gives them."""
        *values, has_switch, switch, routing = (column[index] for column in self)
        walked = [int(v) for v in values]
        walked[2] = bool(walked[2])
        return (*walked, tuple(int(v) for v in switch) if has_switch else None, routing)


def object_column(values: Sequence[Any]) -> Array:
    """A 1-D object array of `values` (tuples, lists, strings, Nones), one element each."""
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def routing_fields(data: bytes | memoryview, records: Sequence[tuple[int, int, int]]) -> tuple[Any, ...] | None:
    """The fields the per-sample decoder sets from a sample's router and gateway `records`
    ((format, body start, body end) each, in the sample's order), packed (`ROUTING_KEYS`), or
    None when one of them does not decode or leaves a value unknown (next hop address type 0):
    such a sample is not of the common shape."""
    fields: dict[str, Any] = {}
    for record_format, start, stop in records:
        try:
            ROUTING_DECODERS[record_format](data, start, stop, fields)
        except DecodeError:
            return None
    if None in fields.values():
        return None
    layout = (
        ("next_hop" in fields) * ROUTING_ROUTER
        + ("bgp_next_hop" in fields) * ROUTING_GATEWAY
        + ("dst_as" in fields) * ROUTING_PATH
    )
    return (layout, *(fields[key] for key in ROUTING_KEYS[layout]))


def walk_simple_sample(data: bytes | memoryview, start: int, end: int, expanded: bool) -> Walked | None:
    """The values of a flow sample of the common shape in `data[start:end]`, else None."""
    if expanded:
        if end - start < 44:
            return None
        sequence, id_type, id_index, rate, pool, drops, in_format, in_value, out_format, out_value, count = (
            _FLOW_EXPANDED.unpack_from(data, start)
        )
        pos = start + 44
    else:
        if end - start < 32:
            return None
        sequence, source_id, rate, pool, drops, in_word, out_word, count = _FLOW.unpack_from(data, start)
        pos = start + 32
        id_type, id_index = source_id >> 24, source_id & 0xFFFFFF
        in_format, in_value = in_word >> 30, in_word & 0x3FFFFFFF
        out_format, out_value = out_word >> 30, out_word & 0x3FFFFFFF
    if in_format or out_format or in_value in _INTERNAL or out_value in _INTERNAL:
        return None
    if not 1 <= count <= MAX_RECORDS:
        return None
    header: tuple[int, int, int, int] | None = None
    switch: tuple[int, ...] | None = None
    routing: list[tuple[int, int, int]] = []
    for _ in range(count):
        if end - pos < 8:
            return None
        record_format, length = _II.unpack_from(data, pos)
        body = pos + 8
        pos = body + length
        if pos > end or length < 16:
            return None
        if record_format == RECORD_RAW_HEADER and header is None:
            protocol, frame_length, stripped, header_length = _RAW_HEADER.unpack_from(data, body)
            if protocol != HEADER_PROTOCOL_ETHERNET or header_length > length - 16:
                return None
            header = (frame_length, stripped, header_length, body + 16)
        elif record_format == RECORD_SWITCH and switch is None:
            switch = _SWITCH.unpack_from(data, body)
        elif record_format in ROUTING_DECODERS and all(record[0] != record_format for record in routing):
            routing.append((record_format, body, pos))
        else:
            return None
    if header is None:
        return None
    extras = None
    if routing:
        extras = routing_fields(data, routing)
        if extras is None:
            return None
    head = (start, end, expanded, sequence, id_type, id_index, rate, pool, drops, in_value, out_value)
    return (*head, *header, switch, extras)


SampleDecoder = Callable[[bytes | memoryview, int, int, bool, str, list[SoftError]], tuple[dict[str, Any], int]]
"""The per-sample decoder, `sflow.decode_flow_sample(data, start, end, expanded, agent, errors)`."""


def sample_record(
    kind: str, exporter: Exporter, received_at: float, fields: dict[str, Any], header: tuple[int, int, int], rate: int
) -> FlowRecord:
    """The record of one sFlow sample; `header` is the datagram's (sub-agent id, sequence, uptime ms)."""
    sub_agent, sequence, uptime_ms = header
    return FlowRecord(
        kind,
        exporter,
        SFLOW_VERSION,
        received_at,
        fields,
        sub_agent,
        0,
        sequence,
        0,
        uptime_ms,
        rate if rate > 0 else 1,
    )


class SampleBatch(Sequence[FlowRecord]):
    """Flow samples of the common shape from one or more datagrams, kept as offsets.

    The decoder of one datagram appends its samples' `Walked` tuples (`add_row`); the walker of a
    receive batch (`sflow_walk`) gives them as `WalkedColumns`. Iterating decodes them with the
    per-sample decoder it was given (`sflow.decode_flow_sample`), so every consumer of records
    sees exactly what the generic path gives; `flowd run` reads the batch with
    `simple_sample_columns` instead.
    """

    __slots__ = ("_columns", "_records", "counts", "datagrams", "decode", "rows")

    def __init__(self, decode: SampleDecoder, columns: WalkedColumns | None = None) -> None:
        self.decode = decode
        self.datagrams: list[tuple[bytes | memoryview, Exporter, float, str, int, int, int]] = []
        """(data, exporter, received at, agent, sub-agent id, datagram sequence, uptime ms)."""
        self.counts: list[int] = []
        """Rows of each datagram; the rows hold them datagram after datagram."""
        self.rows: list[Walked] = []
        """Rows appended by `add_row`; a batch made from `columns` has none."""
        self._columns = columns
        self._records: list[FlowRecord] | None = None

    def add_datagram(
        self, data: bytes | memoryview, exporter: Exporter, received_at: float, agent: str, header: tuple[int, int, int]
    ) -> None:
        """Rows appended from now on belong to this datagram (call `add_row`)."""
        self.datagrams.append((data, exporter, received_at, agent, *header))
        self.counts.append(0)

    def add_row(self, walked: Walked) -> None:
        self.rows.append(walked)
        self.counts[-1] += 1

    def columns(self) -> WalkedColumns:
        """Every row's values as columns."""
        if self._columns is None:
            self._columns = WalkedColumns.from_rows(self.rows)
        return self._columns

    def numbers(self) -> npt.NDArray[np.intp]:
        """The datagram of each row."""
        return np.repeat(np.arange(len(self.counts), dtype=np.intp), self.counts)

    def __len__(self) -> int:
        return len(self._columns.start) if self._columns is not None else len(self.rows)

    def walked(self, row: int) -> Walked:
        """One row's values."""
        return self.rows[row] if self.rows else self.columns().row(row)

    def record(self, row: int) -> FlowRecord:
        """The per-sample decoder's record of one row."""
        return self.records([row])[0]

    def _decode(
        self, walked: Walked, datagram: tuple[bytes | memoryview, Exporter, float, str, int, int, int]
    ) -> FlowRecord:
        data, exporter, received_at, agent, sub_agent, sequence, uptime_ms = datagram
        fields, rate = self.decode(data, walked[0], walked[1], walked[2], agent, [])  # shape checked: no errors
        return sample_record(KIND_SFLOW_FLOW, exporter, received_at, fields, (sub_agent, sequence, uptime_ms), rate)

    def records(self, rows: list[int]) -> list[FlowRecord]:
        """The per-sample decoder's records of `rows` (ascending)."""
        numbers = self.numbers().tolist()
        return [self._decode(self.walked(row), self.datagrams[numbers[row]]) for row in rows]

    def _all(self) -> list[FlowRecord]:
        if self._records is None:
            self._records = self.records(list(range(len(self))))
        return self._records

    @overload
    def __getitem__(self, index: int) -> FlowRecord: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[FlowRecord]: ...
    def __getitem__(self, index: int | slice) -> FlowRecord | Sequence[FlowRecord]:
        return self._all()[index]

    def __iter__(self) -> Iterator[FlowRecord]:
        return iter(self._all())


def join_sample_batches(batches: list[SampleBatch]) -> SampleBatch:
    """One batch of the samples of many (a receive batch's datagrams)."""
    if len(batches) == 1:
        return batches[0]
    appended = [batch for batch in batches if batch._columns is None]
    walked = [batch for batch in batches if batch._columns is not None]
    joined = SampleBatch(batches[0].decode)
    for batch in appended + walked:
        joined.datagrams += batch.datagrams
        joined.counts += batch.counts
    for batch in appended:
        joined.rows += batch.rows
    if walked:  # the appended rows become columns once, beside the walker's
        parts = [WalkedColumns.from_rows(joined.rows)] if joined.rows else []
        joined._columns = WalkedColumns.concatenate(parts + [batch.columns() for batch in walked])
        joined.rows = []
    return joined


class SampleGroup:
    """Rows of a `SampleBatch` whose fields have one key layout, as columns in the per-sample
    decoder's key order; `rows` are their row numbers in the batch. `absent` marks, per column
    that some rows lack (UDP rows beside TCP ones have no `tcp_flags`), the rows without it."""

    __slots__ = ("absent", "columns", "rows")

    def __init__(self, rows: Array, columns: dict[str, Any], absent: dict[str, Array] | None = None) -> None:
        self.rows = rows
        self.columns = columns
        self.absent = absent or {}


def simple_sample_columns(batch: SampleBatch) -> tuple[list[SampleGroup], list[int]]:
    """The batch's samples as column groups, and the rows the vectorised reader left for the
    per-sample decoder."""
    count = len(batch)
    if not count:
        return [], []
    numbers = batch.numbers()
    walked = batch.columns()
    snapshots = _snapshots(batch, numbers, walked.header_offset)
    length = walked.header_length
    parsed = _parse_snapshots(snapshots, length)
    taken = parsed.pop("_taken")
    has_switch = walked.has_switch
    switch_values = walked.switch

    common: dict[str, Any] = {
        "agent_address": per_run([d[3] for d in batch.datagrams], batch.counts),
        "sample_sequence": walked.sequence,
        "source_id_type": walked.id_type,
        "source_id_index": walked.id_index,
        "sampling_rate": walked.rate,
        "sample_pool": walked.pool,
        "drops": walked.drops,
        "input_format": np.zeros(count, dtype=np.int64),
        "output_format": np.zeros(count, dtype=np.int64),
        "input_ifindex": walked.input_ifindex,
        "output_ifindex": walked.output_ifindex,
        "header_protocol": np.full(count, HEADER_PROTOCOL_ETHERNET, dtype=np.int64),
        "frame_length": walked.frame_length,
        "stripped": walked.stripped,
        "header_length": length,
    }
    switch_columns = {
        "src_vlan": switch_values[:, 0],
        "src_priority": switch_values[:, 1],
        "dst_vlan": switch_values[:, 2],
        "dst_priority": switch_values[:, 3],
    }
    # A layout is which optional parts a row has: tag, IP version, transport kind, switch record,
    # the keys of its router and gateway records, a priority tag (no VLAN id). TCP and UDP rows
    # share one (UDP rows just lack the TCP flags): fewer, larger tables, since a table costs
    # about a millisecond whatever its rows.
    transport = parsed["_transport"]
    is_tcp = transport == TRANSPORT_TCP
    routing_layouts = np.array([0 if packed is None else packed[0] for packed in walked.routing.tolist()], np.int64)
    layout = (
        parsed["_tagged"].astype(np.int64)
        | (parsed["_six"].astype(np.int64) << 1)
        | (np.where(is_tcp, TRANSPORT_PORTS, transport) << 2)
        | (has_switch.astype(np.int64) << 5)
        | (routing_layouts << 6)
        | (parsed["_priority_tag"].astype(np.int64) << 9)
    )
    groups: list[SampleGroup] = []
    for code in np.unique(layout[taken]).tolist():
        rows = np.flatnonzero(taken & (layout == code))
        tagged, six, kind, switch = bool(code & 1), bool(code & 2), (code >> 2) & 7, bool(code & 32)
        routing = (code >> 6) & 7
        vlan = not code & 512
        absent: dict[str, Array] = {}
        if kind == TRANSPORT_PORTS:
            udp = ~is_tcp[rows]
            if not udp.all():
                kind = TRANSPORT_TCP
                if udp.any():
                    absent["tcp_flags"] = udp
        columns = {name: _take(values, rows) for name, values in common.items()}
        for name in _header_keys(tagged, six, kind, vlan):
            columns[name] = _take(parsed[name], rows)
        if switch:
            columns.update({name: values[rows] for name, values in switch_columns.items()})
        if routing:
            columns.update(_routing_columns(walked.routing[rows].tolist(), routing))
        groups.append(SampleGroup(rows, columns, absent))
    return groups, np.flatnonzero(~taken).tolist()


def _routing_columns(rows: list[tuple[Any, ...]], layout: int) -> dict[str, Any]:
    """Columns of packed routing values of one layout: integers as int64 arrays (32-bit on the
    wire), next hops and AS path and community lists as lists."""
    columns: dict[str, Any] = {}
    for key, values in zip(ROUTING_KEYS[layout], list(zip(*rows, strict=True))[1:], strict=True):
        columns[key] = np.array(values, dtype=np.int64) if type(values[0]) is int else list(values)
    return columns


def _take(values: Any, rows: Array) -> Any:
    if isinstance(values, (np.ndarray, PackedAddresses)):
        return values[rows]
    return [values[row] for row in rows.tolist()]


def _header_keys(tagged: bool, six: bool, transport: int, vlan: bool = True) -> list[str]:
    """The keys the header parser writes for a snapshot of this layout, in its order (a
    priority tag, VLAN id 0, has a priority and no `vlan`)."""
    keys = ["dst_mac", "src_mac"]
    if tagged:
        keys += ["vlan", "vlan_priority"] if vlan else ["vlan_priority"]
    keys.append("ether_type")
    if six:
        keys += ["ip_version", "src_ip", "dst_ip", "ip_tos", "ttl", "ip_length", "ipv6_flow_label", "protocol"]
    else:
        keys += ["ip_version", "src_ip", "dst_ip", "protocol", "ip_tos", "ttl", "ip_length"]
    if transport == TRANSPORT_TCP:
        keys += ["src_port", "dst_port", "tcp_flags"]
    elif transport == TRANSPORT_PORTS:
        keys += ["src_port", "dst_port"]
    elif transport == TRANSPORT_ICMP:
        keys += ["icmp_type", "icmp_code"]
    return keys


def _snapshots(batch: SampleBatch, numbers: npt.NDArray[np.intp], offsets: Array) -> npt.NDArray[np.uint8]:
    """The first SNAPSHOT_BYTES of every header, one row each (bytes past a header are never read)."""
    datagrams = [bytes(d[0]) for d in batch.datagrams]
    joined = np.frombuffer(b"".join(datagrams) + bytes(SNAPSHOT_BYTES), dtype=np.uint8)
    bases = np.cumsum([0] + [len(d) for d in datagrams[:-1]])
    starts = bases[numbers] + offsets
    rows: npt.NDArray[np.uint8] = sliding_window_view(joined, SNAPSHOT_BYTES)[starts]  # rows copied whole
    return rows


def _parse_snapshots(snap: npt.NDArray[np.uint8], length: Array) -> dict[str, Any]:
    """Every header field of every snapshot, and `_taken`: the rows parsed whole (the others go
    to the per-sample parser, so no row here needs to match it in a corner case)."""
    count = len(snap)
    rows = np.arange(count)

    def u8(offset: Array) -> Array:
        return snap[rows, np.minimum(offset, SNAPSHOT_BYTES - 1)].astype(np.int64)

    def u16(offset: Array) -> Array:
        return (u8(offset) << 8) | u8(offset + 1)

    def fixed16(offset: int) -> Array:
        return (snap[:, offset].astype(np.int64) << 8) | snap[:, offset + 1]

    ether = fixed16(12)
    tagged = np.isin(ether, _VLAN_TYPES)
    inner = fixed16(16)
    tci = fixed16(14)
    ether_type = np.where(tagged, inner, ether)
    taken = (length >= 14) & ~(tagged & ((length < 18) | np.isin(inner, _VLAN_TYPES)))
    l3 = np.where(tagged, 18, 14)
    four = ether_type == 0x0800
    six = ether_type == 0x86DD
    first = u8(l3)
    ihl = (first & 15) * 4
    total = u16(l3 + 2)
    fragment = u16(l3 + 6)
    payload = u16(l3 + 4)
    next_header = u8(l3 + 6)
    ok4 = four & (length >= l3 + 20) & (first >> 4 == 4) & (ihl >= 20) & ((fragment & 0x3FFF) == 0)
    ok6 = six & (length >= l3 + 40) & (first >> 4 == 6) & ~np.isin(next_header, _IPV6_CHAIN)
    taken &= np.where(four, ok4, ok6)
    # Ethernet pads short frames: an IP length shorter than the snapshot ends the packet.
    end = np.where(
        four,
        np.where((ihl <= total) & (total < length - l3), l3 + total, length),
        np.where((payload > 0) & (payload < length - l3 - 40), l3 + 40 + payload, length),
    )
    protocol = np.where(four, u8(l3 + 9), next_header)
    l4 = np.where(four, l3 + ihl, l3 + 40)
    tcp = protocol == 6
    ports = (protocol == 17) | (protocol == 132) | (protocol == 136)
    icmp = (protocol == 1) | (protocol == 58)
    transport = np.select([tcp, ports, icmp], [TRANSPORT_TCP, TRANSPORT_PORTS, TRANSPORT_ICMP], TRANSPORT_NONE)
    needed = np.select([tcp, ports, icmp], [14, 4, 2], 0)
    taken &= (l4 + needed <= end) & (l4 + needed <= SNAPSHOT_BYTES)
    source_port = u16(l4)
    destination_port = u16(l4 + 2)
    taken &= ~((protocol == 17) & (destination_port == _VXLAN_PORT))  # the inner frame is parsed per sample
    word = (u8(l3) << 24) | (u8(l3 + 1) << 16) | (u8(l3 + 2) << 8) | u8(l3 + 3)
    return {
        "_taken": taken,
        "_tagged": tagged,
        "_six": six,
        "_transport": transport,
        "_priority_tag": tagged & ((tci & 0x0FFF) == 0),
        "dst_mac": _macs(snap[:, 0:6]),
        "src_mac": _macs(snap[:, 6:12]),
        "vlan": tci & 0x0FFF,
        "vlan_priority": tci >> 13,
        "ether_type": ether_type,
        "ip_version": np.where(four, 4, 6),
        "src_ip": _addresses(snap, tagged, four),
        "dst_ip": _addresses(snap, tagged, four, destination=True),
        "protocol": protocol,
        "ip_tos": np.where(four, u8(l3 + 1), (word >> 20) & 0xFF),
        "ttl": np.where(four, u8(l3 + 8), u8(l3 + 7)),
        "ip_length": np.where(four, total, payload + 40),
        "ipv6_flow_label": word & 0xFFFFF,
        "src_port": source_port,
        "dst_port": destination_port,
        "tcp_flags": u16(l4 + 12) & 0x1FF,
        "icmp_type": u8(l4),
        "icmp_code": u8(l4 + 1),
    }


def _macs(octets: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """Each row's 6 octets as one number (the table renders them as ECS text in numpy)."""
    padded = np.zeros((len(octets), 8), dtype=np.uint8)
    padded[:, 2:] = octets
    return padded.view(">u8").reshape(-1).astype(np.uint64)


def _addresses(snap: npt.NDArray[np.uint8], tagged: Array, four: Array, *, destination: bool = False) -> Any:
    """IPv4 addresses as uint32 (`ipv4:` rows) and IPv6 ones as 16-byte rows, side by side:
    a tuple the table builder splits by layout. The IP header starts at byte 14, or 18 after a
    VLAN tag, so each reading is one of two column ranges."""

    def at(offset: int, width: int) -> npt.NDArray[np.uint8]:
        return np.where(
            tagged[:, None], snap[:, 18 + offset : 18 + offset + width], snap[:, 14 + offset : 14 + offset + width]
        )

    v4 = at(16 if destination else 12, 4)
    v6 = at(24 if destination else 8, 16)
    return PackedAddresses(v4.view(">u4").reshape(-1).astype(np.uint32), v6, four)


class PackedAddresses:
    """One address column of a batch: every row read both as IPv4 and as IPv6; `four` says which
    reading is the address. Indexing by rows keeps the three together."""

    __slots__ = ("four", "ipv4", "ipv6")

    def __init__(self, ipv4: Array, ipv6: npt.NDArray[np.uint8], four: Array) -> None:
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.four = four

    def __getitem__(self, rows: Array) -> PackedAddresses:
        return PackedAddresses(self.ipv4[rows], self.ipv6[rows], self.four[rows])
