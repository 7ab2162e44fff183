"""Time columns of a batch: `@timestamp`, `event.start`, `event.end` and `event.duration`.

Each record's times are resolved as `documents._flow_times` does (absolute, else sysUpTime-relative
across the counter's wrap, else a delta before the export), in numpy over the whole column when
every time is an integer array in range, else from Python integers; ISO texts are rendered from
the epoch-ms arrays when the table is written."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.decode.batch import RecordBatch
from flowd.output import documents as single
from flowd.output.batch_fields import BatchFields
from flowd.output.render import render_integers, render_iso_ms
from flowd.output.table import Column, DocumentTable, LazyColumn, python_list, python_values
from flowd.output.timestamps import AHEAD_TOLERANCE_MS, UPTIME_WRAP_MS, in_document_range, iso_from_ms, uptime_age_ms


def add_time_columns(batch: RecordBatch, fields: BatchFields, count: int, table: DocumentTable) -> None:
    """The time columns, in numpy when the batch's times allow it, else from Python integers."""
    if not _add_time_arrays(batch, fields, count, table):
        _add_time_lists(batch, fields, count, table)


def _iso(epoch_ms: list[Any]) -> Column:
    """ISO strings for epoch ms (None stays None): rendered in numpy when every value is there."""
    if None not in epoch_ms:
        try:
            array = np.array(epoch_ms, dtype=np.int64)
        except OverflowError:
            pass
        else:
            return iso_column(array)
    return _iso_strings(epoch_ms)


def _iso_strings(epoch_ms: list[Any]) -> list[Any]:
    """ISO strings for a column of epoch ms (None stays None), each distinct value formatted once."""
    distinct = {ms: None if ms is None else iso_from_ms(ms) for ms in set(epoch_ms)}
    return [distinct[ms] for ms in epoch_ms]


def _add_time_lists(batch: RecordBatch, fields: BatchFields, count: int, table: DocumentTable) -> None:
    """@timestamp, event.start, event.end and event.duration from Python integers (any value)."""
    start, end = _times(batch, fields, count)
    timestamps = _timestamps(batch, fields, end, count)
    timestamp_column = _iso(timestamps)
    table.add("@timestamp", timestamp_column)
    if start is not None:
        table.add("event.start", _iso(start))
    if end is not None:
        table.add("event.end", timestamp_column if end is timestamps else _iso(end))
        if start is not None:
            table.add(
                "event.duration",
                [
                    (e - s) * 1_000_000
                    if s is not None and e is not None and 0 <= e - s <= single.MAX_DURATION_MS
                    else None
                    for s, e in zip(start, end, strict=True)
                ],
            )


def _add_time_arrays(batch: RecordBatch, fields: BatchFields, count: int, table: DocumentTable) -> bool:
    """`_add_time_lists` in numpy, when every time it reads is an integer array in range and each
    sysUpTime-relative time has its uptime; False (nothing added) otherwise."""
    headers = batch.row_headers
    export_times = [batch.export_time] if headers is None else headers.export_time
    uptimes = [batch.uptime_ms] if headers is None else headers.uptime_ms
    received = [batch.received_at] if headers is None else headers.received_at

    def per_row(values: list[Any]) -> npt.NDArray[np.int64]:
        """A header value per row (the batch's one, or one per run of rows)."""
        if headers is None:
            return np.full(count, values[0], dtype=np.int64)
        return headers.repeat(values, np.int64)

    export_ms = per_row([single.clock_ms(t, r) for t, r in zip(export_times, received, strict=True)])

    def milliseconds(names: tuple[str, ...]) -> npt.NDArray[np.int64] | bool | None:
        """The first of `names` as int64; None when absent; False when not an array in range."""
        column = fields.integers(names)
        if column is None:
            return None
        if not isinstance(column, np.ndarray):
            return False
        if len(column) and not (in_document_range(int(column.min())) and in_document_range(int(column.max()))):
            return False
        return column.astype(np.int64)

    def resolve(absolute: tuple[str, ...], relative: str, delta: str) -> npt.NDArray[np.int64] | bool | None:
        found = milliseconds(absolute)
        if found is not None:
            return found
        found = milliseconds((relative,))
        if found is not None:
            if isinstance(found, bool) or None in uptimes:
                return False
            ages: npt.NDArray[np.int64] = _uptime_ages_ms(per_row(uptimes), found)
            return export_ms - ages
        found = milliseconds((delta,))
        return found if found is None or found is False else export_ms - found // 1000

    start = resolve(single.START_ABSOLUTE, "flow_start_sys_up_time", "flow_start_delta_microseconds")
    end = resolve(single.END_ABSOLUTE, "flow_end_sys_up_time", "flow_end_delta_microseconds")
    if start is False or end is False:
        return False
    if isinstance(end, np.ndarray):
        timestamps = end
    else:
        event = milliseconds(single.EVENT_TIME)
        if event is False:
            return False
        timestamps = event if isinstance(event, np.ndarray) else export_ms
    timestamp_column = iso_column(timestamps)
    table.add("@timestamp", timestamp_column)
    if isinstance(start, np.ndarray):
        table.add("event.start", iso_column(start))
    if isinstance(end, np.ndarray):
        table.add("event.end", timestamp_column)
        if isinstance(start, np.ndarray):
            difference = end - start
            valid = (difference >= 0) & (difference <= single.MAX_DURATION_MS)
            durations = np.where(valid, difference, 0) * 1_000_000
            table.add(
                "event.duration", LazyColumn(durations, render_integers, python_list, None if valid.all() else ~valid)
            )
    return True


def _uptime_ages_ms(uptimes: npt.NDArray[np.int64], relative: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """`timestamps.uptime_age_ms` of each row."""
    ages = (uptimes - relative) % UPTIME_WRAP_MS
    ahead = ages > UPTIME_WRAP_MS - AHEAD_TOLERANCE_MS
    if ahead.any():
        ages[ahead] -= UPTIME_WRAP_MS
    return ages


def iso_column(epoch_ms: npt.NDArray[np.int64]) -> LazyColumn:
    return LazyColumn(epoch_ms, render_iso_ms, lambda array: _iso_strings(array.tolist()))


def _times(batch: RecordBatch, fields: BatchFields, count: int) -> tuple[list[Any] | None, list[Any] | None]:
    """Per-record start and end in epoch ms, as `documents._flow_times` computes them."""
    headers = batch.row_headers
    if headers is None:
        export_ms: list[int] = [single.clock_ms(batch.export_time, batch.received_at)] * count
        uptimes: list[int | None] = [batch.uptime_ms] * count
    else:
        export_ms = headers.per_row(
            [single.clock_ms(t, r) for t, r in zip(headers.export_time, headers.received_at, strict=True)]
        )
        uptimes = headers.per_row(headers.uptime_ms)

    def integers(names: tuple[str, ...]) -> list[Any] | None:
        """Only integers count: a template giving a time element an odd length decodes it as hex."""
        column = fields.integers(names)
        return None if column is None else python_values(column)

    def resolve(absolute: tuple[str, ...], relative: str, delta: str) -> list[Any] | None:
        values: list[Any] = [None] * count
        column = integers(absolute)
        if column is not None:
            values = [v if _is_time(v) else None for v in column]
            if None not in values:
                return values
        relative_values = integers((relative,))
        if relative_values is not None:
            values = [
                e - uptime_age_ms(u, r) if v is None and u is not None else v
                for v, e, u, r in zip(values, export_ms, uptimes, relative_values, strict=True)
            ]
        delta_values = integers((delta,))
        if delta_values is not None and None in values:
            values = [
                e - d // 1000 if v is None else v for v, e, d in zip(values, export_ms, delta_values, strict=True)
            ]
        return None if all(v is None for v in values) else values

    start = resolve(single.START_ABSOLUTE, "flow_start_sys_up_time", "flow_start_delta_microseconds")
    end = resolve(single.END_ABSOLUTE, "flow_end_sys_up_time", "flow_end_delta_microseconds")
    return start, end


def _is_time(value: Any) -> bool:
    return isinstance(value, int) and in_document_range(value)


def _timestamps(batch: RecordBatch, fields: BatchFields, end: list[Any] | None, count: int) -> list[Any]:
    """`documents._timestamp_ms` per record: the end, else the event time, export time, receive time."""
    headers = batch.row_headers
    if headers is None:
        fallback = [single.clock_ms(batch.export_time, batch.received_at)] * count
    else:
        fallback = headers.per_row(
            [single.clock_ms(e, r) for e, r in zip(headers.export_time, headers.received_at, strict=True)]
        )
    event = fields.integers(single.EVENT_TIME)
    if event is not None:
        fallback = [e if _is_time(e) else f for e, f in zip(python_values(event), fallback, strict=True)]
    if end is None:
        return fallback
    if None not in end:
        return end
    return [f if e is None else e for e, f in zip(end, fallback, strict=True)]
