"""Counter columns of a batch: `source.*`/`destination.*` bytes and packets, `network.bytes` and
`network.packets` scaled by the sampling rate, and the unscaled `flowd.raw_*` totals. Counters
stay numpy arrays when no product or sum can pass the largest `long`, else they saturate there as
`documents` does per record."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.decode.batch import RecordBatch
from flowd.output import documents as single
from flowd.output.batch_fields import BatchFields
from flowd.output.table import DocumentTable, python_values

_U64 = np.uint64
Array = npt.NDArray[Any]


def _scaled(column: Array | list[int], rates: int | list[int]) -> Array | list[int]:
    """Counter × rate, saturated at the largest `long`; numpy when no value can overflow."""
    limit = single.MAX_LONG
    if isinstance(rates, list):
        return [min(v * r, limit) for v, r in zip(python_values(column), rates, strict=True)]
    if isinstance(column, np.ndarray):
        if not len(column) or int(column.max()) * rates <= limit:
            return column if rates == 1 else column.astype(_U64) * _U64(rates)
        column = column.tolist()
    if not column or max(column) * rates <= limit:
        return column if rates == 1 else [v * rates for v in column]
    return [min(v * rates, limit) for v in column]


def _total(forward: Array | list[int] | None, reverse: Array | list[int] | None) -> Array | list[int] | None:
    """Both directions' counters summed; None when the records carry neither."""
    if forward is not None and reverse is not None:
        if (
            isinstance(forward, np.ndarray)
            and isinstance(reverse, np.ndarray)
            and int(forward.max()) + int(reverse.max()) <= single.MAX_LONG
        ):
            return forward.astype(_U64) + reverse.astype(_U64)
        return [f + r for f, r in zip(python_values(forward), python_values(reverse), strict=True)]
    return forward if forward is not None else reverse


def add_counter_columns(batch: RecordBatch, fields: BatchFields, count: int, table: DocumentTable) -> None:
    """Bytes and packets per direction and in total, scaled by the sampling rate, and the raw totals."""
    rates = batch.rates
    if isinstance(rates, list):
        table.add("flowd.sampling_rate", rates)
    found = [
        fields.integers(names)
        for names in (single.FORWARD_BYTES, single.FORWARD_PACKETS, single.REVERSE_BYTES, single.REVERSE_PACKETS)
    ]
    for column, key in zip(
        found, ("source.bytes", "source.packets", "destination.bytes", "destination.packets"), strict=True
    ):
        if column is not None:
            table.add(key, _scaled(column, rates))
    total_bytes = _total(found[0], found[2])
    total_packets = _total(found[1], found[3])
    for key, total, scale in (
        ("network.bytes", total_bytes, rates),
        ("network.packets", total_packets, rates),
        ("flowd.raw_bytes", total_bytes, 1),
        ("flowd.raw_packets", total_packets, 1),
    ):
        if total is not None:  # records without counters count nothing, not 0
            table.add(key, _scaled(total, scale))
