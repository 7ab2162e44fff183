"""A bounds-checked big-endian reader over a memoryview.

Every set, record and sample is read through a `Reader` restricted to its declared length, so
an over-read raises `TruncatedError` instead of an IndexError or a silent short value.
"""

from __future__ import annotations

import struct

from flowd.errors import TruncatedError

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


class Reader:
    """Cursor over `data[start:end]`; reads never cross `end`."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes | memoryview, start: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end
        if self.end > len(data) or start > self.end:
            raise TruncatedError("reader bounds exceed the data", offset=start)

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def need(self, count: int) -> int:
        """Check that `count` bytes remain and return the current offset."""
        pos = self.pos
        if count < 0 or pos + count > self.end:
            raise TruncatedError(f"need {count} bytes at offset {pos}, {self.end - pos} left", offset=pos)
        return pos

    def u8(self) -> int:
        pos = self.need(1)
        self.pos = pos + 1
        return self.data[pos]

    def u16(self) -> int:
        pos = self.need(2)
        self.pos = pos + 2
        value: int = _U16.unpack_from(self.data, pos)[0]
        return value

    def u32(self) -> int:
        pos = self.need(4)
        self.pos = pos + 4
        value: int = _U32.unpack_from(self.data, pos)[0]
        return value

    def u64(self) -> int:
        pos = self.need(8)
        self.pos = pos + 8
        value: int = _U64.unpack_from(self.data, pos)[0]
        return value

    def take(self, count: int) -> bytes:
        pos = self.need(count)
        self.pos = pos + count
        return bytes(self.data[pos : pos + count])

    def skip(self, count: int) -> None:
        self.pos = self.need(count) + count

    def sub(self, length: int) -> Reader:
        """A reader over the next `length` bytes; this reader moves past them."""
        pos = self.need(length)
        self.pos = pos + length
        return Reader(self.data, pos, pos + length)
