"""Documents for a whole decoded data set at once, column by column.

`netflow_document` builds one document from one record's dict; this module builds the same
documents for a `RecordBatch` from its columns: the derived ECS fields are computed once per
column (address strings once per distinct value, flow ids in numpy) and each document is one
`dict(zip(...))`. A test holds both paths to identical output.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from flowd.decode.batch import RecordBatch
from flowd.model import KIND_NETFLOW_FLOW, FlowRecord
from flowd.output import documents as single
from flowd.output import ecs
from flowd.output.timestamps import iso_from_ms

_U64 = np.uint64


def documents_for(records: Iterable[FlowRecord]) -> list[dict[str, Any]]:
    """Documents for every record; whole sets go through the columnar path."""
    parts: Iterable[Sequence[FlowRecord]]
    parts = records.parts if hasattr(records, "parts") else [list(records)]
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, RecordBatch) and part.kind == KIND_NETFLOW_FLOW:
            out.extend(batch_documents(part))
        else:
            out.extend(single.flow_document(record) for record in part)
    return out


def _first_column(columns: dict[str, list[Any]], names: tuple[str, ...], ints_only: bool = False) -> list[Any] | None:
    for name in names:
        column = columns.get(name)
        if column is not None and (not ints_only or (column and isinstance(column[0], int))):
            return column
    return None


def _pick_addresses(ipv4: list[Any] | None, ipv6: list[Any] | None) -> list[Any] | None:
    if ipv6 is None:
        return ipv4
    if ipv4 is None:
        return ipv6
    return [single.pick_address(four, six) for four, six in zip(ipv4, ipv6, strict=True)]


def batch_documents(batch: RecordBatch) -> list[dict[str, Any]]:
    count = len(batch)
    if not count:
        return []
    columns = batch.columns()
    exporter_address, exporter_port = batch.exporter
    keys: list[str] = ["netflow." + name for name in columns]
    values: list[list[Any]] = list(columns.values())

    sparse: list[int] = []

    def add(key: str, column: list[Any], *, may_be_none: bool = False) -> None:
        if may_be_none and None in column:
            sparse.append(len(keys))
        keys.append(key)
        values.append(column)

    start, end = _times(batch, columns, count)
    timestamps = _timestamps(batch, columns, end, count)
    timestamp_strings = _iso_column(timestamps)
    add("@timestamp", timestamp_strings)
    if start is not None:
        add("event.start", _iso_column(start), may_be_none=True)
    if end is not None:
        add("event.end", timestamp_strings, may_be_none=True)
        if start is not None:
            add(
                "event.duration",
                [
                    (e - s) * 1_000_000
                    if s is not None and e is not None and 0 <= e - s <= single.MAX_DURATION_MS
                    else None
                    for s, e in zip(start, end, strict=True)
                ],
                may_be_none=True,
            )

    source = _pick_addresses(columns.get("source_ipv4_address"), columns.get("source_ipv6_address"))
    destination = _pick_addresses(columns.get("destination_ipv4_address"), columns.get("destination_ipv6_address"))
    if source is not None:
        add("source.ip", source)
    if destination is not None:
        add("destination.ip", destination)
    if source is not None or destination is not None:
        pairs = zip(source or [None] * count, destination or [None] * count, strict=True)
        related = [[s] if d is None or d == s else ([d] if s is None else [s, d]) for s, d in pairs]
        add("related.ip", related)
        add("network.type", ["ipv6" if ":" in r[0] else "ipv4" for r in related])
    source_port = columns.get("source_transport_port")
    destination_port = columns.get("destination_transport_port")
    if source_port is not None:
        add("source.port", source_port)
    if destination_port is not None:
        add("destination.port", destination_port)
    protocol = columns.get("protocol_identifier")
    if protocol is not None:
        add("network.iana_number", [str(p) for p in protocol])
        add("network.transport", [ecs.TRANSPORTS.get(p, str(p)) if isinstance(p, int) else str(p) for p in protocol])
    _add_counters(batch, columns, count, add)

    mac = columns.get("source_mac_address")
    if mac is not None:
        add("source.mac", [ecs.ecs_mac(m) for m in mac])
    mac = _first_column(columns, ("destination_mac_address", "post_destination_mac_address"))
    if mac is not None:
        add("destination.mac", [ecs.ecs_mac(m) for m in mac])
    vlan = columns.get("vlan_id")
    if vlan is not None:
        add("network.vlan.id", [str(v) for v in vlan])
    for name, key in single.COPIED:
        column = columns.get(name)
        if column is not None:
            add(key, column)
    for name, key in single.COPIED_UNLESS_ZERO:
        column = columns.get(name)
        if column is not None:
            add(key, [v if v else None for v in column], may_be_none=True)
    add("flow.id", _flow_ids(batch, source, source_port, destination, destination_port, protocol, count))

    common: dict[str, Any] = {
        "event.kind": "event",
        "event.category": ["network"],
        "event.type": ["connection"],
        "event.action": batch.kind,
        "observer.ip": exporter_address,
        "netflow.type": batch.kind,
        "netflow.exporter.address": f"{exporter_address}:{exporter_port}",
        "netflow.exporter.version": batch.version,
        "netflow.exporter.source_id": batch.domain_id,
    }
    headers = batch.row_headers
    if headers is None:
        common["netflow.exporter.timestamp"] = iso_from_ms(batch.export_time * 1000)
        if batch.uptime_ms is not None:
            common["netflow.exporter.uptime_millis"] = batch.uptime_ms
    else:
        add("netflow.exporter.timestamp", _iso_column([t * 1000 for t in headers.export_time]))
        add("netflow.exporter.uptime_millis", headers.uptime_ms, may_be_none=True)
    if not isinstance(batch.rates, list):
        common["flowd.sampling_rate"] = batch.rates
    documents = []
    for row in zip(*values, strict=True):
        document = dict(zip(keys, row, strict=True))
        for index in sparse:
            if row[index] is None:
                del document[keys[index]]
        document.update(common)
        documents.append(document)
    return documents


def _iso_column(epoch_ms: list[Any]) -> list[Any]:
    """ISO strings for a column of epoch ms (None stays None), each distinct value formatted once."""
    distinct = {ms: None if ms is None else iso_from_ms(ms) for ms in set(epoch_ms)}
    return [distinct[ms] for ms in epoch_ms]


def _scaled(column: list[int], rates: int | list[int]) -> list[int]:
    """Counter × rate, saturated at the largest `long`; the common cases without a per-value min."""
    limit = single.MAX_LONG
    if isinstance(rates, list):
        return [min(v * r, limit) for v, r in zip(column, rates, strict=True)]
    if not column or max(column) * rates <= limit:
        return column if rates == 1 else [v * rates for v in column]
    return [min(v * rates, limit) for v in column]


def _add_counters(batch: RecordBatch, columns: dict[str, list[Any]], count: int, add: Any) -> None:
    rates = batch.rates
    if isinstance(rates, list):
        add("flowd.sampling_rate", rates)
    found = [
        _first_column(columns, names, ints_only=True)
        for names in (single.FORWARD_BYTES, single.FORWARD_PACKETS, single.REVERSE_BYTES, single.REVERSE_PACKETS)
    ]
    for column, key in zip(
        found, ("source.bytes", "source.packets", "destination.bytes", "destination.packets"), strict=True
    ):
        if column is not None:
            add(key, _scaled(column, rates))
    totals = []
    for forward, reverse in ((found[0], found[2]), (found[1], found[3])):
        if forward is not None and reverse is not None:
            totals.append([f + r for f, r in zip(forward, reverse, strict=True)])
        else:
            totals.append(forward or reverse or [0] * count)
    add("network.bytes", _scaled(totals[0], rates))
    add("network.packets", _scaled(totals[1], rates))
    add("flowd.raw_bytes", _scaled(totals[0], 1))
    add("flowd.raw_packets", _scaled(totals[1], 1))


def _times(batch: RecordBatch, columns: dict[str, list[Any]], count: int) -> tuple[list[Any] | None, list[Any] | None]:
    """Per-record start and end in epoch ms, as `documents._flow_times` computes them."""
    headers = batch.row_headers
    if headers is None:
        export_ms: list[int] = [batch.export_time * 1000] * count
        boot_ms: list[int | None] = [
            None if batch.uptime_ms is None else batch.export_time * 1000 - batch.uptime_ms
        ] * count
    else:
        export_ms = [t * 1000 for t in headers.export_time]
        boot_ms = [None if u is None else e - u for e, u in zip(export_ms, headers.uptime_ms, strict=True)]

    def resolve(absolute: tuple[str, ...], relative: str, delta: str) -> list[Any] | None:
        column = _first_column(columns, absolute)
        if column is not None:
            return column
        values: list[Any] = [None] * count
        if relative in columns:
            values = [None if b is None else b + v for b, v in zip(boot_ms, columns[relative], strict=True)]
        if delta in columns and None in values:
            values = [
                e - d // 1000 if v is None else v for v, e, d in zip(values, export_ms, columns[delta], strict=True)
            ]
        return None if all(v is None for v in values) else values

    start = resolve(single.START_ABSOLUTE, "flow_start_sys_up_time", "flow_start_delta_microseconds")
    end = resolve(single.END_ABSOLUTE, "flow_end_sys_up_time", "flow_end_delta_microseconds")
    return start, end


def _timestamps(batch: RecordBatch, columns: dict[str, list[Any]], end: list[Any] | None, count: int) -> list[int]:
    """`documents._timestamp_ms` per record: the end, else the event time, export time, receive time."""
    headers = batch.row_headers
    if headers is None:
        fallback = [batch.export_time * 1000 if batch.export_time else int(batch.received_at * 1000)] * count
    else:
        fallback = [
            e * 1000 if e else int(r * 1000) for e, r in zip(headers.export_time, headers.received_at, strict=True)
        ]
    event = _first_column(columns, single.EVENT_TIME, ints_only=True)
    if event is not None:
        fallback = event
    if end is None:
        return fallback
    return [f if e is None else e for e, f in zip(end, fallback, strict=True)]


def _flow_ids(
    batch: RecordBatch,
    source: list[Any] | None,
    source_port: list[Any] | None,
    destination: list[Any] | None,
    destination_port: list[Any] | None,
    protocol: list[Any] | None,
    count: int,
) -> list[str]:
    """`ecs.flow_id` for every record, computed over numpy columns."""
    words = _raw_words(batch)
    if words is not None:
        return _mix_columns(batch, words, count)
    try:
        source_words = _address_words(source, count)
        destination_words = _address_words(destination, count)
    except _MixedFamiliesError:  # one set mixing IPv4 and IPv6 flows: hash record by record
        nothing = [None] * count
        return [
            ecs.flow_id(batch.exporter[0], *five)
            for five in zip(
                source or nothing,
                source_port or nothing,
                destination or nothing,
                destination_port or nothing,
                protocol or nothing,
                strict=True,
            )
        ]
    words = [
        *source_words,
        _int_words(source_port, count),
        *destination_words,
        _int_words(destination_port, count),
        _int_words(protocol, count),
    ]
    return _mix_columns(batch, words, count)


def _mix_columns(batch: RecordBatch, words: list[np.ndarray[Any, Any]], count: int) -> list[str]:
    value = np.full(count, ecs.FNV_OFFSET, dtype=_U64)
    prime = _U64(ecs.FNV_PRIME)
    for word in [np.full(count, ecs.exporter_word(batch.exporter[0]), dtype=_U64), *words]:
        value = (value ^ word) * prime
    value ^= value >> _U64(29)
    value = value * prime
    value ^= value >> _U64(32)
    text = value.astype(">u8").tobytes().hex()
    return [text[i : i + 16] for i in range(0, len(text), 16)]


def _raw_words(batch: RecordBatch) -> list[np.ndarray[Any, Any]] | None:
    """The flow-id words straight from the decoded array, when each end has one address family."""
    array = batch.array
    names = set(batch.template.names)
    words: list[np.ndarray[Any, Any]] = []
    for end in ("source", "destination"):
        four, six = f"{end}_ipv4_address", f"{end}_ipv6_address"
        if four in names and six in names:
            return None
        if four in names:
            column = array[four]
            if column.dtype.kind != "u":
                return None
            words.append(column.astype(_U64))
        elif six in names:
            column = array[six]
            if column.dtype.itemsize != 16:
                return None
            pairs = np.frombuffer(column.tobytes(), dtype=">u8").reshape(-1, 2)
            words += [pairs[:, 0].astype(_U64), pairs[:, 1].astype(_U64)]
        else:
            words.append(np.zeros(len(array), dtype=_U64))
        words.append(_array_word(array, names, f"{end}_transport_port"))
    words.append(_array_word(array, names, "protocol_identifier"))
    return words


def _array_word(array: np.ndarray[Any, Any], names: set[str], name: str) -> np.ndarray[Any, Any]:
    if name in names and array[name].dtype.kind == "u":
        return array[name].astype(_U64)
    return np.zeros(len(array), dtype=_U64)


def _int_words(column: list[Any] | None, count: int) -> np.ndarray[Any, Any]:
    if column is None:
        return np.zeros(count, dtype=_U64)
    return np.array([v & ecs.MASK64 if isinstance(v, int) else 0 for v in column], dtype=_U64)


def _address_words(addresses: list[Any] | None, count: int) -> list[np.ndarray[Any, Any]]:
    if addresses is None:
        return [np.zeros(count, dtype=_U64)]
    distinct = {address: ecs.address_words(address) for address in set(addresses)}
    words = [distinct[address] for address in addresses]
    if all(len(w) == 1 for w in words):
        return [np.array([w[0] for w in words], dtype=_U64)]
    if all(len(w) == 2 for w in words):
        return [np.array([w[0] for w in words], dtype=_U64), np.array([w[1] for w in words], dtype=_U64)]
    raise _MixedFamiliesError


class _MixedFamiliesError(Exception):
    """A set mixing IPv4 and IPv6 addresses in one column pair; handled by the per-record path."""
