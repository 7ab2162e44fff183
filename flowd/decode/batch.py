"""A data set decoded at once: a numpy structured array plus the header values its records share.

It is a `Sequence[FlowRecord]`, so every consumer can iterate it, but FlowRecords (and their
field dicts) are only built, column by column, when somebody does; counting records, or
consumers that read columns directly, pay nothing per record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from flowd.decode.records import CompiledTemplate
from flowd.model import Exporter, FlowRecord


def per_run(values: list[Any], lengths: list[int]) -> list[Any]:
    """`values[i]` repeated `lengths[i]` times, run after run: one value per row."""
    out: list[Any] = []
    for value, length in zip(values, lengths, strict=True):
        out += [value] * length
    return out


@dataclass(slots=True)
class RowHeaders:
    """Header values of a batch joined from several data sets: one entry per run of rows that
    came from one data set, `lengths` rows each (exporters, templates and messages differ)."""

    lengths: list[int]
    exporter: list[Exporter]
    domain_id: list[int]
    template_id: list[int]
    export_time: list[int]
    uptime_ms: list[int | None]
    sequence: list[int]
    received_at: list[float]

    def per_row(self, values: list[Any]) -> list[Any]:
        """One of the per-run lists above, expanded to one value per row."""
        return per_run(values, self.lengths)

    def repeat(self, values: list[Any], dtype: Any) -> npt.NDArray[Any]:
        """A per-run list as a numpy array with one value per row."""
        return np.repeat(np.array(values, dtype=dtype), self.lengths)


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
        "row_headers",
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
        self.row_headers: RowHeaders | None = None
        """Set on merged batches, whose records come from messages with different headers."""
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
        if not columns:  # only padding: as many records as `len` says, each without a field
            return [{} for _ in range(len(self))]
        names = tuple(columns)
        return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]

    def records(self) -> list[FlowRecord]:
        if self._records is None:
            rows = self.rows()
            count = len(rows)
            rates = self.rates if isinstance(self.rates, list) else [self.rates] * count
            headers = self.row_headers
            if headers is None:
                headers = RowHeaders(
                    [count],
                    [self.exporter],
                    [self.domain_id],
                    [self.template.template_id],
                    [self.export_time],
                    [self.uptime_ms],
                    [self.sequence],
                    [self.received_at],
                )
            per_row = headers.per_row
            self._records = [
                FlowRecord(
                    self.kind,
                    exporter,
                    self.version,
                    received_at,
                    row,
                    domain_id,
                    template_id,
                    sequence,
                    export_time,
                    uptime_ms,
                    rate,
                )
                for row, rate, exporter, domain_id, template_id, export_time, uptime_ms, sequence, received_at in zip(
                    rows,
                    rates,
                    per_row(headers.exporter),
                    per_row(headers.domain_id),
                    per_row(headers.template_id),
                    per_row(headers.export_time),
                    per_row(headers.uptime_ms),
                    per_row(headers.sequence),
                    per_row(headers.received_at),
                    strict=True,
                )
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


def _merge_key(batch: RecordBatch) -> tuple[Any, ...]:
    """Batches with equal keys have the same fields of the same types, whichever exporter sent them."""
    extra = tuple(sorted(batch.extra.items())) if batch.extra else ()
    return (batch.template.layout, batch.version, batch.kind, extra)


def merge_batches(parts: Iterable[Sequence[FlowRecord]]) -> list[Sequence[FlowRecord]]:
    """Join the record batches of one template layout across datagrams and exporters.

    Turning a batch into documents has a fixed cost per batch and per column, which numpy pays
    once however many rows there are; a receive batch holds datagrams from many exporters whose
    templates mostly share a few layouts (one per vendor and flow type), so joining by layout
    pays it once per layout. Other parts pass through. Records keep their own header values
    (`RowHeaders`: exporter, template, message); only their order across datagrams changes.
    """
    groups: dict[tuple[Any, ...], list[RecordBatch]] = {}
    order: list[Sequence[FlowRecord] | tuple[Any, ...]] = []
    for part in parts:
        if isinstance(part, RecordBatch) and part.row_headers is None and len(part):
            key = _merge_key(part)
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(part)
        else:
            order.append(part)
    merged: list[Sequence[FlowRecord]] = []
    for item in order:
        if isinstance(item, tuple):
            batches = groups[item]
            merged.append(batches[0] if len(batches) == 1 else _join(batches))
        else:
            merged.append(item)
    return merged


def _concatenate(arrays: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """Records of one dtype end to end. As raw bytes: numpy's structured-dtype concatenation
    promotes the field types first, which costs more than the copy."""
    dtype = arrays[0].dtype
    raw = b"".join(a.tobytes() for a in arrays)
    return np.frombuffer(raw, dtype=dtype)


def _join(batches: list[RecordBatch]) -> RecordBatch:
    first = batches[0]
    joined = RecordBatch(
        first.template,
        _concatenate([b.array for b in batches]),
        first.kind,
        first.exporter,
        first.version,
        first.received_at,
        first.domain_id,
        first.sequence,
        first.export_time,
        first.uptime_ms,
        first.rates,
        first.extra,
    )
    if any(isinstance(b.rates, list) or b.rates != first.rates for b in batches):
        joined.rates = [
            rate for b in batches for rate in (b.rates if isinstance(b.rates, list) else [b.rates] * len(b))
        ]
    joined.row_headers = RowHeaders(
        [len(b) for b in batches],
        [b.exporter for b in batches],
        [b.domain_id for b in batches],
        [b.template.template_id for b in batches],
        [b.export_time for b in batches],
        [b.uptime_ms for b in batches],
        [b.sequence for b in batches],
        [b.received_at for b in batches],
    )
    return joined
