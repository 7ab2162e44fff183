"""sFlow flow samples as `DocumentTable`s: the columnar twin of `sflow_documents.sflow_document`.

A flow sample's decoded fields are a dict whose keys depend only on which records and header
layers the sample had, and an agent sends the same kinds of samples over and over. Samples are
therefore grouped by their key layout; each group's dicts are transposed into columns in one C
call (`zip(*values)`), and every document field is derived per column instead of per sample.
The documents equal `sflow_document`'s (a test holds both to the same output), so the choice
between the two paths is only about speed: groups too small to pay numpy's per-column cost, and
the rare sample with a value a table cannot hold (an explicit null), keep the dict path.
"""

from __future__ import annotations

from collections.abc import Sequence
from socket import inet_aton
from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.model import KIND_SFLOW_FLOW, FlowRecord
from flowd.output import ecs
from flowd.output.batch_documents import (
    IANA_NUMBERS,
    TRANSPORT_NAMES,
    MixedFamiliesError,
    address_word_columns,
    byte_names,
    hex_strings,
    int_words,
    ipv4_column,
    mix_word_columns,
    python_list,
    related_ipv4,
)
from flowd.output.render import render_hex64, render_integers
from flowd.output.sflow_documents import VLAN_UNKNOWN
from flowd.output.table import Column, DocumentTable, LazyColumn, python_values
from flowd.output.timestamps import iso_from_seconds

MIN_TABLE_ROWS = 16
"""Smaller groups go the dict way: a table costs a few microseconds per column however few rows."""

Array = npt.NDArray[Any]
_U64 = np.uint64


class _Unsupported(Exception):
    """A group the table cannot express exactly; its samples take the dict path."""


def sflow_tables(records: Sequence[FlowRecord]) -> tuple[list[DocumentTable], list[FlowRecord]]:
    """Tables for the flow samples among `records`, one per key layout, and the records left
    for the dict path (counter samples, small groups, unsupported values), in their order."""
    groups: dict[tuple[str, ...], list[FlowRecord]] = {}
    rest: list[FlowRecord] = []
    for record in records:
        if record.kind == KIND_SFLOW_FLOW:
            groups.setdefault(tuple(record.fields), []).append(record)
        else:
            rest.append(record)
    tables: list[DocumentTable] = []
    for keys, group in groups.items():
        if len(group) >= MIN_TABLE_ROWS:
            try:
                tables.append(_table(keys, group))
                continue
            except _Unsupported:
                pass
        rest.extend(group)
    return tables, rest


def _table(keys: tuple[str, ...], group: list[FlowRecord]) -> DocumentTable:
    count = len(group)
    table = DocumentTable(count)
    # Every dict of the group has these keys in this order: their value views zip into columns
    # (half the cost of a tuple per sample).
    transposed = zip(*[record.fields.values() for record in group], strict=True)
    values: dict[str, list[Any]] = {}
    columns: dict[str, Column] = {}
    for name, row_values in zip(keys, transposed, strict=True):
        listed = list(row_values)
        if None in listed:  # the dict path writes an explicit null, which a table cannot
            raise _Unsupported(name)
        values[name] = listed
        columns[name] = _address_column(listed) if name in _ADDRESSES else _column(listed)

    received = [record.received_at for record in group]
    distinct_times = {t: iso_from_seconds(t) for t in set(received)}
    table.add("@timestamp", [distinct_times[t] for t in received])
    table.set_constant("event.kind", "event")
    table.set_constant("event.category", ["network"])
    table.set_constant("event.type", ["connection"])
    table.set_constant("event.action", KIND_SFLOW_FLOW)
    table.add("sflow.sub_agent_id", _column([record.domain_id for record in group]))
    table.add("sflow.datagram_sequence", _column([record.sequence for record in group]))
    if "agent_address" in columns:
        table.add("observer.ip", columns["agent_address"])
    uptimes = [record.uptime_ms for record in group]
    if any(u is not None for u in uptimes):
        table.add("sflow.uptime_ms", _column(uptimes) if None not in uptimes else uptimes)
    for name, column in columns.items():
        table.add("sflow." + name, column)
    _add_flow_fields(table, values, columns, group)
    return table


_ADDRESSES = frozenset(("src_ip", "dst_ip", "agent_address", "inner_src_ip", "inner_dst_ip"))


def _address_column(addresses: list[Any]) -> Column:
    """IPv4 addresses as a uint32 column (written from the array, looked up by integer in
    enrichment); a column with any other value stays a list of strings."""
    try:
        numbers = {a: int.from_bytes(inet_aton(a)) for a in set(addresses) if ":" not in a}
        return ipv4_column(np.array([numbers[a] for a in addresses], dtype=np.uint32))
    except (KeyError, OSError, TypeError):
        return addresses


def _column(values: list[Any]) -> Column:
    """Integers as an int64 array (rendered and compared in numpy); anything else as it is."""
    if set(map(type, values)) == {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            return values
    return values


def _integers(column: Column | None) -> Array:
    if not isinstance(column, np.ndarray):
        raise _Unsupported("a counter that is not an integer")
    return column


def _unless_zero(column: Column) -> Column:
    """`if value:` of the dict path: 0 (an unknown interface or AS) leaves the key out."""
    if isinstance(column, np.ndarray):
        return LazyColumn(column, render_integers, python_list, column == 0, elementwise=True)
    return [v if v else None for v in python_values(column)]


def _add_flow_fields(
    table: DocumentTable, values: dict[str, list[Any]], columns: dict[str, Column], group: list[FlowRecord]
) -> None:
    count = len(group)
    rates = np.array([record.sampling_rate for record in group], dtype=np.int64)
    if "frame_length" in columns:
        frame_length = _integers(columns["frame_length"])
    elif "ip_length" in columns:
        frame_length = _integers(columns["ip_length"])
    else:
        frame_length = np.zeros(count, dtype=np.int64)
    if int(frame_length.min()) < 0 or int(rates.min()) < 0:
        raise _Unsupported("negative length or rate")
    table.add("network.bytes", frame_length.astype(_U64) * rates.astype(_U64))  # both < 2**32
    table.add("network.packets", rates)
    table.add("flowd.raw_bytes", frame_length)
    table.set_constant("flowd.raw_packets", 1)
    table.add("flowd.sampling_rate", rates)

    for name, key in (
        ("input_ifindex", "observer.ingress.interface.id"),
        ("output_ifindex", "observer.egress.interface.id"),
    ):
        if name in columns:
            table.add(key, _unless_zero(columns[name]))

    source = values.get("src_ip")
    destination = values.get("dst_ip")
    for name, key in (("src_ip", "source.ip"), ("dst_ip", "destination.ip")):
        if name in columns:
            table.add(key, columns[name])
    source_column, destination_column = columns.get("src_ip"), columns.get("dst_ip")
    if isinstance(source_column, LazyColumn) and isinstance(destination_column, LazyColumn):
        table.add("related.ip", related_ipv4(source_column, destination_column))
    elif source is not None and destination is not None:
        table.add("related.ip", [[s] if d == s else [s, d] for s, d in zip(source, destination, strict=True)])
    elif source is not None or destination is not None:
        table.add("related.ip", [[address] for address in (source or destination or [])])
    if "ip_version" in values:
        table.add("network.type", ["ipv4" if v == 4 else "ipv6" for v in values["ip_version"]])
    for name, key in (("src_port", "source.port"), ("dst_port", "destination.port")):
        if name in columns:
            table.add(key, columns[name])
    protocol = columns.get("protocol")
    if isinstance(protocol, np.ndarray) and int(protocol.min()) >= 0 and int(protocol.max()) < 256:
        table.add("network.iana_number", byte_names(protocol, IANA_NUMBERS))
        table.add("network.transport", byte_names(protocol, TRANSPORT_NAMES))
    elif "protocol" in values:
        table.add("network.iana_number", [str(p) for p in values["protocol"]])
        table.add("network.transport", [ecs.TRANSPORTS.get(p, str(p)) for p in values["protocol"]])

    for name, key in (("src_mac", "source.mac"), ("dst_mac", "destination.mac")):
        macs = values.get(name)
        if macs is not None:
            names = {mac: ecs.ecs_mac(mac) for mac in set(macs)}
            table.add(key, [names[mac] for mac in macs])
    if "vlan" in values:
        table.add("network.vlan.id", [str(v) for v in values["vlan"]])
    elif "src_vlan" in values:
        table.add("network.vlan.id", [None if v in (VLAN_UNKNOWN, 0) else str(v) for v in values["src_vlan"]])
    if "customer_vlan" in values:
        table.add("network.inner.vlan.id", [str(v) for v in values["customer_vlan"]])
    for name, key in (("src_as", "source.as.number"), ("dst_as", "destination.as.number")):
        if name in columns:
            table.add(key, _unless_zero(columns[name]))

    if source is not None or destination is not None:
        agents = values.get("agent_address") or [record.exporter[0] for record in group]
        table.add("flow.id", _flow_ids(agents, values, columns, count))


def _flow_ids(agents: list[Any], values: dict[str, list[Any]], columns: dict[str, Column], count: int) -> LazyColumn:
    """`ecs.flow_id` of every sample, in numpy; per sample when a column mixes address families."""
    words = {agent: ecs.exporter_word(agent) for agent in set(agents)}
    try:
        ids = mix_word_columns(
            [
                np.array([words[agent] for agent in agents], dtype=_U64),
                *_address_words(columns, values, "src_ip", count),
                _words(columns, values, "src_port", count),
                *_address_words(columns, values, "dst_ip", count),
                _words(columns, values, "dst_port", count),
                _words(columns, values, "protocol", count),
            ],
            count,
        )
    except MixedFamiliesError:
        nothing: list[Any] = [None] * count
        ids = np.array(
            [
                int(ecs.flow_id(*six), 16)
                for six in zip(
                    agents,
                    values.get("src_ip", nothing),
                    values.get("src_port", nothing),
                    values.get("dst_ip", nothing),
                    values.get("dst_port", nothing),
                    values.get("protocol", nothing),
                    strict=True,
                )
            ],
            dtype=_U64,
        )
    return LazyColumn(ids, render_hex64, hex_strings)


def _words(columns: dict[str, Column], values: dict[str, list[Any]], name: str, count: int) -> Array:
    column = columns.get(name)
    if isinstance(column, np.ndarray) and (not len(column) or int(column.min()) >= 0):
        return column.astype(_U64)
    return int_words(values.get(name), count)


def _address_words(columns: dict[str, Column], values: dict[str, list[Any]], name: str, count: int) -> list[Array]:
    column = columns.get(name)
    if isinstance(column, LazyColumn):
        return [column.array.astype(_U64)]
    return address_word_columns(values.get(name), count)
