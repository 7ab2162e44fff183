"""JSON values rendered column by column into NUL-padded byte matrices (see `table.py`).

Every function returns a `(rows, width)` uint8 matrix whose row i holds value i's JSON text,
left-aligned or right-aligned, with NUL bytes as padding; `DocumentTable.to_ndjson` lays the
matrices side by side and deletes every NUL at once. JSON text never contains a raw NUL (orjson
escapes it), so the padding is unambiguous.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

_UNHASHABLE = frozenset((list, dict))


def render_values(values: Sequence[Any]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_] | None]:
    """Any Python values (None: absent, returned as a mask); integer columns go through numpy."""
    types = set(map(type, values))
    missing: npt.NDArray[np.bool_] | None = None
    if type(None) in types:
        types.discard(type(None))
        missing = np.fromiter((v is None for v in values), dtype=np.bool_, count=len(values))
        if types == {int}:
            values = [0 if v is None else v for v in values]
    if missing is None and len(types) == 1 and values and values.count(values[0]) == len(values):
        # One value in every row (header values of joined data sets): rendered once.
        single = orjson.dumps(values[0])
        return np.broadcast_to(np.frombuffer(single, dtype=np.uint8), (len(values), len(single))), None
    if types == {int}:
        try:
            return render_integers(np.array(values, dtype=np.int64)), missing
        except OverflowError:
            try:
                return render_integers(np.array(values, dtype=np.uint64)), missing
            except OverflowError:
                pass  # beyond 64 bits: orjson below raises, and the caller isolates the row
    dumps = orjson.dumps
    if len(types) != 1 or types <= _UNHASHABLE:  # 1, 1.0 and True are equal keys: no cache across types
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


def _chunk_table(text: Callable[[int], str]) -> npt.NDArray[np.uint32]:
    """Four-digit chunks as uint32 words (their four bytes in memory order), one per value."""
    raw = "".join(text(v) for v in range(10_000)).encode()
    return np.frombuffer(raw, dtype=np.uint32).copy()


_PADDED = _chunk_table(lambda v: f"{v:04d}")
"""Four digits with leading zeros: a chunk after the first."""
_LEADING = _chunk_table(lambda v: f"{v:>4d}".replace(" ", "\0"))
"""Right-aligned, NUL-padded: the most significant chunk of a value below 10,000 (0 is '0')."""
_LEADING_BLANK = _LEADING.copy()
_LEADING_BLANK[0] = 0
"""As `_LEADING`, with 0 blank: a leading chunk of zeros writes nothing."""


def render_integers(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Decimal digits of an integer array, right-aligned, leading positions NUL; a '-' for negatives.

    Four digits at a time through lookup tables of uint32 words: one gather for values below
    10,000, then a division, two gathers and a select per further four digits.
    """
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
        magnitude = values
    else:
        raise TypeError(f"not an integer array: {values.dtype}")
    largest = int(magnitude.max())
    chunks = 1
    while largest >= 10_000**chunks:
        chunks += 1
    sign = 0 if negative is None else 1
    words = np.zeros((count, sign + chunks), dtype=np.uint32)
    work: npt.NDArray[Any] = magnitude.astype(np.uint32 if largest <= 0xFFFFFFFF else np.uint64)
    ten_thousand: Any = work.dtype.type(10_000)
    for position in range(chunks - 1, -1, -1):  # 0 is the most significant chunk
        if position:
            quotient = work // ten_thousand
            chunk = (work - quotient * ten_thousand).astype(np.intp)
            work = quotient
        else:
            chunk = work.astype(np.intp)
        first = np.take(_LEADING if position == chunks - 1 else _LEADING_BLANK, chunk)
        if position:
            started = magnitude >= magnitude.dtype.type(10_000 ** (chunks - position))
            first = np.where(started, np.take(_PADDED, chunk), first)
        words[:, sign + position] = first
    out = words.view(np.uint8)
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


def _octet_table(suffix: str) -> npt.NDArray[np.uint32]:
    """An octet's digits and `suffix`, NUL-padded to a uint32 word, for every octet value."""
    return np.frombuffer(b"".join(f"{v}{suffix}".encode().ljust(4, b"\0") for v in range(256)), np.uint32).copy()


_OCTET_DOT = _octet_table(".")
_OCTET_QUOTE = _octet_table('"')
_QUOTE_WORD = np.frombuffer(b'"\0\0\0', dtype=np.uint32)[0]


def render_ipv4(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """A uint32 array of IPv4 addresses as quoted dotted quads."""
    octets = values.astype(">u4").view(np.uint8).reshape(-1, 4).astype(np.intp)
    words = np.empty((len(values), 5), dtype=np.uint32)
    words[:, 0] = _QUOTE_WORD
    for index in range(3):
        words[:, 1 + index] = np.take(_OCTET_DOT, octets[:, index])
    words[:, 4] = np.take(_OCTET_QUOTE, octets[:, 3])
    return words.view(np.uint8)


_ISO_FIRST_MS = 0
_ISO_LAST_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: four-digit years only (`timestamps.iso_from_ms` covers the rest)."""


_MILLIS = np.frombuffer(b"".join(f'.{v:03d}Z"'.encode().ljust(8, b"\0") for v in range(1000)), np.uint64).copy()
"""`.mmmZ"` for every millisecond, NUL-padded to a uint64 word."""


def render_iso_ms(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8] | None:
    """Epoch milliseconds as quoted `YYYY-MM-DDTHH:MM:SS.mmmZ`; None when a value is out of range.

    Each distinct second is formatted once (a batch spans few); milliseconds come from a table.
    """
    count = len(values)
    if count and (values.min() < _ISO_FIRST_MS or values.max() > _ISO_LAST_MS):
        return None
    seconds, millis = np.divmod(values.astype(np.int64), 1000)
    distinct, inverse = np.unique(seconds, return_inverse=True)
    prefixes = np.zeros((len(distinct), 24), dtype=np.uint8)
    prefixes[:, 0] = ord('"')
    prefixes[:, 1:20] = distinct.astype("datetime64[s]").astype("S19").view(np.uint8).reshape(-1, 19)
    out = np.empty((count, 32), dtype=np.uint8)
    out[:, :24] = np.take(prefixes, inverse.reshape(-1), axis=0)
    out.view(np.uint64)[:, 3] = np.take(_MILLIS, millis)
    return out
