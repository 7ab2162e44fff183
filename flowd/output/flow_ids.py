"""Flow ids of a whole table: `ecs.flow_id` (FNV-1a over the exporter and the five-tuple's 64-bit
words) computed over numpy columns, every row at once. The words come straight from the decoded
array when it holds each end as one address family, else from the table's columns; a set mixing
IPv4 and IPv6 flows in one column pair is hashed record by record. Shared by the flow and sFlow
tables."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.decode.batch import RecordBatch
from flowd.output import ecs
from flowd.output.batch_fields import BatchFields
from flowd.output.table import DocumentTable

_U64 = np.uint64
Array = npt.NDArray[Any]


def hex_strings(ids: Array) -> list[str]:
    text = ids.astype(">u8").tobytes().hex()
    return [text[i : i + 16] for i in range(0, len(text), 16)]


def batch_flow_ids(
    batch: RecordBatch,
    fields: BatchFields,
    table: DocumentTable,
    source_port: Array | None,
    destination_port: Array | None,
    protocol: Array | None,
    count: int,
) -> Array:
    """`ecs.flow_id` of every record as a uint64 array, computed over numpy columns."""
    words = _raw_words(batch)
    if words is not None:
        return _mix_columns(batch, words, count)
    source = table.column("source.ip")
    destination = table.column("destination.ip")
    source_ports = fields.values("source_transport_port")
    destination_ports = fields.values("destination_transport_port")
    protocols = fields.values("protocol_identifier")
    try:
        source_words = address_word_columns(source, count)
        destination_words = address_word_columns(destination, count)
    except MixedFamiliesError:  # one set mixing IPv4 and IPv6 flows: hash record by record
        nothing = [None] * count
        headers = batch.row_headers
        exporters = [batch.exporter] * count if headers is None else headers.per_row(headers.exporter)
        return np.array(
            [
                int(ecs.flow_id(exporter[0], *five), 16)
                for exporter, *five in zip(
                    exporters,
                    source or nothing,
                    source_ports or nothing,
                    destination or nothing,
                    destination_ports or nothing,
                    protocols or nothing,
                    strict=True,
                )
            ],
            dtype=_U64,
        )
    words = [
        *source_words,
        int_words(source_ports, count),
        *destination_words,
        int_words(destination_ports, count),
        int_words(protocols, count),
    ]
    return _mix_columns(batch, words, count)


def _mix_columns(batch: RecordBatch, words: list[Array], count: int) -> Array:
    headers = batch.row_headers
    if headers is None:
        exporter_words = np.full(count, ecs.exporter_word(batch.exporter[0]), dtype=_U64)
    else:
        exporter_words = headers.repeat([ecs.exporter_word(address) for address, _ in headers.exporter], _U64)
    return mix_word_columns([exporter_words, *words], count)


def mix_word_columns(words: list[Array], count: int) -> Array:
    """`ecs.mix_words` over columns of 64-bit words: every row's flow id at once."""
    value = np.full(count, ecs.FNV_OFFSET, dtype=_U64)
    prime = _U64(ecs.FNV_PRIME)
    for word in words:
        value = (value ^ word) * prime
    value ^= value >> _U64(29)
    value = value * prime
    value ^= value >> _U64(32)
    return value


def _raw_words(batch: RecordBatch) -> list[Array] | None:
    """The flow-id words straight from the decoded array, when each end has one address family."""
    array = batch.array
    names = set(batch.template.names)
    words: list[Array] = []
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
            words += ipv6_words(column)
        else:
            words.append(np.zeros(len(array), dtype=_U64))
        port = _array_word(array, names, f"{end}_transport_port")
        if port is None:
            return None
        words.append(port)
    protocol = _array_word(array, names, "protocol_identifier")
    if protocol is None:
        return None
    words.append(protocol)
    return words


def _array_word(array: Array, names: set[str], name: str) -> Array | None:
    """The column as words; None when it is held as raw bytes (sent in 3, 5, 6 or 7 bytes), which
    the generic path reads as the integers the per-record path hashes."""
    if name not in names:
        return np.zeros(len(array), dtype=_U64)
    if array[name].dtype.kind == "u":
        return array[name].astype(_U64)
    return None


def ipv6_words(addresses: Array) -> list[Array]:
    """16-byte addresses as their two 64-bit words (`ecs.address_words`), one array each."""
    pairs = np.frombuffer(np.ascontiguousarray(addresses).tobytes(), dtype=">u8").reshape(-1, 2)
    return [pairs[:, 0].astype(_U64), pairs[:, 1].astype(_U64)]


def int_words(column: list[Any] | None, count: int) -> Array:
    if column is None:
        return np.zeros(count, dtype=_U64)
    return np.array([v & ecs.MASK64 if isinstance(v, int) else 0 for v in column], dtype=_U64)


def address_word_columns(addresses: list[Any] | None, count: int) -> list[Array]:
    if addresses is None:
        return [np.zeros(count, dtype=_U64)]
    distinct = {address: ecs.address_words(address) for address in set(addresses)}
    words = [distinct[address] for address in addresses]
    if all(len(w) == 1 for w in words):
        return [np.array([w[0] for w in words], dtype=_U64)]
    if all(len(w) == 2 for w in words):
        return [np.array([w[0] for w in words], dtype=_U64), np.array([w[1] for w in words], dtype=_U64)]
    raise MixedFamiliesError


class MixedFamiliesError(Exception):
    """A set mixing IPv4 and IPv6 addresses in one column pair; handled by the per-record path."""
