"""The Elasticsearch sink's side of its disk spool after a batch is spooled: the file work of
replay, and the books kept after it (the sink itself spools batches, `_spool_batch`, since a
cancel there puts the batch back in its memory; and adopts earlier runs' files at start).

A spooled batch is read back for replay, deleted once the cluster has answered for it, shrunk to
the part to be sent again, or taken back into memory when split after a 413. Each file operation
runs in a thread (`finish_in_thread`); the spool's bookkeeping changes on the event loop once it
has ended, whether or not its caller was cancelled meanwhile, so that the books always match the
files. A disk that refuses is the disk's error (`DiskErrors`: its own back-off, a log line without
a traceback), never the cluster's, and never a reason to send a batch twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

from flowd.output.bulk import Batch
from flowd.output.es_stats import SinkStats
from flowd.output.sink import Body
from flowd.output.spool import DiskErrors, Spool, SpoolEntry, StrandedCopy, finish_in_thread

_log = logging.getLogger("flowd.output.elasticsearch")  # the sink's lines keep their name after the split

DELIVERED_UNDELETED = "its batch was delivered; deleting the file is tried again later"


class SpoolKeeper:
    """Does a sink's replay file work and keeps the spool's books after it. The sink claims
    entries and releases those it does not send; `read` and `take_back` release an entry whose
    file the disk would not read or delete, for a later try."""

    def __init__(self, spool: Spool, disk: DiskErrors, stats: SinkStats, clock: Callable[[], float]) -> None:
        self._spool = spool
        self._disk = disk
        self._stats = stats
        self._clock = clock
        self._deleting_leftovers = False

    def gauges(self) -> dict[str, Any]:
        """The spool's part of the sink's stats."""
        snapshot: dict[str, Any] = {}
        snapshot["batches_spooled"] = self._spool.spooled_batches
        snapshot["docs_spooled"] = self._spool.spooled_docs
        snapshot["spool_bytes"] = self._spool.nbytes
        snapshot["spool_batches"] = self._spool.batches
        snapshot["spool_docs"] = self._spool.docs
        snapshot["spool_oldest_age_seconds"] = self._spool.oldest_age_s()
        snapshot["spool_max_bytes"] = self._spool.max_bytes
        return snapshot

    async def read(self, entry: SpoolEntry) -> Batch | None:
        """The claimed batch from its file; None when the file is gone (its documents are lost,
        counted: `lost`) or the disk refused (the batch is back in the queue, replayed after the
        disk's back-off)."""
        try:
            body = await asyncio.to_thread(self._spool.read, entry)
        except FileNotFoundError:
            self.lost(entry)
            return None
        except OSError as error:
            self._spool.release(entry)
            self._disk.failed("read", entry.name, error, "it stays spooled, to be read again", hold_replay=True)
            return None
        return Batch(body, entry.docs, entry.created_s, entry.name)

    async def delete_leftovers(self, *, now: bool = False) -> None:
        """Once the disk's back-off is over (or `now`, at close), the files of delivered batches
        that could not be deleted are tried again, by one worker at a time."""
        leftovers = self._spool.leftovers()
        if not leftovers or self._deleting_leftovers or not (now or self._clock() >= self._disk.retry_at):
            return
        self._deleting_leftovers = True
        try:
            deleted, error = await finish_in_thread(self._forget, self._spool.delete_leftovers, leftovers)
        finally:
            self._deleting_leftovers = False
        if error is not None:
            name = leftovers[len(deleted)].name
            self._disk.failed("delete", name, error, DELIVERED_UNDELETED, hold_replay=False)
        else:
            self._disk.recovered()

    def lost(self, entry: SpoolEntry) -> None:
        """A claimed batch's file vanished before its replay (removed by hand, or a disk gone):
        its documents are lost, counted."""
        self._stats.docs_spool_lost += entry.docs
        self._spool.remove(entry)
        _log.error("spool file %s vanished before replay: %d documents lost", entry.name, entry.docs)

    async def take_back(self, entry: SpoolEntry) -> None:
        """A spooled batch split after a 413 leaves the spool for memory once its file is deleted.
        When it cannot be, the batch stays spooled, whole, to be split again from its file after
        the disk's back-off (the caller checks `Spool.holds`)."""
        try:
            await finish_in_thread(functools.partial(self._gone, entry, False), self._spool.delete, entry)
        except OSError as error:
            self._spool.release(entry)
            self._disk.failed(
                "delete", entry.name, error, "the batch stays spooled, whole, to be split again", hold_replay=True
            )

    async def shrink(self, entry: SpoolEntry, body: Body, docs: int) -> None:
        """The claimed batch's file keeps only the `docs` documents of `body`, to be sent again;
        the others, answered, have left the spool (`_shrunk`)."""
        shrunk = functools.partial(self._shrunk, entry, docs)  # the rest stays, for another attempt
        try:
            await finish_in_thread(shrunk, self._spool.shrink, entry, body, docs)
        except OSError as error:
            self._disk.failed("shrink", entry.name, error, "the batch stays whole, to be sent again", hold_replay=False)

    def _replayed(self, docs: int, *, whole: bool) -> None:
        """Spooled documents the cluster answered for (or, split after a 413, taken back into
        memory): they have left the spool. An attempt that failed is not a replay, or every probe
        of an outage would count its batch again, and the replayed total outgrow the spooled one."""
        self._stats.docs_replayed += docs
        if whole:
            self._stats.batches_replayed += 1

    async def delete_answered(self, entry: SpoolEntry) -> None:
        """A spooled batch the cluster answered for: its file goes, then its bytes leave the
        spool's count and its documents count as replayed (`_gone`). A file that cannot be deleted
        is kept as a leftover, deleted later: the batch is done with all the same, never sent
        again (its documents would be counted twice) nor counted as a failure of the cluster."""
        with contextlib.suppress(OSError):  # `_gone` has dealt with it
            await finish_in_thread(functools.partial(self._gone, entry, True), self._spool.delete, entry)

    def _gone(self, entry: SpoolEntry, answered: bool, done: asyncio.Future[None]) -> None:
        """On the loop once the file's removal ended, whether or not its caller was cancelled; a
        batch taken back into memory (not `answered`) stays spooled when its file stays."""
        error = done.exception()
        if error is None:
            self._spool.remove(entry)
            self._disk.recovered()
        elif answered and isinstance(error, OSError):
            self._spool.keep_leftover(entry)
            self._disk.failed("delete", entry.name, error, DELIVERED_UNDELETED, hold_replay=False)
        else:
            return
        self._replayed(entry.docs, whole=True)

    def _forget(self, done: asyncio.Future[tuple[list[SpoolEntry], OSError | None]]) -> None:
        if done.exception() is None:
            self._spool.forget(done.result()[0])

    def _shrunk(self, entry: SpoolEntry, docs: int, done: asyncio.Future[SpoolEntry]) -> None:
        """On the loop once `Spool.shrink` ended: the smaller file, if written, takes the batch's
        place; if it stays beside the original, whole, it is a leftover."""
        error = done.exception()
        if error is None:
            self._spool.replace(entry, done.result())
            self._replayed(entry.docs - docs, whole=False)
        elif isinstance(error, StrandedCopy):
            self._spool.keep_stranded(error.copy)
