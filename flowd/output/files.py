"""NDJSON file output: the embedded default when no Elasticsearch cluster is configured.

One document per line (orjson), in `<directory>/flows-YYYYMMDD-HHMMSS-<worker>.ndjson`; a new
file starts when the current one would pass `rotate_bytes`. `flush()` writes the buffer and
fsyncs, so what was written before it survives a crash of the process or the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import IO, Any

import orjson

from flowd.errors import SinkError
from flowd.output.sink import Body

FILE_PREFIX = "flows-"
FILE_SUFFIX = ".ndjson"


def _dumps_line(document: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(document) + b"\n"
    except orjson.JSONEncodeError:
        # A value JSON-from-orjson cannot hold (an integer beyond 64 bits from a hostile
        # exporter's 16-byte counter): write it as a string rather than lose the document.
        return orjson.dumps(_jsonable(document)) + b"\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return str(value)


class NdjsonFileSink:
    """Sink writing NDJSON files, rotated by size. `clock` names files (injectable for tests)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        worker: int = 0,
        rotate_bytes: int = 256 * 1024 * 1024,
        clock: Any = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.worker = worker
        self.rotate_bytes = rotate_bytes
        self._clock = clock
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._size = 0
        self.documents_written = 0
        self.files_opened: list[Path] = []

    def describe(self) -> str:
        return f"NDJSON files in {self.directory.resolve()} (rotated at {self.rotate_bytes} bytes)"

    async def start(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SinkError(f"cannot create output directory {self.directory}: {error.strerror}") from error

    async def write(self, documents: list[dict[str, Any]]) -> None:
        if not documents:
            return
        data = b"".join(_dumps_line(document) for document in documents)
        try:
            self._write_bytes(data)
        except OSError as error:
            raise SinkError(f"cannot write {self._path}: {error.strerror}") from error
        self.documents_written += len(documents)

    async def write_encoded(self, body: Body, count: int) -> None:
        """`count` documents already serialised as NDJSON lines."""
        if not count:
            return
        try:
            self._write_bytes(body)
        except OSError as error:
            raise SinkError(f"cannot write {self._path}: {error.strerror}") from error
        self.documents_written += count

    def _write_bytes(self, data: Body) -> None:
        """Append `data` whole or not at all: a write the disk cuts short (full, quota) is
        truncated away, so the caller's retry of the whole body leaves no duplicate nor half line."""
        if self._file is None or (self._size and self._size + len(data) > self.rotate_bytes):
            self._rotate()
        handle = self._file
        assert handle is not None
        view = memoryview(data).cast("B")
        written = 0
        try:
            while written < len(view):
                written += handle.write(view[written:]) or 0
        except OSError:
            if written:
                try:
                    os.ftruncate(handle.fileno(), self._size)
                    handle.seek(self._size)
                except OSError:  # cannot take it back: the next write goes to a fresh file
                    self._abandon()
            raise
        self._size += written

    def _rotate(self) -> None:
        """A new file, opened before the old one is closed: a failed open leaves the old one in use."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(self._clock()))
        path = self.directory / f"{FILE_PREFIX}{stamp}-{self.worker}{FILE_SUFFIX}"
        serial = 1
        while path.exists():  # several rotations within one second: never append to an old file
            path = self.directory / f"{FILE_PREFIX}{stamp}-{self.worker}.{serial}{FILE_SUFFIX}"
            serial += 1
        opened = path.open("xb", buffering=0)
        old, self._file = self._file, opened
        self._path = path
        self._size = 0
        self.files_opened.append(path)
        if old is not None:
            self._sync_and_close(old)

    def _abandon(self) -> None:
        """Stop writing to the current file (its tail could not be taken back)."""
        handle, self._file = self._file, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()

    @staticmethod
    def _sync_and_close(handle: IO[bytes]) -> None:
        try:
            os.fsync(handle.fileno())
        finally:
            handle.close()

    async def flush(self) -> None:
        handle = self._file
        if handle is None:
            return
        try:
            await asyncio.to_thread(os.fsync, handle.fileno())
        except OSError as error:
            raise SinkError(f"cannot flush {self._path}: {error.strerror}") from error

    async def close(self, timeout_s: float | None = None) -> None:
        if self._file is not None:
            try:
                self._sync_and_close(self._file)
            except OSError as error:
                raise SinkError(f"cannot close {self._path}: {error.strerror}") from error
            self._file = None
