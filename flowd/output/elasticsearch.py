"""The Elasticsearch / OpenSearch sink: `_bulk` over elastic_transport with plain mimetypes
(es_transport.py says why, and builds the transport).

Flow of a document: `write` encodes it to its NDJSON pair at once (bulk.py), pairs are cut into
batches by documents and bytes (or by the flush interval), batches wait in a bounded memory queue
and `max_in_flight` workers send them. A failed request (connection error, timeout, 429, 5xx)
puts its batch back at the front and the whole sink backs off (capped exponential with jitter);
while backing off only one request probes the cluster. While the cluster is away and memory is
full, the oldest batches go to the disk spool (spool.py; its file work is spool_keeper.py's),
which is replayed first, oldest first, when the cluster answers again, and at the next start.
Items the cluster refuses for their content go to the dead-letter file (dead_letters.py) with the
server's reason. Nothing is dropped without a count. This module is that queue, its workers and
what they do with each answer, and the close that spools what the cluster did not take in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from elastic_transport import AsyncTransport, TransportError

from flowd.config import ElasticsearchSettings
from flowd.output.bulk import (
    Batch,
    BatchBuilder,
    BulkEncoder,
    RetryPolicy,
    classify_bulk_response,
    document_of,
    split_pairs,
)
from flowd.output.dead_letters import DeadLetterFile
from flowd.output.es_stats import SinkStats
from flowd.output.es_transport import (
    BULK_FILTER_PATH,
    DEFAULT_REQUEST_TIMEOUT_S,
    build_transport,
    bulk_request,
    error_reason,
)
from flowd.output.sink import Body, row_bytes
from flowd.output.spool import (
    DiskErrors,
    Spool,
    SpoolEntry,
    SpoolFull,
    adopt_orphans,
    finish_in_thread,
    finish_uncancelled,
)
from flowd.output.spool_keeper import SpoolKeeper

_log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUFFER_BYTES = 64 * 1024 * 1024
"""Batches held in memory while the cluster is away, before the oldest go to the spool."""
DEFAULT_CLOSE_TIMEOUT_S = 30.0
SPOOL_RESERVE_S = 3.0
"""Of a close's time, what is kept for spooling what the cluster did not take."""


class ElasticsearchSink:
    """`Sink` into a data stream (or index) named `<data_stream>-<namespace>` through `_bulk`."""

    def __init__(
        self,
        settings: ElasticsearchSettings,
        *,
        transport: AsyncTransport | None = None,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        memory_buffer_bytes: int = DEFAULT_MEMORY_BUFFER_BYTES,
        document_ids: bool = True,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.index = f"{settings.data_stream}-{settings.namespace}"
        self._transport = transport
        self._own_transport = transport is None
        self._policy = policy if policy is not None else RetryPolicy(cap_s=settings.retry_max_s)
        self._clock = clock
        self._memory_limit = memory_buffer_bytes
        self._request_timeout_s = request_timeout_s
        self._close_timeout_s = close_timeout_s
        self._encoder = BulkEncoder(document_ids=document_ids)
        self._builder = BatchBuilder(settings.batch_docs, settings.batch_bytes, clock)
        self._spool = Spool(settings.spool_dir, settings.spool_max_bytes, wall_clock=wall_clock)
        self._disk = DiskErrors(self._policy.delay_s, clock)
        self._stats = SinkStats()
        self._keeper = SpoolKeeper(self._spool, self._disk, self._stats, clock)
        self._dead_letters = DeadLetterFile(
            Path(settings.dead_letter_path), settings.dead_letter_max_bytes, self._stats, wall_clock
        )
        self._target = f"/{self.index}/_bulk?{BULK_FILTER_PATH}"
        self._cond = asyncio.Condition()
        self._pending: deque[Batch] = deque()
        self._pending_bytes = 0
        self._in_flight = 0
        self._memory_in_flight = 0
        self._memory_in_flight_docs = 0
        self._failures = 0
        self._resume_at = 0.0
        self._outage_since: float | None = None
        self._stopping = False
        self._started = False
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._timer: asyncio.Task[None] | None = None
        self._shutdown_at: float | None = None
        """From then on (the worker is stopping) documents stop waiting for the cluster and spool."""

    # -- Sink protocol -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._transport is None:
            self._transport = build_transport(self.settings, request_timeout_s=self._request_timeout_s)
        found = await asyncio.to_thread(self._spool.scan)
        if found:
            _log.info(
                "spool %s holds %d batches (%d documents, %d bytes) from an earlier run; replaying them first",
                self._spool.directory,
                len(found),
                sum(e.docs for e in found),
                sum(e.nbytes for e in found),
            )
        self._tasks = [asyncio.create_task(self._run_worker()) for _ in range(max(1, self.settings.max_in_flight))]
        self._timer = asyncio.create_task(self._run_flush_timer())

    async def write(self, documents: list[dict[str, Any]]) -> None:
        pairs, unserialisable = self._encoder.encode(documents)
        self._stats.docs_written += len(documents)
        if unserialisable:
            await self._dead_letters.add_unserialisable(unserialisable)
        for batch in self._builder.add(pairs):
            await self._enqueue(batch)

    def action_lines(self, count: int) -> npt.NDArray[np.uint8]:
        """The `_bulk` action lines of the next `count` documents, which the pipeline writes in
        front of each document (`DocumentTable.to_ndjson(prefixes=...)`)."""
        return self._encoder.action_lines(count)

    async def write_encoded(self, body: Body, count: int) -> None:
        """`count` documents already serialised as `_bulk` pairs, each document after its line
        from `action_lines`."""
        self._stats.docs_written += count
        for batch in self._builder.add_body(body, count, row_bytes(body, count)):
            await self._enqueue(batch)

    async def begin_shutdown(self, deliver_for_s: float) -> None:
        """The worker stops: documents may wait for the cluster `deliver_for_s` more, then what
        memory holds goes to the spool instead (a slow or silent cluster must not keep them in
        memory until the supervisor's kill)."""
        await self._stop_waiting_at(self._clock() + max(0.0, deliver_for_s))

    async def _stop_waiting_at(self, when: float) -> None:
        """Documents wait for the cluster until `when` at the latest (an earlier time stays)."""
        if self._shutdown_at is None or self._shutdown_at > when:
            async with self._cond:
                self._shutdown_at = when
                self._cond.notify_all()

    def _spooling(self) -> bool:
        """Whether batches go to the spool rather than wait in memory: during an outage, or
        once a stopping worker's time for the cluster is up."""
        return self._failures > 0 or self._past_shutdown()

    async def _wait(self) -> None:
        """`self._cond.wait()` (the lock held), bounded by the shutdown deadline when there is one."""
        if self._shutdown_at is None:
            await self._cond.wait()
            return
        left = self._shutdown_at - self._clock()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._cond.wait(), max(left, 0.05))

    async def flush(self) -> None:
        """Returns once every document written is indexed, dead-lettered or spooled (or, when
        the shutdown deadline has passed, in a request the close will cancel and spool, or in
        memory with the spool full, for the close to count as dropped)."""
        batch = self._builder.cut()
        if batch is not None:
            await self._enqueue(batch)
        while True:
            async with self._cond:
                if not self._pending and (self._memory_in_flight == 0 or self._past_shutdown()):
                    return
                if not (self._pending and self._spooling()):
                    await self._wait()
                    continue
                waiting = self._pending.popleft()  # one at a time: a cancel leaves the rest queued
                self._pending_bytes -= waiting.nbytes
            if not await self._spool_batch(waiting):
                self._push_front(waiting)
                if self._past_shutdown():  # no time left to wait for room: the close counts them dropped
                    return
                async with self._cond:  # spool full: wait for the cluster to take some back
                    await self._wait()

    def _past_shutdown(self) -> bool:
        return self._shutdown_at is not None and self._clock() >= self._shutdown_at

    async def close(self, timeout_s: float | None = None) -> None:
        """Deliver what the time allows, then spool the rest: requests still in flight are
        cancelled and their batches spooled (a batch the cluster took meanwhile comes back as a
        409 when replayed). Cancelled itself, it counts what it had not yet spooled as dropped."""
        if self._closed or not self._started:
            self._closed = True
            return
        self._closed = True
        try:
            await self._deliver_then_spool(timeout_s)
        except asyncio.CancelledError:
            await self._drop_held()
            raise
        if self._transport is not None and self._own_transport:
            await self._transport.close()

    async def _deliver_then_spool(self, timeout_s: float | None) -> None:
        budget = self._close_timeout_s if timeout_s is None else max(0.0, timeout_s)
        deadline = self._clock() + budget
        spool_from = deadline - min(SPOOL_RESERVE_S, budget / 2)
        await self._stop_waiting_at(spool_from)
        try:
            await asyncio.wait_for(self.flush(), max(0.05, deadline - self._clock()))
        except TimeoutError:
            _log.error("elasticsearch sink: flush did not finish within %.1f s at close", budget)
        async with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._timer is not None:
            self._timer.cancel()
        wait_s = max(0.05, spool_from - self._clock())
        _done, running = await asyncio.wait(self._tasks, timeout=wait_s) if self._tasks else ((), ())
        for task in running:
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._timer] if self._timer else []), return_exceptions=True)
        opened = self._builder.cut()
        if opened is not None:
            self._pending.append(opened)
            self._pending_bytes += opened.nbytes
        dropped_docs = dropped_batches = 0
        try:
            while self._pending:  # one at a time, from memory: a cancel leaves the rest for `_drop_held`
                batch = self._pending.popleft()
                self._pending_bytes -= batch.nbytes
                if not await self._spool_batch(batch):
                    self._stats.docs_dropped += batch.docs
                    dropped_docs += batch.docs
                    dropped_batches += 1
        finally:  # one line for them all: a long outage leaves hundreds of batches
            if dropped_docs:
                _log.error(
                    "elasticsearch sink: %d documents (%d batches) lost at close: neither the cluster nor the "
                    "spool took them (spool full, or refused by the disk)",
                    dropped_docs,
                    dropped_batches,
                )
        await self._keeper.delete_leftovers(now=True)
        if leftovers := self._spool.leftovers():
            _log.error(
                "elasticsearch sink: %d spool files of delivered batches could not be deleted from %s; "
                "the next start sends them again (answered 409 when they carry ids)",
                len(leftovers),
                self._spool.directory,
            )

    async def _drop_held(self) -> None:
        """The close was cancelled (its caller's deadline): the workers stop, giving their batches
        back (to memory; spooled ones stay spooled; answered ones are settled first, not given
        back), and what memory then holds is counted as dropped, with one log line. A batch whose
        spool write the cancel interrupted is spooled or back in memory by then (`_spool_batch`),
        so it is counted here only if it is not on disk."""
        self._stopping = True
        tasks = [*self._tasks, *([self._timer] if self._timer else [])]
        for task in tasks:
            task.cancel()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:  # cancelled again: a worker still ending holds its batch, counted here too
            opened = self._builder.cut()
            batches = [*self._pending, *([opened] if opened is not None else [])]
            docs = sum(batch.docs for batch in batches) + self._memory_in_flight_docs
            self._pending.clear()
            self._pending_bytes = 0
            if docs:
                self._stats.docs_dropped += docs
                _log.error(
                    "elasticsearch sink: close cancelled before it spooled %d documents (%d batches): lost",
                    docs,
                    len(batches),
                )

    # -- observability ---------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, Any]:
        """Counters and gauges, flat, for the metrics exporter."""
        snapshot: dict[str, Any] = asdict(self._stats)
        snapshot.update(self._keeper.gauges())
        snapshot["buffered_bytes"] = self._pending_bytes + self._builder.nbytes
        snapshot["buffered_batches"] = len(self._pending)
        snapshot["buffered_docs"] = (
            sum(batch.docs for batch in self._pending) + self._builder.docs + self._memory_in_flight_docs
        )
        snapshot["in_flight"] = self._in_flight
        snapshot["unavailable_seconds"] = 0.0 if self._outage_since is None else self._clock() - self._outage_since
        return snapshot

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is buffered, in flight or spooled (tests, `flowd replay`)."""
        deadline = self._clock() + timeout_s
        while self._clock() < deadline:
            async with self._cond:
                if not self._pending and not self._in_flight and not self._spool.batches and not self._builder.docs:
                    return True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), max(0.01, deadline - self._clock()))
        return False

    # -- queueing --------------------------------------------------------------------------------

    def _push_front(self, batch: Batch) -> None:
        batch.detach()  # it waits for a retry
        self._pending.appendleft(batch)
        self._pending_bytes += batch.nbytes

    async def _enqueue(self, batch: Batch) -> None:
        """Into memory; when memory is full apply backpressure, or during an outage (or a
        stopping worker's last seconds) spool the oldest. Cancelled (the drain's deadline), the
        batches it holds go into memory anyway, for the close to spool. Past the shutdown
        deadline with the spool full, memory takes it too: the close counts it as dropped."""
        if self._failures:
            batch.detach()  # it waits out the outage
        held: Batch | None = batch
        overflow = False
        try:
            while True:
                async with self._cond:
                    if overflow or not self._pending or self._pending_bytes + batch.nbytes <= self._memory_limit:
                        self._pending.append(batch)
                        self._pending_bytes += batch.nbytes
                        held = None
                        self._cond.notify_all()
                        return
                    if not self._spooling():
                        await self._wait()
                        continue
                    oldest = self._pending.popleft()
                    self._pending_bytes -= oldest.nbytes
                if not await self._spool_batch(oldest):  # cancelled, it has put `oldest` away itself
                    self._push_front(oldest)
                    overflow = self._past_shutdown()  # no room, and no time left to wait for some
                    if not overflow:
                        async with self._cond:
                            await self._wait()
        except asyncio.CancelledError:
            if held is not None:
                held.detach()
                self._pending.append(held)
                self._pending_bytes += held.nbytes
            raise

    async def _spool_batch(self, batch: Batch) -> bool:
        """Whether the batch is now spooled; if not (spool full, disk error) it is the caller's.
        Cancelled, the cancel waits for the file's write to end: the batch is then spooled if
        the file was written, else back in memory in front; never both, never neither."""
        try:
            entry = self._spool.reserve(batch.body, batch.docs)
        except SpoolFull:
            return False
        try:
            await finish_in_thread(functools.partial(self._spool.written, entry), self._spool.write, entry, batch.body)
        except OSError as error:
            self._disk.log("write", entry.name, error, "the batch stays in memory (at close: dropped, counted)")
            return False
        except asyncio.CancelledError:
            if not self._spool.holds(entry):
                self._push_front(batch)
            raise
        async with self._cond:
            self._cond.notify_all()
        return True

    async def _take(self) -> tuple[Batch | None, SpoolEntry | None] | None:
        async with self._cond:
            while True:
                if self._stopping:
                    return None
                now = self._clock()
                if self._failures > 0 and self._in_flight > 0:
                    await self._cond.wait()  # one probe at a time while the cluster is failing
                    continue
                if now < self._resume_at:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._cond.wait(), self._resume_at - now)
                    continue
                entry = self._spool.claim() if now >= self._disk.replay_at else None
                if entry is not None:
                    self._in_flight += 1
                    return None, entry
                if self._pending:
                    batch = self._pending.popleft()
                    self._pending_bytes -= batch.nbytes
                    self._in_flight += 1
                    self._memory_in_flight += 1
                    self._memory_in_flight_docs += batch.docs
                    self._cond.notify_all()
                    return batch, None
                if self._spool.has_ready():  # held back by the disk's errors, not the cluster's
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._cond.wait(), self._disk.replay_at - now)
                    continue
                await self._cond.wait()

    async def _run_worker(self) -> None:
        while True:
            job = await self._take()
            if job is None:
                return
            batch, entry = job
            taken_docs = 0 if batch is None else batch.docs
            answered = False
            try:
                if entry is not None:
                    batch = await self._keeper.read(entry)
                if batch is not None:
                    answer = await self._request(batch)
                    # From here the batch is the answer's (counted, dead-lettered, deleted, put back):
                    # a cancel waits for all of it, and must not give the batch back a second time.
                    answered = True
                    await finish_uncancelled(self._settle(batch, entry, answer))
            except asyncio.CancelledError:
                if not answered:
                    self._give_back(batch, entry)
                raise
            except Exception:
                if answered:  # counted (perhaps deleted, put back) in part: sent again, counted twice
                    _log.exception("elasticsearch sink: unexpected error handling the cluster's answer to a batch")
                else:
                    _log.exception("elasticsearch sink: unexpected error sending a batch; it will be retried")
                    self._give_back(batch, entry)
                self._back_off()  # an error that comes back at once must not spin the event loop
            finally:
                async with self._cond:
                    self._in_flight -= 1
                    if entry is None:
                        self._memory_in_flight -= 1
                        self._memory_in_flight_docs -= taken_docs
                    self._cond.notify_all()
            await self._keeper.delete_leftovers()

    def _give_back(self, batch: Batch | None, entry: SpoolEntry | None) -> None:
        if entry is not None:
            self._spool.release(entry)
        elif batch is not None:
            self._push_front(batch)

    async def _run_flush_timer(self) -> None:
        interval = max(0.01, self.settings.flush_interval_s)
        while True:
            await asyncio.sleep(interval / 4)
            if self._builder.docs and self._clock() - self._builder.opened_at >= interval:
                batch = self._builder.cut()
                if batch is not None:
                    await self._enqueue(batch)

    # -- one request -----------------------------------------------------------------------------

    async def _request(self, batch: Batch) -> Any:
        """The cluster's response to the batch, or the transport's error when there was none."""
        assert self._transport is not None
        body, headers = await bulk_request(batch.body, compress=self.settings.gzip)
        self._stats.bulk_requests += 1
        started = self._clock()
        try:
            response: Any = await self._transport.perform_request(
                "POST", self._target, body=body, headers=headers, request_timeout=self._request_timeout_s
            )
        except TransportError as error:
            response = error
        self._stats.observe_latency(self._clock() - started)
        return response

    async def _settle(self, batch: Batch, entry: SpoolEntry | None, response: Any) -> None:
        """What the request's end means for the batch: done with, dead-lettered, split or retried."""
        if isinstance(response, TransportError):
            self._stats.bulk_request_failures += 1
            await self._retry(batch, entry, batch.body, batch.docs, f"{type(response).__name__}: {response}")
            return
        status = response.meta.status
        if 200 <= status < 300:
            await self._settle_items(batch, entry, response.body)
            return
        self._stats.bulk_request_failures += 1
        reason = f"HTTP {status} {error_reason(response.body)}"
        if status == 400:
            # The request as a whole is refused for what it says; sending it again cannot help.
            pairs = split_pairs(batch.body)
            await self._dead_letters.add([(document_of(p), status, response.body) for p in pairs])
            self._stats.docs_failed += batch.docs
            await self._succeeded(entry)
            return
        if status == 413:
            pairs = split_pairs(batch.body)
            if len(pairs) == 1:  # one document over the cluster's request limit: never accepted
                await self._dead_letters.add([(document_of(pairs[0]), status, response.body)])
                self._stats.docs_failed += 1
                await self._succeeded(entry)
                return
            if await self._split(batch, entry, pairs):
                _log.warning("bulk request of %d bytes too large (413); split in two", batch.nbytes)
            return
        await self._retry(batch, entry, batch.body, batch.docs, reason)

    async def _split(self, batch: Batch, entry: SpoolEntry | None, pairs: list[bytes]) -> bool:
        """A batch too large for the cluster (413) goes back into memory, in front, as two halves;
        False when it stayed spooled whole (below).

        A spooled batch's file is deleted first, and its halves go to memory only once it is gone:
        the documents are then either spooled or in memory, never both. When the file cannot be
        deleted, the batch stays spooled, whole, and is split again from its file after the disk's
        back-off (`DiskErrors`; the cluster is fine). Taking the halves anyway would leave a file
        the bookkeeping no longer knows, replayed (as 409s) at the next start, and the spool's
        count no longer that of its files."""
        half = len(pairs) // 2
        halves = (
            Batch(b"".join(pairs[:half]), half, batch.created_at),
            Batch(b"".join(pairs[half:]), len(pairs) - half, batch.created_at),
        )
        try:
            if entry is not None:
                await self._keeper.take_back(entry)
        finally:
            # A cancel of the worker waits for this settle (`finish_uncancelled`) and gives nothing
            # back after it: the halves stand for `batch`, which is never given back as well.
            split = entry is None or not self._spool.holds(entry)
            if split:
                for part in reversed(halves):
                    self._push_front(part)
        return split

    async def _settle_items(self, batch: Batch, entry: SpoolEntry | None, body: Any) -> None:
        outcome = classify_bulk_response(body, batch.docs)
        self._stats.docs_indexed += outcome.created
        self._stats.docs_duplicate += outcome.duplicates
        failed = len(outcome.retry) + len(outcome.rejected)
        if not failed:
            await self._succeeded(entry)
            return
        self._stats.docs_failed += failed
        pairs = split_pairs(batch.body)
        if outcome.rejected:
            await self._dead_letters.add([(document_of(pairs[r.index]), r.status, r.error) for r in outcome.rejected])
        if not outcome.retry:
            await self._succeeded(entry)
            return
        statuses = ", ".join(f"{count} x {status}" for status, count in sorted(outcome.retry_statuses.items()))
        retry_body = b"".join(pairs[i] for i in outcome.retry)
        await self._retry(batch, entry, retry_body, len(outcome.retry), f"items not accepted: {statuses}")

    async def _succeeded(self, entry: SpoolEntry | None) -> None:
        if entry is not None:
            await self._keeper.delete_answered(entry)
        async with self._cond:
            if self._failures:
                unavailable = self._clock() - (self._outage_since or self._clock())
                _log.warning("elasticsearch accepts documents again after %.1f s", unavailable)
            self._failures = 0
            self._resume_at = 0.0
            self._outage_since = None
            self._cond.notify_all()

    async def _retry(self, batch: Batch, entry: SpoolEntry | None, body: Body, docs: int, reason: str) -> None:
        if entry is not None and docs != entry.docs:
            await self._keeper.shrink(entry, body, docs)
        async with self._cond:
            if entry is not None:  # still claimed, unless `shrink` has put the smaller in its place
                self._spool.release(entry)
            else:
                self._push_front(batch if docs == batch.docs else Batch(body, docs, batch.created_at))
            if self._failures == 0:
                self._outage_since = self._clock()
                self._stats.outages += 1
                _log.warning(
                    "elasticsearch did not take a bulk request (%s); retrying with backoff, "
                    "buffering up to %d bytes in memory, then spooling to %s",
                    reason,
                    self._memory_limit,
                    self._spool.directory,
                )
            else:
                _log.debug("bulk retry %d: %s", self._failures, reason)
            self._back_off()
            self._stats.docs_retried += docs
            self._cond.notify_all()

    def _back_off(self) -> None:
        """No request before the policy's next delay (capped exponential with jitter)."""
        if self._failures == 0:
            for waiting in self._pending:  # they wait out the failures now
                waiting.detach()
        delay = self._policy.delay_s(self._failures)
        self._failures += 1
        self._resume_at = max(self._resume_at, self._clock() + delay)
        self._stats.retries += 1


def build_elasticsearch_sink(settings: ElasticsearchSettings, worker: int = 0, workers: int = 1) -> ElasticsearchSink:
    """The sink the pipeline uses when `elasticsearch.hosts` is set. Each worker spools to its
    own `worker-N` directory under `spool_dir`, capped at its share of `spool_max_bytes` (the cap
    is the whole directory's); worker 0 takes over what a run with more workers, or an earlier
    version, left elsewhere in it."""
    base = Path(settings.spool_dir)
    own = base / f"worker-{worker}"
    if worker == 0:
        adopt_orphans(base, own, workers)
    share = replace(settings, spool_dir=str(own), spool_max_bytes=max(1, settings.spool_max_bytes // max(1, workers)))
    return ElasticsearchSink(share)
