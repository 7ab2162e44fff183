"""JSON values rendered column by column into NUL-padded byte matrices (see `table.py`).

Every function returns a `(rows, width)` uint8 matrix whose row i holds value i's JSON text,
left-aligned or right-aligned, with NUL bytes as padding; `DocumentTable.to_ndjson` lays the
matrices side by side and deletes every NUL at once. JSON text never contains a raw NUL (orjson
escapes it), so the padding is unambiguous.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

_POWERS_OF_TEN = np.array([10**i for i in range(20)], dtype=np.uint64)
_U32_MAX = 2**32 - 1


def render_values(values: Sequence[Any]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_] | None]:
    """Any Python values (None: absent, returned as a mask); integer columns go through numpy."""
    types = set(map(type, values))
    missing: npt.NDArray[np.bool_] | None = None
    if type(None) in types:
        types.discard(type(None))
        missing = np.fromiter((v is None for v in values), dtype=np.bool_, count=len(values))
        if types == {int}:
            values = [0 if v is None else v for v in values]
    if types == {int}:
        try:
            return render_integers(np.array(values, dtype=np.int64)), missing
        except OverflowError:
            try:
                return render_integers(np.array(values, dtype=np.uint64)), missing
            except OverflowError:
                pass  # beyond 64 bits: orjson below raises, and the caller isolates the row
    dumps = orjson.dumps
    if len(types) != 1:  # 1, 1.0 and True are equal keys: no cache across types
        return render_fragments([b"" if v is None else dumps(v) for v in values]), missing
    distinct: dict[Any, bytes] = {}
    encoded: list[bytes] = []
    append = encoded.append
    for value in values:
        if value is None:
            append(b"")
            continue
        try:
            text = distinct.get(value)
            if text is None:
                text = distinct[value] = dumps(value)
        except TypeError:  # unhashable: a list
            text = dumps(value)
        append(text)
    return render_fragments(encoded), missing


def render_fragments(encoded: list[bytes]) -> npt.NDArray[np.uint8]:
    """Byte strings as a NUL-padded matrix (numpy's `S` type pads with NULs)."""
    array = np.array(encoded, dtype=np.bytes_)
    if not len(encoded) or array.dtype.itemsize == 0:
        return np.zeros((len(encoded), 1), dtype=np.uint8)
    return array.view(np.uint8).reshape(len(encoded), array.dtype.itemsize)


def render_integers(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Decimal digits of an integer array, right-aligned, leading positions NUL; a '-' for negatives."""
    count = len(values)
    if not count:
        return np.zeros((0, 1), dtype=np.uint8)
    negative: npt.NDArray[np.bool_] | None = None
    if values.dtype.kind == "i":
        if values.min() < 0:
            negative = values < 0
            magnitude = values.astype(np.uint64)
            magnitude[negative] = np.uint64(0) - magnitude[negative]  # two's complement, int64 min included
        else:
            magnitude = values.astype(np.uint64)
    elif values.dtype.kind == "u":
        magnitude = values.astype(np.uint64, copy=False)
    else:
        raise TypeError(f"not an integer array: {values.dtype}")
    largest = int(magnitude.max())
    digits = int(np.searchsorted(_POWERS_OF_TEN, np.uint64(largest), side="right")) or 1
    work = magnitude.astype(np.uint32) if largest <= _U32_MAX else magnitude.copy()
    sign = 1 if negative is not None else 0
    out = np.zeros((count, digits + sign), dtype=np.uint8)
    ten = work.dtype.type(10)
    for position in range(digits + sign - 1, sign - 1, -1):
        quotient = work // ten
        digit = (work - quotient * ten).astype(np.uint8) + np.uint8(48)
        if position < digits + sign - 1:
            digit[work == 0] = 0  # past the leading digit
        out[:, position] = digit
        work = quotient
    if negative is not None:
        out[negative, 0] = ord("-")
    return out


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def render_hex64(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """A uint64 array as quoted 16-digit lowercase hex strings."""
    big_endian = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    out = np.empty((len(values), 18), dtype=np.uint8)
    out[:, 0] = out[:, 17] = ord('"')
    out[:, 1:17:2] = _HEX[big_endian >> 4]
    out[:, 2:17:2] = _HEX[big_endian & 15]
    return out


def render_ipv4(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """A uint32 array of IPv4 addresses as quoted dotted quads."""
    octets = values.astype(">u4").view(np.uint8).reshape(-1, 4)
    out = np.zeros((len(values), 17), dtype=np.uint8)
    out[:, 0] = out[:, 16] = ord('"')
    for index in range(4):
        octet = octets[:, index]
        base = 1 + 4 * index
        hundreds = octet // 100
        tens = octet // 10 % 10
        out[:, base] = np.where(octet >= 100, hundreds + 48, 0)
        out[:, base + 1] = np.where(octet >= 10, tens + 48, 0)
        out[:, base + 2] = octet % 10 + 48
        if index < 3:
            out[:, base + 3] = ord(".")
    return out


_ISO_FIRST_MS = 0
_ISO_LAST_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: four-digit years only (`timestamps.iso_from_ms` covers the rest)."""


def render_iso_ms(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8] | None:
    """Epoch milliseconds as quoted `YYYY-MM-DDTHH:MM:SS.mmmZ`; None when a value is out of range."""
    if len(values) and (values.min() < _ISO_FIRST_MS or values.max() > _ISO_LAST_MS):
        return None
    text = values.astype("datetime64[ms]").astype("S23").view(np.uint8).reshape(-1, 23)
    out = np.empty((len(values), 26), dtype=np.uint8)
    out[:, 0] = ord('"')
    out[:, 1:24] = text
    out[:, 24] = ord("Z")
    out[:, 25] = ord('"')
    return out
