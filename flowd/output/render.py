"""JSON values rendered column by column into space-padded byte matrices (see `table.py`).

Every function returns a `(rows, width)` uint8 matrix whose row i holds value i's JSON text in one
piece, left-aligned or right-aligned, the rest of the row spaces. JSON allows whitespace between
any two tokens (RFC 8259 section 2), so `DocumentTable.to_ndjson` lays the matrices side by side
and the result is the NDJSON as it stands: no pass over the bytes to take padding out (deleting
NUL padding with `bytes.translate` was 40-55% of serialising). Padding therefore never goes inside
a value: a number's sign is written next to its first digit, an address's octets are packed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from flowd.decode.records import ipv6_string
from flowd.output.distinct import unique_inverse
from flowd.output.timestamps import FIRST_MS, LAST_MS

_UNCACHED = frozenset((list, dict, float))
"""Types rendered value by value, not once per distinct value: lists and dicts are no keys, and
-0.0 == 0.0 (one key for both would write one zero with the other's sign)."""
PAD = 0x20
"""The padding byte: a space, JSON's insignificant whitespace."""


def render_values(values: Sequence[Any]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_] | None]:
    """Any Python values (None: absent, returned as a mask); integer columns go through numpy."""
    types = set(map(type, values))
    missing: npt.NDArray[np.bool_] | None = None
    if type(None) in types:
        types.discard(type(None))
        missing = np.fromiter((v is None for v in values), dtype=np.bool_, count=len(values))
        if types == {int}:
            values = [0 if v is None else v for v in values]
    if missing is None and len(types) == 1 and float not in types and values.count(values[0]) == len(values):
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
    if len(types) != 1 or types <= _UNCACHED:  # 1, 1.0 and True are equal keys: no cache across types
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
    """Byte strings (JSON text, so without raw NULs) as a left-aligned, space-padded matrix."""
    array = np.array(encoded, dtype=np.bytes_)
    if not len(encoded) or array.dtype.itemsize == 0:
        return np.full((len(encoded), 1), PAD, dtype=np.uint8)
    return pad_nuls(array.view(np.uint8).reshape(len(encoded), array.dtype.itemsize))


def pad_nuls(matrix: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """`matrix` (writable, from numpy's NUL-padded `S` type) with its NULs turned into spaces."""
    matrix[matrix == 0] = PAD
    return matrix


def _chunk_table(text: Callable[[int], str]) -> npt.NDArray[np.uint32]:
    """Four-digit chunks as uint32 words (their four bytes in memory order), one per value."""
    raw = "".join(text(v) for v in range(10_000)).encode()
    return np.frombuffer(raw, dtype=np.uint32).copy()


_PADDED = _chunk_table(lambda v: f"{v:04d}")
"""Four digits with leading zeros: a chunk after the first."""
_LEADING = _chunk_table(lambda v: f"{v:>4d}")
"""Right-aligned, space-padded: the most significant chunk of a value below 10,000 (0 is '0')."""
_LEADING_BLANK = _LEADING.copy()
_LEADING_BLANK[0] = np.frombuffer(b"    ", dtype=np.uint32)[0]
"""As `_LEADING`, with 0 blank: a leading chunk of zeros writes nothing."""
_BLANK_WORD = _LEADING_BLANK[0]


def render_integers(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Decimal digits of an integer array, right-aligned after spaces; a '-' before a negative's first digit.

    Four digits at a time through lookup tables of uint32 words: one gather for values below
    10,000, then a division, two gathers and a select per further four digits.
    """
    count = len(values)
    if not count:
        return np.zeros((0, 1), dtype=np.uint8)
    if values.dtype.kind not in "iu":
        raise TypeError(f"not an integer array: {values.dtype}")
    smallest, biggest = values.min(), values.max()
    if count > 1 and smallest == biggest:  # one value in every row: rendered once, broadcast
        single = np.frombuffer(str(int(smallest)).encode(), dtype=np.uint8)
        return np.broadcast_to(single, (count, len(single)))
    negative: npt.NDArray[np.bool_] | None = None
    if values.dtype.kind == "i":
        if smallest < 0:
            negative = values < 0
            magnitude = values.astype(np.uint64)
            magnitude[negative] = np.uint64(0) - magnitude[negative]  # two's complement, int64 min included
        else:
            magnitude = values.astype(np.uint64)
    else:
        magnitude = values
    largest = int(biggest) if negative is None else int(magnitude.max())
    chunks = 1
    while largest >= 10_000**chunks:
        chunks += 1
    sign = 0 if negative is None else 1
    words = np.empty((count, sign + chunks), dtype=np.uint32)
    if sign:
        words[:, 0] = _BLANK_WORD
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
        rows = np.flatnonzero(negative)
        first_digit = (out[rows] != PAD).argmax(axis=1)  # the sign word leaves a space before it
        out[rows, first_digit - 1] = ord("-")
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


_HEX_UPPER = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)


def render_mac(values: npt.NDArray[Any], *, ecs: bool = False) -> npt.NDArray[np.uint8]:
    """48-bit MAC addresses (in a uint64 array) as quoted text: `"aa:bb:cc:dd:ee:ff"`, or as
    ECS writes them, `"AA-BB-CC-DD-EE-FF"`."""
    octets = values.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 2:]
    digits = _HEX_UPPER if ecs else _HEX
    out = np.empty((len(values), 19), dtype=np.uint8)
    out[:, 0] = out[:, 18] = ord('"')
    out[:, 3:18:3] = ord("-" if ecs else ":")
    out[:, 1:18:3] = digits[octets >> 4]
    out[:, 2:18:3] = digits[octets & 15]
    return out


def mac_texts(values: npt.NDArray[Any], *, ecs: bool = False) -> list[str]:
    """The same as Python strings."""
    if ecs:
        return [value.to_bytes(6, "big").hex("-").upper() for value in values.tolist()]
    return [value.to_bytes(6, "big").hex(":") for value in values.tolist()]


def _octet_texts(suffix: str) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """Per octet value: its digits and `suffix` as a little-endian word (the text in the low
    bytes), and the text's length in bits."""
    texts = [f"{v}{suffix}".encode() for v in range(256)]
    words = np.array([int.from_bytes(t, "little") for t in texts], dtype=np.uint64)
    return words, np.array([8 * len(t) for t in texts], dtype=np.uint64)


def _octet_pairs(second_suffix: str) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """Per 16-bit value: `a.b` + `second_suffix` (a dot, or the closing quote) packed into one
    little-endian word (at most 8 bytes), and its length in bits."""
    first, first_bits = _octet_texts(".")
    second, second_bits = _octet_texts(second_suffix)
    words = first[:, None] | (second[None, :] << first_bits[:, None])
    return words.reshape(-1), (first_bits[:, None] + second_bits[None, :]).reshape(-1)


_PAIRS_DOT = _octet_pairs(".")
_PAIRS_QUOTE = _octet_pairs('"')
_SPACES_FROM = np.array([int.from_bytes(bytes(k) + b" " * (8 - k), "little") for k in range(9)], dtype=np.uint64)
"""Index k: a little-endian word with spaces in its bytes from k on."""
_SIXTY_FOUR = np.uint64(64)
_THREE = np.uint64(3)


def render_ipv4(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """A uint32 array of IPv4 addresses as quoted dotted quads, left-aligned.

    Each half of the address (`a.b.` and `c.d"`, 4-8 bytes) comes from a table of 65,536 words;
    the second is shifted in after the first's length, so the text is in one piece across two
    64-bit words and spaces follow it.
    """
    numbers = values.astype(np.uint32)
    first = (numbers >> 16).astype(np.intp)
    second = (numbers & 0xFFFF).astype(np.intp)
    head, head_bits = np.take(_PAIRS_DOT[0], first), np.take(_PAIRS_DOT[1], first)  # 32-64 bits
    tail, tail_bits = np.take(_PAIRS_QUOTE[0], second), np.take(_PAIRS_QUOTE[1], second)
    words = np.empty((len(values), 2), dtype="<u8")
    # numpy defines a shift by the full width as 0, so a head of 64 bits takes nothing of the tail
    words[:, 0] = head | (tail << head_bits)
    words[:, 1] = (tail >> (_SIXTY_FOUR - head_bits)) | np.take(
        _SPACES_FROM, (head_bits + tail_bits - _SIXTY_FOUR) >> _THREE
    )
    out = np.empty((len(values), 17), dtype=np.uint8)
    out[:, 0] = ord('"')
    out[:, 1:] = words.view(np.uint8)
    return out


IPV6_BYTES = 16
IPV6_DTYPE = np.dtype(f"V{IPV6_BYTES}")
"""IPv6 addresses as array elements: their 16 bytes in network order."""


class Ipv6Texts:
    """The text of a column of 16-byte IPv6 addresses (a `V16` array), in the form
    `socket.inet_ntop` gives (RFC 5952): each distinct address formatted once by the C library,
    shared by the column's rendering and its Python values (`address_columns.ipv6_column`)."""

    __slots__ = ("_found", "_texts", "array")

    def __init__(self, array: npt.NDArray[Any]) -> None:
        self.array = array
        self._found: tuple[npt.NDArray[Any], npt.NDArray[np.intp]] | None = None
        self._texts: list[str] | None = None

    def distinct(self) -> tuple[npt.NDArray[Any], npt.NDArray[np.intp]]:
        if self._found is None:
            self._found = unique_inverse(self.array)
        return self._found

    def distinct_texts(self) -> list[str]:
        if self._texts is None:
            self._texts = ipv6_texts(self.distinct()[0])
        return self._texts

    def render(self, _array: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
        """Quoted and left-aligned, one row per address."""
        quoted = [b'"' + text.encode() + b'"' for text in self.distinct_texts()]
        return np.take(render_fragments(quoted), self.distinct()[1], axis=0)

    def convert(self, elements: npt.NDArray[Any]) -> list[str]:
        """The texts of `elements`: the column's array, its distinct addresses, or others."""
        if elements is self.array:
            texts = self.distinct_texts()
            return [texts[i] for i in self.distinct()[1].tolist()]
        if self._found is not None and elements is self._found[0]:
            return self.distinct_texts()
        return ipv6_texts(elements)


def ipv6_texts(addresses: npt.NDArray[Any]) -> list[str]:
    """16-byte IPv6 addresses as `socket.inet_ntop` writes them (`records.ipv6_string`, whose
    cache keeps the texts of busy addresses between batches)."""
    return list(map(ipv6_string, addresses.tolist()))


"""9999-12-31T23:59:59.999Z: four-digit years only (`timestamps.iso_from_ms` covers the rest)."""


_MILLIS = np.frombuffer(b"".join(f'.{v:03d}Z"'.encode() for v in range(1000)), np.uint8).reshape(1000, 6)
"""`.mmmZ"` for every millisecond."""


def render_iso_ms(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8] | None:
    """Epoch milliseconds as quoted `YYYY-MM-DDTHH:MM:SS.mmmZ`; None when a value is out of range.

    Each distinct second is formatted once (a batch spans few); milliseconds come from a table.
    """
    count = len(values)
    if count and (values.min() < FIRST_MS or values.max() > LAST_MS):
        return None
    seconds, millis = np.divmod(values.astype(np.int64), 1000)
    distinct, inverse = unique_inverse(seconds)
    prefixes = np.empty((len(distinct), 20), dtype=np.uint8)
    prefixes[:, 0] = ord('"')
    prefixes[:, 1:20] = distinct.astype("datetime64[s]").astype("S19").view(np.uint8).reshape(-1, 19)
    out = np.empty((count, 26), dtype=np.uint8)
    out[:, :20] = np.take(prefixes, inverse, axis=0)
    out[:, 20:] = np.take(_MILLIS, millis, axis=0)
    return out
