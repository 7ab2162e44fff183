"""sFlow flow samples as `DocumentTable`s: the columnar twin of `sflow_documents.sflow_document`.

Two sources of columns share one builder (`_build`):
- `sample_batch_tables`: samples of the common shape, whose header snapshots
  `flowd.decode.sflow_batch` reads a receive batch at a time in numpy, one group per layout;
- `sflow_tables`: decoded samples (dicts). A sample's keys depend only on which records and header
  layers it had, and an agent sends the same kinds over and over, so samples are grouped by key
  layout and each group's dicts are zipped into columns in one C call.
Every document field is then derived per column instead of per sample. The documents equal
`sflow_document`'s (tests hold both builders to it), so the choice of path is only about speed:
groups too small to pay numpy's per-column cost, and the rare sample with a value a table cannot
hold (an explicit null), keep the dict path.
"""

from __future__ import annotations

from collections.abc import Sequence
from socket import inet_aton
from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.decode import fields as ie
from flowd.decode.records import column_values
from flowd.decode.sflow_batch import PackedAddresses, SampleBatch, SampleGroup, simple_sample_columns
from flowd.model import KIND_SFLOW_FLOW, FlowRecord
from flowd.output import ecs
from flowd.output.address_columns import address_family, ipv4_column, ipv6_column, related_addresses
from flowd.output.distinct import unique_inverse
from flowd.output.flow_ids import (
    MixedFamiliesError,
    address_word_columns,
    hex_strings,
    int_words,
    ipv6_words,
    mix_word_columns,
)
from flowd.output.name_columns import IANA_NUMBERS, TRANSPORT_NAMES, byte_names, vlan_id_column
from flowd.output.render import IPV6_DTYPE, mac_texts, render_hex64, render_integers, render_mac
from flowd.output.sflow_documents import VLAN_UNKNOWN
from flowd.output.table import Column, DocumentTable, LazyColumn, Matrix, python_list, python_values
from flowd.output.time_columns import iso_column
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


class _Rows:
    """Per-sample values from the datagram headers (lists, or for the vectorised reader's rows
    numpy arrays), and the rate documents scale by."""

    __slots__ = ("exporters", "rates", "received", "sequence", "sub_agent", "uptime")

    def __init__(
        self,
        received: list[float] | Array,
        sub_agent: list[int] | Array,
        sequence: list[int] | Array,
        uptime: list[int | None] | Array,
        rates: Array,
        exporters: list[str],
    ) -> None:
        self.received = received
        self.sub_agent = sub_agent
        self.sequence = sequence
        self.uptime = uptime
        self.rates = rates
        self.exporters = exporters


def _table(keys: tuple[str, ...], group: list[FlowRecord]) -> DocumentTable:
    # Every dict of the group has these keys in this order: their value views zip into columns
    # (half the cost of a tuple per sample).
    transposed = zip(*[record.fields.values() for record in group], strict=True)
    columns: dict[str, Column] = {}
    for name, row_values in zip(keys, transposed, strict=True):
        listed = list(row_values)
        if None in listed:  # the dict path writes an explicit null, which a table cannot
            raise _Unsupported(name)
        columns[name] = _address_column(listed) if name in _ADDRESSES else _column(listed)
    rows = _Rows(
        [record.received_at for record in group],
        [record.domain_id for record in group],
        [record.sequence for record in group],
        [record.uptime_ms for record in group],
        np.array([record.sampling_rate for record in group], dtype=np.int64),
        [record.exporter[0] for record in group],
    )
    return _build(columns, rows)


def sample_batch_tables(batch: SampleBatch) -> tuple[list[DocumentTable], list[int]]:
    """Tables of a `SampleBatch` read in numpy, one per layout, and the row numbers left for
    the per-sample decoder (snapshots the vectorised reader does not take, small layouts)."""
    groups, left = simple_sample_columns(batch)
    if not groups:
        return [], sorted(left)
    numbers = batch.numbers()
    headers = _DatagramHeaders(batch)
    tables = []
    for group in groups:
        if len(group.rows) >= MIN_TABLE_ROWS:
            tables.append(_sample_group_table(group, headers, numbers[group.rows]))
        else:
            left += group.rows.tolist()
    return tables, sorted(left)


class _DatagramHeaders:
    """The header values of a `SampleBatch`'s datagrams as arrays, one entry per datagram."""

    __slots__ = ("exporters", "received", "sequence", "sub_agent", "uptime")

    def __init__(self, batch: SampleBatch) -> None:
        datagrams = batch.datagrams
        self.received = np.array([d[2] for d in datagrams], dtype=np.float64)
        self.sub_agent = np.array([d[4] for d in datagrams], dtype=np.int64)
        self.sequence = np.array([d[5] for d in datagrams], dtype=np.int64)
        uptimes: list[int | None] = [d[6] for d in datagrams]
        self.uptime: list[int | None] | Array = uptimes if None in uptimes else np.array(uptimes, dtype=np.int64)
        self.exporters = [d[1][0] for d in datagrams]

    def rows(self, numbers: Array, rates: Array) -> _Rows:
        """Each row's values, `numbers` being the row's datagram."""
        uptime = self.uptime
        exporters = self.exporters
        return _Rows(
            self.received[numbers],
            self.sub_agent[numbers],
            self.sequence[numbers],
            uptime[numbers] if isinstance(uptime, np.ndarray) else [uptime[n] for n in numbers.tolist()],
            rates,
            [exporters[n] for n in numbers.tolist()],
        )


def _sample_group_table(group: SampleGroup, headers: _DatagramHeaders, numbers: Array) -> DocumentTable:
    """The documents of one layout of a `SampleBatch`'s vectorised columns; `numbers` are the
    datagrams of its rows."""
    columns: dict[str, Column] = {}
    for name, values in group.columns.items():
        if isinstance(values, PackedAddresses):
            columns[name] = _packed_column(values)
        elif name in _ADDRESSES:
            columns[name] = _address_column(values)
        elif name in _MACS:  # 48-bit numbers, rendered as text in numpy
            columns[name] = LazyColumn(values, render_mac, mac_texts, elementwise=True)
        elif name in group.absent:
            columns[name] = LazyColumn(values, render_integers, python_list, group.absent[name], elementwise=True)
        else:
            columns[name] = values
    rates = group.columns["sampling_rate"]
    return _build(columns, headers.rows(numbers, np.where(rates > 0, rates, 1)))


def _packed_column(addresses: PackedAddresses) -> Column:
    if bool(addresses.four.all()):
        return ipv4_column(addresses.ipv4)
    packed = np.ascontiguousarray(addresses.ipv6).view(IPV6_DTYPE).reshape(-1)
    if not addresses.four.any():
        return ipv6_column(packed)
    return column_values(ie.IPV6, 16, packed)


def _build(columns: dict[str, Column], rows: _Rows) -> DocumentTable:
    received = rows.received
    table = DocumentTable(len(received))
    if isinstance(received, np.ndarray):  # as `iso_from_seconds`: int(seconds * 1000)
        table.add("@timestamp", iso_column((received * 1000).astype(np.int64)))
    else:
        distinct_times = {t: iso_from_seconds(t) for t in set(received)}
        table.add("@timestamp", [distinct_times[t] for t in received])
    table.set_constant("event.kind", "event")
    table.set_constant("event.category", ["network"])
    table.set_constant("event.type", ["connection"])
    table.set_constant("event.action", KIND_SFLOW_FLOW)
    table.add("sflow.sub_agent_id", _column(rows.sub_agent))
    table.add("sflow.datagram_sequence", _column(rows.sequence))
    if "agent_address" in columns:
        table.add("observer.ip", columns["agent_address"])
    else:  # an agent of unknown address (type 0): `sflow_document` names the datagram's sender
        table.add("observer.ip", _address_column(rows.exporters))
    uptimes = rows.uptime
    if isinstance(uptimes, np.ndarray):
        table.add("sflow.uptime_ms", uptimes)
    elif any(u is not None for u in uptimes):
        table.add("sflow.uptime_ms", _column(uptimes) if None not in uptimes else uptimes)
    for name, column in columns.items():
        table.add("sflow." + name, column)
    _add_flow_fields(table, columns, rows)
    return table


_ADDRESSES = frozenset(("src_ip", "dst_ip", "agent_address", "inner_src_ip", "inner_dst_ip"))
_MACS = frozenset(("src_mac", "dst_mac"))


def _ecs_macs(values: Array) -> Matrix:
    return render_mac(values, ecs=True)


def _ecs_mac_texts(values: Array) -> list[str]:
    return mac_texts(values, ecs=True)


def _address_column(addresses: list[Any]) -> Column:
    """IPv4 addresses as a uint32 column (written from the array, looked up by integer in
    enrichment); a column with any other value stays a list of strings."""
    try:
        numbers = {a: int.from_bytes(inet_aton(a)) for a in set(addresses) if ":" not in a}
        return ipv4_column(np.array([numbers[a] for a in addresses], dtype=np.uint32))
    except (KeyError, OSError, TypeError):
        return addresses


def _column(values: list[Any] | Array) -> Column:
    """Integers as an int64 array (rendered and compared in numpy); anything else as it is."""
    if isinstance(values, np.ndarray):
        return values
    if set(map(type, values)) == {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            return values
    return values


def _switch_vlan_ids(column: Column) -> Column:
    """An extended switch record's incoming VLAN as `network.vlan.id`, absent where the switch
    does not know it or it is 0."""
    if isinstance(column, np.ndarray):
        unknown = (column == VLAN_UNKNOWN) | (column == 0)
        vlan_ids = vlan_id_column(np.where(unknown, 1, column), unknown if unknown.any() else None)
        if vlan_ids is not None:
            return vlan_ids
    return [None if v in (VLAN_UNKNOWN, 0) else str(v) for v in python_values(column)]


def _integers(column: Column | None) -> Array:
    if not isinstance(column, np.ndarray):
        raise _Unsupported("a counter that is not an integer")
    return column


def _unless_zero(column: Column) -> Column:
    """`if value:` of the dict path: 0 (an unknown interface or AS) leaves the key out."""
    if isinstance(column, np.ndarray):
        return LazyColumn(column, render_integers, python_list, column == 0, elementwise=True)
    return [v if v else None for v in python_values(column)]


def _add_flow_fields(table: DocumentTable, columns: dict[str, Column], rows: _Rows) -> None:
    count = len(table)
    rates = rows.rates
    values = _Values(columns)
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

    for name, key in (("src_ip", "source.ip"), ("dst_ip", "destination.ip")):
        if name in columns:
            table.add(key, columns[name])
    source_column, destination_column = columns.get("src_ip"), columns.get("dst_ip")
    if address_family(source_column, destination_column) is not None:
        assert isinstance(source_column, LazyColumn) and isinstance(destination_column, LazyColumn)
        table.add("related.ip", related_addresses(source_column, destination_column))
    elif source_column is not None and destination_column is not None:
        pairs = zip(values["src_ip"], values["dst_ip"], strict=True)
        table.add("related.ip", [[s] if d == s else [s, d] for s, d in pairs])
    elif source_column is not None or destination_column is not None:
        table.add("related.ip", [[address] for address in values["src_ip" if source_column is not None else "dst_ip"]])
    versions = columns.get("ip_version")
    if isinstance(versions, np.ndarray) and len(versions) and versions.min() == versions.max():
        table.set_constant("network.type", "ipv4" if int(versions[0]) == 4 else "ipv6")  # one layout, one family
    elif "ip_version" in values:
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
        macs = columns.get(name)
        if isinstance(macs, LazyColumn) and macs.array.dtype == np.uint64:  # the vectorised reader's
            table.add(key, LazyColumn(macs.array, _ecs_macs, _ecs_mac_texts, elementwise=True))
        elif macs is not None:
            texts = values[name]
            names = {mac: ecs.ecs_mac(mac) for mac in set(texts)}
            table.add(key, [names[mac] for mac in texts])
    vlan = columns.get("vlan")
    vlan_ids = vlan_id_column(vlan) if isinstance(vlan, np.ndarray) else None
    if vlan_ids is not None:
        table.add("network.vlan.id", vlan_ids)
    elif "vlan" in values:
        table.add("network.vlan.id", [str(v) for v in values["vlan"]])
    elif "src_vlan" in columns:
        table.add("network.vlan.id", _switch_vlan_ids(columns["src_vlan"]))
    if "customer_vlan" in values:
        table.add("network.inner.vlan.id", [str(v) for v in values["customer_vlan"]])
    for name, key in (("src_as", "source.as.number"), ("dst_as", "destination.as.number")):
        if name in columns:
            table.add(key, _unless_zero(columns[name]))

    if source_column is not None or destination_column is not None:
        table.add("flow.id", _flow_ids(rows, values, columns, count))


def _agent_words(agents: Column | None, rows: _Rows) -> Array:
    """The exporter word of every sample's agent (`ecs.exporter_word`), once per distinct agent."""
    if isinstance(agents, LazyColumn) and agents.elementwise and agents.missing is None:
        distinct, index = unique_inverse(agents.array)
        words = [ecs.exporter_word(a) for a in agents.values_of(distinct)]
        return np.array(words, dtype=_U64)[index]
    texts = python_values(agents) if agents is not None else rows.exporters
    known = {agent: ecs.exporter_word(agent) for agent in set(texts)}
    return np.array([known[agent] for agent in texts], dtype=_U64)


def _flow_ids(rows: _Rows, values: _Values, columns: dict[str, Column], count: int) -> LazyColumn:
    """`ecs.flow_id` of every sample, in numpy; per sample when a column mixes address families."""
    agent_words = _agent_words(columns.get("agent_address"), rows)
    try:
        ids = mix_word_columns(
            [
                agent_words,
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
        agents = values.get("agent_address") or rows.exporters
        ids = np.array(
            [
                int(ecs.flow_id(*six), 16)
                for six in zip(
                    agents,
                    values.get("src_ip") or nothing,
                    values.get("src_port") or nothing,
                    values.get("dst_ip") or nothing,
                    values.get("dst_port") or nothing,
                    values.get("protocol") or nothing,
                    strict=True,
                )
            ],
            dtype=_U64,
        )
    return LazyColumn(ids, render_hex64, hex_strings)


def _words(columns: dict[str, Column], values: _Values, name: str, count: int) -> Array:
    column = columns.get(name)
    if isinstance(column, np.ndarray) and (not len(column) or int(column.min()) >= 0):
        return column.astype(_U64)
    return int_words(values.get(name), count)


def _address_words(columns: dict[str, Column], values: _Values, name: str, count: int) -> list[Array]:
    column = columns.get(name)
    if isinstance(column, LazyColumn) and column.missing is None:
        if column.array.dtype.kind == "u":
            return [column.array.astype(_U64)]
        if column.array.dtype == IPV6_DTYPE:
            return ipv6_words(column.array)
    return address_word_columns(values.get(name), count)


class _Values:
    """Python values of columns, converted when first asked for."""

    __slots__ = ("_columns", "_lists")

    def __init__(self, columns: dict[str, Column]) -> None:
        self._columns = columns
        self._lists: dict[str, list[Any]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._columns

    def __getitem__(self, name: str) -> list[Any]:
        found = self._lists.get(name)
        if found is None:
            found = self._lists[name] = python_values(self._columns[name])
        return found

    def get(self, name: str, default: list[Any] | None = None) -> list[Any] | None:
        return self[name] if name in self._columns else default
