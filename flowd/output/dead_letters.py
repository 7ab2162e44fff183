"""The dead-letter file: documents the cluster refused for their content, with its reason.

One NDJSON line per document (`bulk.dead_letter_line`): the document, the HTTP status and the
server's error, and when; an append is whole lines or none, so a failed one spoils no other
record. The file is capped; past the cap, and when the disk fails, the documents are counted as
not written rather than sent again: the cluster's answer stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from flowd.output.bulk import Unserialisable, dead_letter_line
from flowd.output.es_stats import SinkStats
from flowd.output.es_transport import error_reason
from flowd.output.timestamps import iso_from_seconds

_log = logging.getLogger("flowd.output.elasticsearch")  # the sink's lines keep their name after the split


class DeadLetterFile:
    """Appends rejected documents to `path` (shared by a sink's workers) and counts them."""

    def __init__(self, path: Path, max_bytes: int, stats: SinkStats, wall_clock: Callable[[], float]) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._stats = stats
        self._wall_clock = wall_clock
        self._thread_lock = threading.Lock()

    async def add(self, rejected: list[tuple[bytes, int, Any]]) -> None:
        """Append (document, status, server error) lines to the dead-letter file, while it is
        under its cap; one log line per call. The cluster's answer stands whatever the file does:
        a disk error counts the documents as not written, and never sends their batch again
        (its other documents would be counted twice, its rejected ones dead-lettered twice).
        They are counted once the write has ended, which a worker's cancel waits for
        (`finish_uncancelled`): its batch is done with, never given back to be sent again."""
        at = iso_from_seconds(self._wall_clock())
        lines = b"".join(dead_letter_line(document, status, error, at) for document, status, error in rejected)
        try:
            written = await asyncio.to_thread(self.append, lines)
            outcome = "written to" if written else "not written (the file is at elasticsearch.dead_letter_max_bytes):"
        except OSError as failure:
            written, outcome = False, f"not written ({failure}):"
        self._stats.docs_dead_lettered += len(rejected)
        if not written:
            self._stats.dead_letters_unwritten += len(rejected)
        _document, status, error = rejected[0]
        _log.warning(
            "%d documents rejected (first: HTTP %d %s); %s %s",
            len(rejected),
            status,
            error_reason({"error": error}),
            outcome,
            self.path,
        )

    async def add_unserialisable(self, rejected: list[Unserialisable]) -> None:
        """Documents the encoder could not serialise: kept as best JSON can say them (status 0)."""
        for item in rejected:
            try:
                document = orjson.dumps(item.document, default=repr, option=orjson.OPT_NON_STR_KEYS)
            except orjson.JSONEncodeError:
                document = orjson.dumps(repr(item.document))
            await self.add([(document, 0, {"type": "serialization_error", "reason": item.reason})])

    def append(self, lines: bytes) -> bool:
        """False, writing nothing, when the file is at its cap. The first rejections show the
        cause; the same cause goes on rejecting, and the disk is the spool's too. Workers share
        the file, so each may go past the cap by one call's lines.

        Whole lines or none: an append the disk cuts short (full, quota) is truncated back, since
        a half line would swallow the next record too; a file left mid-line (a run killed while
        appending, a truncate refused) gets a newline first. Worker processes share the file: an
        exclusive lock keeps each append, and its taking back, to itself. A lock not had within
        `LOCK_WAIT_S` (another program holds it) is an OSError, the documents counted unwritten:
        a worker's cancel waits for this append, and must not wait for ever."""
        with self._thread_lock:  # flock is per process where it is emulated (NFS)
            return self._append(lines)

    def _append(self, lines: bytes) -> bool:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            _lock(fd)
            size = os.fstat(fd).st_size
            if size >= self.max_bytes:
                return False
            data = memoryview(b"\n" + lines if size and os.pread(fd, 1, size - 1) != b"\n" else lines)
            written = 0
            try:
                while written < len(data):
                    written += os.write(fd, data[written:])
            except OSError:
                with contextlib.suppress(OSError):  # best effort: the next append starts a new line anyway
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)  # and with it the lock
        return True


LOCK_WAIT_S = 2.0
"""How long an append waits for the dead-letter file's lock (flowd's own appends take
milliseconds; a longer hold is someone else's)."""


def _lock(fd: int) -> None:
    """An exclusive flock on `fd`, tried until `LOCK_WAIT_S` has passed, then OSError."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise BlockingIOError(errno.EWOULDBLOCK, "the dead-letter file is locked by another process") from None
            time.sleep(0.01)
