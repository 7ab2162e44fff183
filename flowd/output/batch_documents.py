"""Documents for a whole decoded data set at once, column by column: `batch_table` assembles them.

`netflow_document` builds one document from one record's dict; this module builds the same
documents for a `RecordBatch` as a `DocumentTable` (table.py): plain integer fields stay numpy
arrays, addresses stay arrays (IPv4 as uint32, IPv6 as 16-byte values) rendered as text only
when written, the derived ECS fields are computed once per column (flow ids, scaled counters
and ISO times in numpy), and what is the same for every record is a constant. A test holds
both paths to identical output. The columns are built by their own modules (`batch_fields`,
`address_columns`, `time_columns`, `counter_columns`, `name_columns`, `flow_ids`); this one
chooses which fields feed which ECS keys, the event type, and the per-export header fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from flowd.decode.batch import RecordBatch, RowHeaders
from flowd.model import KIND_NETFLOW_FLOW, FlowRecord
from flowd.output import documents as single
from flowd.output import ecs
from flowd.output.address_columns import address_family, related_addresses, related_lists
from flowd.output.batch_fields import BatchFields
from flowd.output.counter_columns import add_counter_columns
from flowd.output.flow_ids import batch_flow_ids, hex_strings
from flowd.output.name_columns import IANA_NUMBERS, TRANSPORT_NAMES, byte_names, vlan_id_column
from flowd.output.render import render_hex64, render_integers, render_values
from flowd.output.table import Column, DocumentTable, LazyColumn, python_list
from flowd.output.time_columns import add_time_columns
from flowd.output.timestamps import iso_from_ms


def documents_for(records: Iterable[FlowRecord]) -> list[dict[str, Any]]:
    """Documents for every record; whole sets go through the columnar path."""
    out: list[dict[str, Any]] = []
    for part in parts_of(records):
        if isinstance(part, RecordBatch) and part.kind == KIND_NETFLOW_FLOW:
            out.extend(batch_table(part).to_dicts())
        else:
            out.extend(single.flow_document(record) for record in part)
    return out


def parts_of(records: Iterable[FlowRecord]) -> Iterable[Sequence[FlowRecord]]:
    return records.parts if hasattr(records, "parts") else [list(records)]


def batch_table(batch: RecordBatch) -> DocumentTable:
    count = len(batch)
    table = DocumentTable(count)
    if not count:
        return table
    fields = BatchFields(batch)
    exporter_address, exporter_port = batch.exporter
    for name in fields.names:
        table.add("netflow." + name, fields.column(name))

    add_time_columns(batch, fields, count, table)

    _add_addresses(table, fields, count)
    source_port = fields.arrays.get("source_transport_port")
    destination_port = fields.arrays.get("destination_transport_port")
    for name, key in (("source_transport_port", "source.port"), ("destination_transport_port", "destination.port")):
        if name in fields:
            table.add(key, fields.column(name))
    protocol = fields.arrays.get("protocol_identifier")
    if protocol is not None and protocol.dtype.itemsize == 1:
        table.add("network.iana_number", byte_names(protocol, IANA_NUMBERS))
        table.add("network.transport", byte_names(protocol, TRANSPORT_NAMES))
    elif "protocol_identifier" in fields:
        values = fields.values("protocol_identifier") or []
        table.add("network.iana_number", [str(p) for p in values])
        table.add(
            "network.transport", [ecs.TRANSPORTS.get(p, str(p)) if isinstance(p, int) else str(p) for p in values]
        )
    add_counter_columns(batch, fields, count, table)

    mac = fields.values("source_mac_address")
    if mac is not None:
        table.add("source.mac", [ecs.ecs_mac(m) for m in mac])
    for name in ("destination_mac_address", "post_destination_mac_address"):
        mac = fields.values(name)
        if mac is not None:
            table.add("destination.mac", [ecs.ecs_mac(m) for m in mac])
            break
    vlan = fields.arrays.get("vlan_id")
    vlan_ids = vlan_id_column(vlan) if vlan is not None else None
    if vlan_ids is not None:
        table.add("network.vlan.id", vlan_ids)
    elif (vlan_values := fields.values("vlan_id")) is not None:
        table.add("network.vlan.id", [str(v) for v in vlan_values])
    for name, key in single.COPIED:
        if name in fields:
            table.add(key, fields.column(name))
    for name, key in single.COPIED_UNLESS_ZERO:  # AS 0 means "not known"
        array = fields.arrays.get(name)
        if array is not None:
            table.add(key, LazyColumn(array, render_integers, python_list, array == 0, elementwise=True))
            continue
        listed = fields.values(name)
        if listed is not None:
            table.add(key, [v if v else None for v in listed])
    ids = batch_flow_ids(batch, fields, table, source_port, destination_port, protocol, count)
    table.add("flow.id", LazyColumn(ids, render_hex64, hex_strings))

    _add_event_type(fields, count, table)
    for key, value in (
        ("event.kind", "event"),
        ("event.category", ["network"]),
        ("event.action", batch.kind),
        ("netflow.type", batch.kind),
        ("netflow.exporter.version", batch.version),
    ):
        table.set_constant(key, value)
    headers = batch.row_headers
    if headers is None:
        table.set_constant("observer.ip", exporter_address)
        table.set_constant("netflow.exporter.address", f"{exporter_address}:{exporter_port}")
        table.set_constant("netflow.exporter.source_id", batch.domain_id)
        table.set_constant("netflow.exporter.timestamp", iso_from_ms(batch.export_time * 1000))
        if batch.uptime_ms is not None:
            table.set_constant("netflow.exporter.uptime_millis", batch.uptime_ms)
    else:
        runs = _Runs(table, headers)
        runs.add("observer.ip", [address for address, _ in headers.exporter])
        runs.add("netflow.exporter.address", [f"{address}:{port}" for address, port in headers.exporter])
        runs.add("netflow.exporter.source_id", headers.domain_id)
        runs.add("netflow.exporter.timestamp", [iso_from_ms(t * 1000) for t in headers.export_time])
        runs.add("netflow.exporter.uptime_millis", headers.uptime_ms)
    if not isinstance(batch.rates, list):
        table.set_constant("flowd.sampling_rate", batch.rates)
    return table


_EVENT_ORDER = (single.CONNECTION, single.STARTED, single.ENDED, single.DENIED)
_EVENT_TYPES = [list(types) for types in _EVENT_ORDER]
"""The column's values, shared by its rows as a constant is."""
_EVENT_CODES = {types: code for code, types in enumerate(_EVENT_ORDER)}


def _add_event_type(fields: BatchFields, count: int, table: DocumentTable) -> None:
    """`event.type` as `documents.event_type` gives it: a constant unless the records carry a
    firewall or NAT event or a forwarding status that says otherwise."""
    sources = [(fields.integers(names), types) for names, types in single.EVENT_SOURCES]
    status = fields.integers((single.FORWARDING_STATUS,))
    if status is None and all(column is None for column, _ in sources):  # most tables: a constant
        table.set_constant("event.type", _EVENT_TYPES[0])
        return
    codes = np.zeros(count, dtype=np.int64)
    for column, types in sources:
        if column is not None:
            values = column if isinstance(column, np.ndarray) else np.array([_small(v) for v in column], np.int64)
            for value, event in types.items():
                codes[(codes == 0) & (values == value)] = _EVENT_CODES[event]
    if status is not None:
        if isinstance(status, np.ndarray):
            dropped = (status >> 6) & 3 == single.FORWARDING_DROPPED
        else:
            dropped = np.array([single.forwarding_dropped(v) for v in status], np.bool_)
        codes[(codes == 0) & dropped] = _EVENT_CODES[single.DENIED]
    if not codes.any():
        table.set_constant("event.type", _EVENT_TYPES[0])
        return
    table.add("event.type", [_EVENT_TYPES[code] for code in codes.tolist()])


def _small(value: Any) -> int:
    """An event field's value for the code comparison, -1 for what no code is."""
    return value if isinstance(value, int) and 0 <= value < 256 else -1


class _Runs:
    """Header fields of a joined batch: a constant when every run agrees, else repeated per run."""

    def __init__(self, table: DocumentTable, headers: RowHeaders) -> None:
        self.table = table
        self.headers = headers
        self.lengths = np.array(headers.lengths, dtype=np.intp)

    def add(self, key: str, values: list[Any]) -> None:
        first = values[0]
        if all(v == first for v in values):
            if first is not None:
                self.table.set_constant(key, first)
            return
        if None in values:
            self.table.add(key, self.headers.per_row(values))
            return
        lengths, headers = self.lengths, self.headers  # not `self`: the table holds these lambdas
        self.table.add(
            key,
            LazyColumn(
                lengths,
                lambda _: np.repeat(render_values(values)[0], lengths, axis=0),
                lambda _: headers.per_row(values),
            ),
        )


def _add_addresses(table: DocumentTable, fields: BatchFields, count: int) -> None:
    ends: list[Column | None] = []
    for end in ("source", "destination"):
        four, six = f"{end}_ipv4_address", f"{end}_ipv6_address"
        if four in fields.ipv4 and six not in fields:
            ends.append(fields.address_column(four))
        elif six in fields.ipv6 and four not in fields:
            ends.append(fields.address_column(six))
        else:
            ends.append(_pick_addresses(fields.values(four), fields.values(six)))
    source, destination = ends
    if source is not None:
        table.add("source.ip", source)
    if destination is not None:
        table.add("destination.ip", destination)
    family = address_family(source, destination)
    if family is not None:
        assert isinstance(source, LazyColumn) and isinstance(destination, LazyColumn)
        table.add("related.ip", related_addresses(source, destination))
        table.set_constant("network.type", family)
    elif source is not None or destination is not None:
        related = related_lists(source, destination, count)
        table.add("related.ip", related)
        table.add("network.type", ["ipv6" if ":" in r[0] else "ipv4" for r in related])


def _pick_addresses(ipv4: list[Any] | None, ipv6: list[Any] | None) -> list[Any] | None:
    if ipv6 is None:
        return ipv4
    if ipv4 is None:
        return ipv6
    return [single.pick_address(four, six) for four, six in zip(ipv4, ipv6, strict=True)]
