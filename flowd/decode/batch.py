"""A data set decoded at once: a numpy structured array plus the header values its records share.

It is a `Sequence[FlowRecord]`, so every consumer can iterate it, but FlowRecords (and their
field dicts) are only built, column by column, when somebody does; counting records, or
consumers that read columns directly, pay nothing per record.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy.typing as npt

from flowd.decode.records import CompiledTemplate
from flowd.model import Exporter, FlowRecord


class RecordBatch(Sequence[FlowRecord]):
    __slots__ = (
        "_columns",
        "_records",
        "array",
        "domain_id",
        "export_time",
        "exporter",
        "extra",
        "kind",
        "rates",
        "received_at",
        "sequence",
        "template",
        "uptime_ms",
        "version",
    )

    def __init__(
        self,
        template: CompiledTemplate,
        array: npt.NDArray[Any],
        kind: str,
        exporter: Exporter,
        version: int,
        received_at: float,
        domain_id: int,
        sequence: int,
        export_time: int,
        uptime_ms: int | None,
        rates: int | list[int] = 1,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.template = template
        self.array = array
        self.kind = kind
        self.exporter = exporter
        self.version = version
        self.received_at = received_at
        self.domain_id = domain_id
        self.sequence = sequence
        self.export_time = export_time
        self.uptime_ms = uptime_ms
        self.rates = rates
        self.extra = extra
        self._records: list[FlowRecord] | None = None
        self._columns: dict[str, list[Any]] | None = None

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def columns(self) -> dict[str, list[Any]]:
        """Every field as a list of document values, header extras included (built once)."""
        if self._columns is None:
            self._columns = self.template.column_lists(self.array)
            if self.extra:
                count = len(self)
                for name, value in self.extra.items():
                    self._columns[name] = [value] * count
        return self._columns

    def rows(self) -> list[dict[str, Any]]:
        if not len(self):
            return []
        columns = self.columns()
        names = tuple(columns)
        return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]

    def records(self) -> list[FlowRecord]:
        if self._records is None:
            rows = self.rows()
            rates = self.rates if isinstance(self.rates, list) else [self.rates] * len(rows)
            self._records = [
                FlowRecord(
                    self.kind,
                    self.exporter,
                    self.version,
                    self.received_at,
                    row,
                    self.domain_id,
                    self.template.template_id,
                    self.sequence,
                    self.export_time,
                    self.uptime_ms,
                    rate,
                )
                for row, rate in zip(rows, rates, strict=True)
            ]
        return self._records

    def __iter__(self) -> Iterator[FlowRecord]:
        return iter(self.records())

    @overload
    def __getitem__(self, index: int) -> FlowRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[FlowRecord]: ...

    def __getitem__(self, index: int | slice) -> FlowRecord | list[FlowRecord]:
        return self.records()[index]
