"""A decoded batch's fields as the columns the table builders read.

Plain integers stay the batch's numpy arrays, IPv4 and IPv6 addresses stay arrays wrapped once
per field as address columns, and what has neither form is converted to document values on first
use. The time, counter and flow-id builders and `batch_table` all read fields through this."""

from __future__ import annotations

from typing import Any

import numpy.typing as npt

from flowd.decode import fields as ie
from flowd.decode.batch import RecordBatch
from flowd.decode.records import column_values, is_plain_integer
from flowd.output.address_columns import ipv4_column, ipv6_column
from flowd.output.render import IPV6_BYTES
from flowd.output.table import Column, LazyColumn

Array = npt.NDArray[Any]


class BatchFields:
    """A batch's fields: plain integers as numpy arrays, IPv4 addresses as uint32 arrays, the
    rest converted to document values on first use."""

    def __init__(self, batch: RecordBatch) -> None:
        self.count = len(batch)
        self.extra = batch.extra or {}
        self.kinds: dict[str, tuple[str, int]] = {}
        self.arrays: dict[str, Array] = {}
        self.ipv4: dict[str, Array] = {}
        self.ipv6: dict[str, Array] = {}
        self._lists: dict[str, list[Any]] = {}
        self._addresses: dict[str, LazyColumn] = {}
        self._array = batch.array
        for name, kind, length in batch.template.columns:
            self.kinds[name] = (kind, length)
            if name in self.extra:
                continue
            column = batch.array[name]
            if is_plain_integer(kind, length, column):
                self.arrays[name] = column
            elif kind == ie.IPV4 and column.dtype.kind == "u":
                self.ipv4[name] = column
            elif kind == ie.IPV6 and column.dtype.itemsize == IPV6_BYTES:
                self.ipv6[name] = column
        self.names = list(self.kinds) + [name for name in self.extra if name not in self.kinds]

    def __contains__(self, name: str) -> bool:
        return name in self.kinds or name in self.extra

    def values(self, name: str) -> list[Any] | None:
        """Document values of a field, None when the template does not have it."""
        values = self._lists.get(name)
        if values is None:
            if name in self.extra:
                values = [self.extra[name]] * self.count
            elif name in self.kinds:
                kind, length = self.kinds[name]
                values = column_values(kind, length, self._array[name])
            else:
                return None
            self._lists[name] = values
        return values

    def column(self, name: str) -> Column:
        """The table column of a field that is present."""
        array = self.arrays.get(name)
        if array is not None:
            return array
        if name in self.ipv4 or name in self.ipv6:
            return self.address_column(name)
        values = self.values(name)
        assert values is not None
        return values

    def address_column(self, name: str) -> LazyColumn:
        """One column object per field, so `netflow.*` and its ECS copy render their dotted
        quads once (`to_ndjson` renders a column shared by several keys once)."""
        column = self._addresses.get(name)
        if column is None:
            four = self.ipv4.get(name)
            column = ipv4_column(four) if four is not None else ipv6_column(self.ipv6[name])
            self._addresses[name] = column
        return column

    def integers(self, names: tuple[str, ...]) -> Array | list[Any] | None:
        """The first of `names` the template has with integer values (array when it can be)."""
        for name in names:
            if name in self.arrays:
                return self.arrays[name]
            if name in self:
                values = self.values(name)
                if values and isinstance(values[0], int):
                    return values
        return None
