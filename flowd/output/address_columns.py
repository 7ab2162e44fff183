"""Address columns: IPv4 addresses kept as uint32 and IPv6 ones as 16-byte values, written as
text only when the table is (`ipv4_column`, `ipv6_column`), and `related.ip` computed from the
two ends' arrays. Shared by the flow and sFlow tables."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.decode import fields as ie
from flowd.decode.records import column_values
from flowd.output.render import IPV6_BYTES, IPV6_DTYPE, PAD, Ipv6Texts, render_ipv4
from flowd.output.table import Column, LazyColumn, python_values

Array = npt.NDArray[Any]


def address_family(source: Column | None, destination: Column | None) -> str | None:
    """ "ipv4" or "ipv6" when both ends are address arrays of that family (`ipv4_column`,
    `ipv6_column`) with a value in every row, else None."""
    if not (isinstance(source, LazyColumn) and isinstance(destination, LazyColumn)):
        return None
    if source.missing is not None or destination.missing is not None:
        return None
    kinds = {(end.array.dtype.kind, end.array.dtype.itemsize) for end in (source, destination)}
    if kinds == {("u", 4)}:  # uint32 in either byte order
        return "ipv4"
    return "ipv6" if kinds == {("V", IPV6_BYTES)} else None


def related_addresses(source: LazyColumn, destination: LazyColumn) -> LazyColumn:
    """`related.ip` of two address columns of one family (`address_family`)."""
    same = source.array == destination.array
    return LazyColumn(
        same,
        lambda _: _render_related(source.render()[0], destination.render()[0], same),
        lambda _: related_lists(source, destination, len(same)),
    )


def ipv4_column(array: Array) -> LazyColumn:
    """IPv4 addresses kept as uint32, written as dotted quads."""
    return LazyColumn(array, render_ipv4, _ipv4_strings, elementwise=True)


def ipv6_column(array: Array) -> LazyColumn:
    """IPv6 addresses kept as 16-byte values, written as RFC 5952 text."""
    texts = Ipv6Texts(np.ascontiguousarray(array).view(IPV6_DTYPE))
    return LazyColumn(texts.array, texts.render, texts.convert, elementwise=True, distinct=texts.distinct)


def related_lists(source: Column | None, destination: Column | None, count: int) -> list[list[Any]]:
    """`related.ip` of each row as Python lists, for ends that are not two arrays of one family."""
    nothing: list[Any] = [None] * count
    pairs = zip(
        python_values(source) if source is not None else nothing,
        python_values(destination) if destination is not None else nothing,
        strict=True,
    )
    return [[s] if d is None or d == s else ([d] if s is None else [s, d]) for s, d in pairs]


def _render_related(source: npt.NDArray[np.uint8], destination: npt.NDArray[np.uint8], same: Array) -> Any:
    """`["source","destination"]`, or `["address"]` when both ends are the same."""
    width = max(source.shape[1], destination.shape[1])  # IPv6 texts differ in width
    source, destination = (_widened(matrix, width) for matrix in (source, destination))
    out = np.empty((len(same), 3 + 2 * width), dtype=np.uint8)
    out[:, 0] = ord("[")
    out[:, 1 : 1 + width] = source
    out[:, 1 + width] = ord(",")
    out[:, 2 + width : -1] = destination
    out[same, 1 + width : -1] = PAD
    out[:, -1] = ord("]")
    return out


def _widened(matrix: npt.NDArray[np.uint8], width: int) -> npt.NDArray[np.uint8]:
    if matrix.shape[1] == width:
        return matrix
    out = np.full((matrix.shape[0], width), PAD, dtype=np.uint8)
    out[:, : matrix.shape[1]] = matrix
    return out


def _ipv4_strings(array: Array) -> list[Any]:
    return column_values(ie.IPV4, 4, array)
