"""A bounded disk buffer of `_bulk` bodies for when the cluster is away longer than memory lasts.

One file per batch, named `<wall-clock ns>-<sequence>-<docs>.ndjson` so that sorting the names is
oldest-first order, across restarts too. Each file is written to a `.tmp` name, fsynced and renamed,
so a crash leaves either the whole batch or nothing (stale `.tmp` files are removed at start).
The body keeps its action lines and their `_id`s, so a replay of a batch the cluster already has
(flowd died between the cluster's answer and the file's removal) is answered 409 and not indexed twice.
A file the disk would not let go once its batch was delivered is kept as a leftover: never replayed
in this run, deleted once the disk lets it (`DiskErrors` paces the tries), or replayed at the next start.

The methods do blocking file I/O; the sink calls them in a worker thread (`finish_in_thread`).
Bookkeeping (what is queued, claimed, how many bytes) is updated synchronously under the caller's
event loop, and follows what the thread did to the files, also when its caller was cancelled.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from flowd.durable import write_atomically
from flowd.output.sink import Body

_log = logging.getLogger(__name__)

DISK_ERROR_LOG_INTERVAL_S = 60.0
"""At most one log line per kind of spool file error (write, read, delete, shrink) in this time."""
NEAR_CAP_FRACTION = 0.8
"""Warn once the spool holds this share of its cap; warn again after it has fallen below half."""
SUFFIX = ".ndjson"
T = TypeVar("T")


@dataclass(slots=True, frozen=True)
class SpoolEntry:
    name: str
    nbytes: int
    docs: int
    created_s: float
    """Wall-clock seconds since the epoch when the batch was spooled."""


class SpoolFull(Exception):
    """The batch would take the spool past its cap."""


class StrandedCopy(OSError):
    """`Spool.shrink` wrote the smaller file, then could delete neither the original nor it."""

    def __init__(self, copy: SpoolEntry, error: OSError) -> None:
        super().__init__(error.errno, f"{error.strerror}; {copy.name} left beside it")
        self.copy = copy


class Spool:
    """Spooled batches in a directory, oldest first, at most `max_bytes` in total.

    The methods marked blocking do file work only and run in a thread; the bookkeeping (queue,
    claims, byte count) is changed on the event loop alone, since a thread switch in the middle
    of `_bytes += ...` would lose an update the loop made meanwhile.
    """

    def __init__(self, directory: str | Path, max_bytes: int, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._wall_clock = wall_clock
        self._queued: deque[SpoolEntry] = deque()
        self._claimed: dict[str, SpoolEntry] = {}
        self._leftovers: dict[str, SpoolEntry] = {}
        """Files of batches done with that could not be deleted: never replayed in this run, their
        bytes counted while they are on disk, deleted when the disk lets us (`delete_leftovers`)."""
        self._bytes = 0
        self._sequence = 0
        self._warned = False
        self.spooled_batches = 0
        self.spooled_docs = 0

    def scan(self) -> list[SpoolEntry]:
        """Adopt the batch files a previous run left (blocking); removes partial `.tmp` files."""
        self.directory.mkdir(parents=True, exist_ok=True)
        found: list[SpoolEntry] = []
        for path in sorted(self.directory.iterdir()):
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                continue
            entry = self._entry_for(path)
            known = entry is not None and (entry.name in self._claimed or entry.name in self._leftovers)
            if entry is not None and not known and entry not in self._queued:
                found.append(entry)
        for entry in found:
            self._queued.append(entry)
            self._bytes += entry.nbytes
        if found:
            self._sequence = max(self._sequence, 1 + max(_sequence_of(e.name) for e in found))
        return found

    def _entry_for(self, path: Path) -> SpoolEntry | None:
        parts = path.name.removesuffix(SUFFIX).split("-")
        if not path.name.endswith(SUFFIX) or len(parts) != 3 or not all(p.isdigit() for p in parts):
            return None
        return SpoolEntry(path.name, path.stat().st_size, int(parts[2]), int(parts[0]) / 1e9)

    @property
    def nbytes(self) -> int:
        """Bytes on disk, claimed files and leftovers included."""
        return self._bytes

    @property
    def batches(self) -> int:
        return len(self._queued) + len(self._claimed)

    @property
    def docs(self) -> int:
        return sum(e.docs for e in self._queued) + sum(e.docs for e in self._claimed.values())

    def oldest_age_s(self) -> float:
        created = [e.created_s for e in self._claimed.values()]
        if self._queued:
            created.append(self._queued[0].created_s)
        return max(0.0, self._wall_clock() - min(created)) if created else 0.0

    def has_ready(self) -> bool:
        return bool(self._queued)

    def reserve(self, body: Body, docs: int) -> SpoolEntry:
        """Account for a batch and name its file; `write` then puts it on disk. Raises SpoolFull."""
        if self._bytes + len(body) > self.max_bytes:
            raise SpoolFull(f"spool at {self._bytes} of {self.max_bytes} bytes")
        created = self._wall_clock()
        name = f"{int(created * 1e9):020d}-{self._sequence:09d}-{docs}{SUFFIX}"
        self._sequence += 1
        self._bytes += len(body)
        self.spooled_batches += 1
        self.spooled_docs += docs
        self._check_cap()
        return SpoolEntry(name, len(body), docs, created)

    def write(self, entry: SpoolEntry, body: Body) -> None:
        """Blocking: write the file whole or not at all (`durable.write_atomically`, the directory
        synced too)."""
        write_atomically(self.directory / entry.name, body, sync_directory=True)

    def commit(self, entry: SpoolEntry) -> None:
        """The file is on disk: it may be replayed. Files reach the queue in reservation order."""
        self._queued.append(entry)
        if len(self._queued) > 1 and self._queued[-2].name > entry.name:
            self._queued = deque(sorted(self._queued, key=lambda e: e.name))

    def abandon(self, entry: SpoolEntry) -> None:
        """Writing the file failed: give the reservation back."""
        self._bytes -= entry.nbytes
        self.spooled_batches -= 1
        self.spooled_docs -= entry.docs

    def written(self, entry: SpoolEntry, done: asyncio.Future[None]) -> None:
        """`write` has ended (`finish_in_thread`): `commit`, or `abandon` if it raised."""
        if done.exception() is None:
            self.commit(entry)
        else:
            self.abandon(entry)

    def holds(self, entry: SpoolEntry) -> bool:
        """Whether the batch is spooled: queued or claimed."""
        return entry.name in self._claimed or entry in self._queued

    def claim(self) -> SpoolEntry | None:
        """The oldest queued batch, now owned by the caller until `release` or `remove`."""
        if not self._queued:
            return None
        entry = self._queued.popleft()
        self._claimed[entry.name] = entry
        return entry

    def read(self, entry: SpoolEntry) -> bytes:
        """Blocking."""
        return (self.directory / entry.name).read_bytes()

    def release(self, entry: SpoolEntry) -> None:
        """Not sent after all: back to the front of the queue."""
        if self._claimed.pop(entry.name, None) is not None:
            self._queued.appendleft(entry)

    def delete(self, entry: SpoolEntry) -> None:
        """Blocking: the batch's file goes (the cluster has every document); `remove` then."""
        (self.directory / entry.name).unlink(missing_ok=True)

    def remove(self, entry: SpoolEntry) -> None:
        """The batch is gone: its bytes leave the count."""
        if self._claimed.pop(entry.name, None) is not None:
            self._bytes -= entry.nbytes
        self._check_cap()

    def keep_leftover(self, entry: SpoolEntry) -> None:
        """The claimed batch is done with (the cluster has it) but its file could not be deleted:
        it leaves the queue for good, and its bytes stay counted while the file is on disk."""
        if self._claimed.pop(entry.name, None) is not None:
            self._leftovers[entry.name] = entry

    def leftovers(self) -> list[SpoolEntry]:
        return list(self._leftovers.values())

    def delete_leftovers(self, entries: list[SpoolEntry]) -> tuple[list[SpoolEntry], OSError | None]:
        """Blocking: delete the leftover files, up to the first that fails (the disk still
        refuses: the rest would too); the ones deleted, for `forget`, and that failure."""
        deleted: list[SpoolEntry] = []
        for entry in entries:
            try:
                self.delete(entry)
            except OSError as error:
                return deleted, error
            deleted.append(entry)
        return deleted, None

    def forget(self, leftovers: list[SpoolEntry]) -> None:
        """Leftover files deleted (`delete_leftovers`): their bytes leave the count."""
        for entry in leftovers:
            if self._leftovers.pop(entry.name, None) is not None:
                self._bytes -= entry.nbytes
        self._check_cap()

    def shrink(self, entry: SpoolEntry, body: Body, docs: int) -> SpoolEntry:
        """Blocking: write the documents still to send as the batch's file, under the same
        position in the queue, and delete the original; `replace` then. One of the two stays:
        when the smaller file cannot be written, or the original cannot be deleted (the smaller
        is then deleted again), this raises, and the original stays, whole, for `release`.
        Should the smaller file not go either, `StrandedCopy` names it, for `keep_stranded`.

        Not written over the original's name, though a rename cannot leave two files: the name
        holds the count of documents, which a restart takes as the batch's; a smaller body under
        it would never match the cluster's answer (retried whole, forever)."""
        head = entry.name.rsplit("-", 1)[0]
        smaller = SpoolEntry(f"{head}-{docs}{SUFFIX}", len(body), docs, entry.created_s)
        self.write(smaller, body)
        if smaller.name == entry.name:
            return smaller
        try:
            (self.directory / entry.name).unlink(missing_ok=True)
        except OSError as error:
            try:
                (self.directory / smaller.name).unlink(missing_ok=True)
            except OSError:
                raise StrandedCopy(smaller, error) from error
            raise
        return smaller

    def keep_stranded(self, copy: SpoolEntry) -> None:
        """A file `shrink` wrote and could not delete again: a leftover, deleted later; its bytes
        join the count (they were never reserved)."""
        if copy.name not in self._leftovers:
            self._leftovers[copy.name] = copy
            self._bytes += copy.nbytes
            self._check_cap()

    def replace(self, entry: SpoolEntry, smaller: SpoolEntry) -> None:
        """`smaller` (`shrink`) takes the claimed `entry`'s place at the front of the queue."""
        self._claimed.pop(entry.name, None)
        self._bytes += smaller.nbytes - entry.nbytes
        self._queued.appendleft(smaller)

    def _check_cap(self) -> None:
        if not self._warned and self._bytes >= NEAR_CAP_FRACTION * self.max_bytes:
            self._warned = True
            _log.warning(
                "spool %s is near its cap: %d of %d bytes (%d batches); the cluster has been unreachable",
                self.directory,
                self._bytes,
                self.max_bytes,
                self.batches,
            )
        elif self._warned and self._bytes < self.max_bytes / 2:
            self._warned = False


async def finish_in_thread(then: Callable[[asyncio.Future[T]], None], work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` in a thread; once it has ended, `then(done)` on the event loop with its
    future; then its result, or its exception.

    Cancelling the caller does not stop the thread (`asyncio.to_thread` cannot), so the bookkeeping
    must follow what the thread did, not the cancel: a cancel waits for the thread and is raised
    after `then`, which leaves the caller's cancel handler a spool that matches its files."""
    done = asyncio.get_running_loop().run_in_executor(None, functools.partial(work, *args))
    try:
        return await finish_uncancelled(done)
    finally:
        then(done)


async def finish_uncancelled(work: Awaitable[T]) -> T:
    """`work`'s result, or its exception; a cancel of the caller meanwhile waits for `work` to end
    and is raised then. For work that must not be left half done: once it has started, the
    caller's cancel handler finds it finished (unlike `asyncio.shield`, which returns at once)."""
    done = asyncio.ensure_future(work)
    cancel: asyncio.CancelledError | None = None
    while not done.done():
        try:
            await asyncio.wait([done])  # unlike `await done`, a cancel here leaves `done` running
        except asyncio.CancelledError as error:
            cancel = error
    if cancel is not None:  # the cancel wins; an error of `work` goes with it, as its cause
        raise cancel from (None if done.cancelled() else done.exception())
    return done.result()


class DiskErrors:
    """Spool files that cannot be read, shrunk or deleted (EIO, EACCES, EROFS): an error of the
    disk, not of the cluster, so it has a back-off of its own, for retrying the file work, while
    documents in memory are still sent. Every spool file error, a refused write too, is logged
    without a traceback, once a minute at most per operation (a disk that refuses goes on
    refusing, batch after batch, for as long as an outage lasts)."""

    def __init__(self, delay_s: Callable[[int], float], clock: Callable[[], float]) -> None:
        self._delay_s = delay_s
        self._clock = clock
        self._failures = 0
        self.retry_at = 0.0
        """No leftover file is deleted again before then."""
        self.replay_at = 0.0
        """No spooled batch is claimed before then: one the disk could not read or split waits."""
        self._logged_at: dict[str, float] = {}
        self._held: dict[str, int] = {}
        """Lines held back per operation since its last line; the keys are flowd's, a fixed few."""

    def failed(self, operation: str, name: str, error: OSError, consequence: str, *, hold_replay: bool) -> None:
        """`hold_replay` when the batch went back to the queue: replaying it at once would fail
        again at once. A delivered batch's file that stays is no reason to hold back the others."""
        now = self._clock()
        self.retry_at = now + self._delay_s(self._failures)
        if hold_replay:
            self.replay_at = self.retry_at
        self._failures += 1
        self.log(operation, name, error, consequence)

    def log(self, operation: str, name: str, error: OSError, consequence: str) -> None:
        """One line for the failure, unless `operation` had one within the interval: then it is
        counted, and the next line says how many were held back. Alone (no back-off) for a refused
        write: its batch stays in memory, and is tried again when memory next has to make room."""
        now = self._clock()
        last = self._logged_at.get(operation)
        if last is not None and now - last < DISK_ERROR_LOG_INTERVAL_S:
            self._held[operation] = self._held.get(operation, 0) + 1
            return
        self._logged_at[operation] = now
        held = self._held.pop(operation, 0)
        _log.error(
            "spool: cannot %s %s: %s; %s%s",
            operation,
            name,
            error,
            consequence,
            f" ({held} more such errors since the last line)" if held else "",
        )

    def recovered(self) -> None:
        """A spool file was deleted: the disk works, the back-off starts over."""
        self._failures = 0
        self.retry_at = self.replay_at = 0.0


def adopt_orphans(base: Path, own: Path, workers: int) -> int:
    """Move into `own` the batch files of `base` itself (an earlier version's shared spool) and of
    `base/worker-N` for N >= `workers` (a run with more workers); returns how many. Blocking; for
    worker 0 at start, before any worker writes (the names sort by time, so the queue order holds)."""
    sources = [base]
    try:
        sources += [p for p in base.iterdir() if p.is_dir() and _worker_number(p.name) >= workers]
    except OSError:
        return 0
    moved = 0
    for source in sources:
        for path in sorted(source.glob(f"*{SUFFIX}")):
            own.mkdir(parents=True, exist_ok=True)
            if (own / path.name).exists():  # names hold the time in ns: never in practice
                continue
            try:
                os.replace(path, own / path.name)
            except OSError as error:
                _log.error("cannot take over spooled batch %s: %s", path, error)
                continue
            moved += 1
    if moved:
        _log.info("took over %d spooled batches left by a run with other workers in %s", moved, base)
    return moved


def _worker_number(name: str) -> int:
    prefix, _, number = name.partition("-")
    return int(number) if prefix == "worker" and number.isdigit() else -1


def _sequence_of(name: str) -> int:
    return int(name.split("-")[1])
