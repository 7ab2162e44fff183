"""The worker's pipeline: ingress batches -> decode -> enrich -> serialise -> sink, in two async
stages joined by a bounded queue.

`Pipeline` takes batches from the `IngressQueue` (ingress.py), letting a partial batch wait at
most `batch_delay_s` for company, and has the `BatchDecoder` (batch_decoder.py) turn them into
documents. Between decode and output an `asyncio.Queue` of document batches applies backpressure
(later stages never drop); `drain()` empties both in order. Each stage's time goes to
`flowd_stage_seconds`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from flowd.enrich import Enricher
from flowd.errors import SinkError
from flowd.output.raw_fields import RawFieldFilter
from flowd.output.sink import Body, Sink
from flowd.output.table import DocumentTable, Matrix
from flowd.server.batch_decoder import BatchDecoder, Part
from flowd.server.fallbacks import Fallbacks
from flowd.server.ingress import IngressQueue
from flowd.server.metrics import WorkerStats
from flowd.server.rate_limited_log import RateLimitedLog

log = logging.getLogger("flowd.pipeline")

DocumentBatch = tuple[list[Part], list[dict[str, Any]], float]
"""(flow documents, options documents, receive time of the batch's first datagram)."""


def _documents_in(batch: DocumentBatch) -> int:
    """Documents of a batch that go to the sink: its options records only teach the enricher."""
    return sum(len(part) for part in batch[0])


DOCUMENT_QUEUE_BATCHES = 2
"""Decoded batches waiting for enrichment and the sink; the decoder waits when it is full.
A joined batch of 8 x 64 NetFlow v5 datagrams holds up to about 15,400 documents (about 34 MB
as NDJSON), so two are enough to keep both stages busy and bound the memory a slow sink can pin."""
SINK_FLUSH_INTERVAL_S = 1.0
SINK_RETRY_S = 1.0


def _ndjson(
    table: DocumentTable, action_lines: Callable[[int], Matrix] | None, fell_back: Callable[[str, Exception], None]
) -> Body | None:
    """The table as NDJSON (each document after its `_bulk` action line when the sink gives them);
    None sends it the dict way: a value orjson cannot hold (an integer beyond 64 bits) is
    dead-lettered there document by document, and a bug here loses nothing (`fell_back` counts
    and logs it, rate-limited: it would fail for every table alike)."""
    try:
        return table.to_ndjson_buffer(action_lines(len(table)) if action_lines is not None else None)
    except orjson.JSONEncodeError:
        return None
    except Exception as error:  # a rendering bug: the dict path still delivers every document
        fell_back("ndjson", error)
        return None


async def _let_receive_run() -> None:
    """Hand the event loop a turn. A queue that does not block does not suspend the task, and
    the sockets are read only in the loop's turns (`udp.DrainingReceiver`), so the stages give
    it one after each batch and table: the socket is drained every few ms, not once per batch."""
    await asyncio.sleep(0)


class Pipeline:
    """Runs the decode and output stages of one worker."""

    def __init__(
        self,
        ingress: IngressQueue,
        decoder: BatchDecoder,
        sink: Sink,
        stats: WorkerStats,
        *,
        enricher: Enricher | None = None,
        raw_fields: RawFieldFilter | None = None,
        document_queue_batches: int = DOCUMENT_QUEUE_BATCHES,
        flush_interval_s: float = SINK_FLUSH_INTERVAL_S,
        batch_delay_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ingress = ingress
        self.decoder = decoder
        self.sink = sink
        self.enricher = enricher
        """The enrichment seam: any `flowd.enrich.Enricher`; None passes documents through."""
        self.raw_fields = raw_fields
        """`output.raw_fields`: None keeps every raw field."""
        self.stats = stats
        self.fallbacks = Fallbacks(stats, RateLimitedLog(log))
        """The output stage's fast path (NDJSON from columns) giving up, counted as the decoder's are."""
        self.clock = clock
        self.flush_interval_s = flush_interval_s
        self.batch_delay_s = batch_delay_s
        """How long a partial batch waits for more datagrams (`clock` is the receive times' clock)."""
        self.documents: asyncio.Queue[DocumentBatch | None] = asyncio.Queue(document_queue_batches)
        self._ingress_ready = asyncio.Event()
        ingress.wake = self._ingress_ready.set
        self._stopping = False
        self._decode_task: asyncio.Task[None] | None = None
        self._output_task: asyncio.Task[None] | None = None
        self._waiting_to_queue: DocumentBatch | None = None
        """A decoded batch waiting for room in `documents`."""
        self._queued_documents = 0
        """Documents in the batches `documents` holds."""
        self._unwritten: list[Part] = []
        """The parts of the batch being written that the sink has not been handed yet."""
        self.flows_out = 0
        self.last_lag_s = 0.0

    def start(self) -> None:
        self._decode_task = asyncio.create_task(self._decode_loop(), name="flowd-decode")
        self._output_task = asyncio.create_task(self._output_loop(), name="flowd-output")

    async def _decode_loop(self) -> None:
        while True:
            await self._linger()
            batch = self.ingress.pop(self.ingress.joined_limit())
            if batch is None:
                if self._stopping:
                    break
                self._ingress_ready.clear()
                await self._ingress_ready.wait()
                continue
            started = time.perf_counter()
            parts = self.decoder.decode_parts(batch)
            options = self.decoder.take_options()
            self._timed("decode", started)
            if parts or options:
                item = self._waiting_to_queue = (parts, options, batch[0][2])
                await self.documents.put(item)
                self._waiting_to_queue = None
                self._queued_documents += _documents_in(item)
            await _let_receive_run()
        await self.documents.put(None)

    async def _linger(self) -> None:
        """Let waiting datagrams gather until a joined batch's worth waits, the oldest has waited
        `batch_delay_s`, or the pipeline drains: under a light or moderate load a worker decodes
        a few large batches instead of a small one per loop turn, each paying the fixed costs."""
        ingress = self.ingress
        while self.batch_delay_s > 0 and not self._stopping:
            limit = min(ingress.joined_limit(), ingress.capacity // 2)  # a small queue must not fill meanwhile
            oldest = ingress.oldest_at()
            if oldest is None or len(ingress) >= limit:
                return
            left = min(self.batch_delay_s, oldest + self.batch_delay_s - self.clock())  # min: a clock step back
            if left <= 0:
                return
            self._ingress_ready.clear()
            ingress.wake_at = limit
            try:
                async with asyncio.timeout(left):
                    await self._ingress_ready.wait()
            except TimeoutError:
                return
            finally:
                ingress.wake_at = 0

    async def _output_loop(self) -> None:
        last_flush = self.clock()
        dirty = False
        while True:
            try:
                item = await asyncio.wait_for(self.documents.get(), timeout=self.flush_interval_s)
            except TimeoutError:
                pass  # nothing arrived: time to flush what was written
            else:
                if item is None:
                    break
                self._queued_documents -= _documents_in(item)
                await self._write(*item)
                dirty = True
            now = self.clock()
            if dirty and now - last_flush >= self.flush_interval_s:
                await self._flush()
                last_flush, dirty = now, False
        await self._flush()

    async def _write(self, parts: list[Part], options: list[dict[str, Any]], oldest: float) -> None:
        learn = getattr(self.enricher, "learn_from_options", None)
        if options and learn is not None:
            try:
                learn(options)  # interface and application names for the flows that follow
            except Exception as error:
                self.stats.inc("flowd_enrich_errors")
                log.warning("learning from %d options records failed: %s", len(options), error)
        if not parts:
            return
        self._unwritten = parts  # popped below as each part goes to the sink
        if self.enricher is not None:
            begin_batch = getattr(self.enricher, "begin_batch", None)
            if begin_batch is not None:
                begin_batch()
            enrich_table = getattr(self.enricher, "enrich_table", None)
            if enrich_table is None:  # an enricher that only knows dicts
                parts = self._unwritten = [p.to_dicts() if isinstance(p, DocumentTable) else p for p in parts]
            for part in parts:
                started = time.perf_counter()
                await self._enrich(part, enrich_table)
                self._timed("enrich", started)
                await _let_receive_run()
        encoded: Callable[[Body, int], Awaitable[None]] | None = getattr(self.sink, "write_encoded", None)
        action_lines: Callable[[int], Matrix] | None = getattr(self.sink, "action_lines", None)
        parts.reverse()  # popped in order: each table (its columns and their renders) is freed once written
        while parts:
            part = parts.pop()
            started = time.perf_counter()
            if self.raw_fields is not None:  # after enrichment, which reads raw fields
                if isinstance(part, DocumentTable):
                    self.raw_fields.trim_table(part)
                else:
                    self.raw_fields.trim_documents(part)
            if isinstance(part, DocumentTable):
                body = _ndjson(part, action_lines, self.fallbacks.fell_back) if encoded is not None else None
                if encoded is not None and body is not None:
                    started = self._timed("serialise", started)
                    await self._deliver(functools.partial(encoded, body, len(part)), len(part))
                    self._timed("sink", started)
                    await _let_receive_run()
                    continue
                part = part.to_dicts()
                started = self._timed("serialise", started)
            await self._deliver(functools.partial(self.sink.write, part), len(part))
            self._timed("sink", started)
            await _let_receive_run()
        self._unwritten = []
        self.last_lag_s = max(0.0, self.clock() - oldest)
        self.stats.set("flowd_sink_lag_seconds", (), self.last_lag_s)

    def _timed(self, stage: str, started: float) -> float:
        """Count the time since `started` to `stage` (`flowd_stage_seconds`); returns now."""
        now = time.perf_counter()
        self.stats.inc("flowd_stage_seconds", (stage,), now - started)
        return now

    async def _enrich(self, part: Part, enrich_table: Callable[[DocumentTable], Awaitable[None]] | None) -> None:
        assert self.enricher is not None
        try:
            if isinstance(part, DocumentTable):
                assert enrich_table is not None
                await enrich_table(part)
            else:
                await self.enricher.enrich(part)
        except Exception as error:  # enrichment is best effort: the flows still go out
            self.stats.inc("flowd_enrich_errors")
            log.warning("enrichment failed for a batch of %d: %s", len(part), error)

    async def _deliver(self, write: Callable[[], Awaitable[None]], count: int) -> None:
        started = time.monotonic()
        while True:
            try:
                await write()
                break
            except (SinkError, OSError) as error:
                # The sink owns retry and spooling; an error here is a full disk or the like:
                # keep the batch, back off and try again (the shutdown grace bounds it).
                self.stats.inc("flowd_sink_errors", ("write",))
                log.error("sink write failed (%d documents), retrying: %s", count, error)
                await asyncio.sleep(SINK_RETRY_S)
            except Exception as error:
                # Anything else is about the content (a bug): retrying cannot help. Count, log, go on.
                self.stats.inc("flowd_sink_errors", ("rejected",))
                self.stats.inc("flowd_sink_rejected_documents", (), count)
                log.error("sink rejected a batch of %d documents: %s: %s", count, type(error).__name__, error)
                return
        self.stats.observe("flowd_sink_write_seconds", time.monotonic() - started)
        self.flows_out += count
        self.stats.inc("flowd_flows_out", (), count)

    async def _flush(self) -> None:
        try:
            await self.sink.flush()
        except Exception as error:
            self.stats.inc("flowd_sink_errors", ("flush",))
            log.error("sink flush failed: %s", error)

    async def drain(self) -> None:
        """Decode everything queued, write it out and flush the sink; call after receiving stopped."""
        self._stopping = True
        self._ingress_ready.set()
        tasks = [t for t in (self._decode_task, self._output_task) if t is not None]
        await asyncio.gather(*tasks)

    def abort(self) -> tuple[int, int]:
        """Stop where the pipeline is (the drain ran out of time). Returns what is lost: the
        datagrams still queued, and the documents decoded but not handed to the sink (queued,
        waiting for room in the queue, or the rest of the batch being written). The part the sink
        holds is the sink's to deliver or spool."""
        for task in (self._decode_task, self._output_task):
            if task is not None:
                task.cancel()
        documents = self.documents_waiting()
        while not self.documents.empty():
            self.documents.get_nowait()
        return len(self.ingress), documents

    def documents_waiting(self) -> int:
        """Documents decoded and not yet handed to the sink: queued for output, waiting for room
        in that queue, and the rest of the batch being written."""
        waiting = 0 if self._waiting_to_queue is None else _documents_in(self._waiting_to_queue)
        return self._queued_documents + waiting + sum(len(part) for part in self._unwritten)
