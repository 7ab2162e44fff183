"""Distinct values of an array and each element's index among them, faster than `np.unique`.

Tables factorise a column many times per batch (protocols, ports, group numbers, interface
indexes), and `np.unique(..., return_inverse=True)` sorts with an argsort each time: about 25 µs
for 2,000 small integers. Integers in a short span are factorised instead through a lookup table
as long as the span, in a few µs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

DENSE_SPAN = 8192
"""Spans up to this (or twice the element count, if more) use the lookup table."""


def unique_inverse(values: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[np.intp]]:
    """`np.unique(values, return_inverse=True)` of a 1-D array: the distinct values (sorted,
    except 16-byte values, see `HASHED_BYTES`) and each element's index among them."""
    if values.dtype.kind in "iu" and len(values):
        low, high = int(values.min()), int(values.max())
        span = high - low + 1
        if span <= max(DENSE_SPAN, 2 * len(values)) and high < 1 << 62:
            offsets = values.astype(np.intp, copy=False)
            if low:
                offsets = offsets - low
            present = np.zeros(span, dtype=np.bool_)
            present[offsets] = True
            distinct = np.flatnonzero(present)
            code = np.empty(span, dtype=np.intp)
            code[distinct] = np.arange(len(distinct), dtype=np.intp)
            if low:
                distinct = distinct + low
            return distinct.astype(values.dtype, copy=False), code[offsets]
    if values.dtype.kind == "V" and values.dtype.itemsize == HASHED_BYTES and len(values):
        found = _hashed(values)
        if found is not None:
            return found
    distinct, inverse = np.unique(values, return_inverse=True)
    return distinct, inverse.reshape(-1)


HASHED_BYTES = 16
"""16-byte values (IPv6 addresses) are factorised by a 64-bit key: `np.unique` sorts them by
comparing bytes, twice the cost. Their distinct values come in the keys' order, not sorted."""
_ODD = np.uint64(0x9E3779B97F4A7C15)


def _hashed(values: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[np.intp]] | None:
    """Distinct 16-byte values and each element's index, by the unique 64-bit keys of their two
    words; None when two values share a key (checked, so the answer is exact)."""
    _, first, inverse = np.unique(sixteen_byte_keys(values), return_index=True, return_inverse=True)
    distinct = values[first]
    inverse = inverse.reshape(-1)
    if not bool((distinct[inverse] == values).all()):
        return None
    return distinct, inverse


def sixteen_byte_keys(values: npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
    """A 64-bit key of each 16-byte value, its two words mixed: equal values, equal keys (not the
    converse: whoever uses them checks)."""
    words = np.ascontiguousarray(values).view("<u8").reshape(-1, 2)
    keys: npt.NDArray[np.uint64] = words[:, 0] ^ (words[:, 1] * _ODD)
    return keys
