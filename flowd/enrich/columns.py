"""A table's columns read the way the enrichers need them: distinct values, distinct value
pairs, and port numbers as integers.

Enrichers work per distinct value, not per row (`flowd.output.table`); these few helpers are
shared by the Community ID, application, transport and interface enrichers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.output.distinct import unique_inverse
from flowd.output.table import Table

Factorized = tuple[list[Any], npt.NDArray[np.intp]]
"""Distinct values and each row's index among them (`DocumentTable.factorize`)."""


def factorized(table: Table, key: str) -> Factorized:
    """`table.factorize(key)`, with a column no row has as the one value None."""
    found = table.factorize(key)
    return found if found is not None else ([None], np.zeros(len(table), dtype=np.intp))


def distinct_pairs(first: Factorized, second: Factorized) -> tuple[list[tuple[Any, Any]], npt.NDArray[np.intp]]:
    """The distinct (first, second) value pairs of the rows, and each row's index among them:
    per distinct pair, not per row."""
    first_values, first_index = first
    second_values, second_index = second
    codes, index = unique_inverse(first_index * len(second_values) + second_index)
    pairs = [(first_values[c // len(second_values)], second_values[c % len(second_values)]) for c in codes.tolist()]
    return pairs, index


def port_column(table: Table, key: str, count: int, missing: int = 0) -> npt.NDArray[np.int64]:
    """A port column as int64 (`missing` where a row has none)."""
    array = table.integers(key)
    if array is not None:
        return array.astype(np.int64)
    column = table.column(key)
    if column is None:
        return np.full(count, missing, dtype=np.int64)
    return np.array([v if type(v) is int else missing for v in column], dtype=np.int64)
