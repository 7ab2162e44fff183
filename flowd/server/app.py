"""`flowd run`: load the configuration, start the supervisor; and the worker process itself.

A worker owns one copy of the pipeline (design.md section 1): its listeners (every configured
UDP address and the IPFIX TCP ones, bound with SO_REUSEPORT), one template cache, the decode
and output stages and the sink. It reports its numbers to the supervisor over a pipe about once
a second. On SIGTERM or SIGINT it stops receiving, drains its queues into the sink, flushes it,
persists the template cache and exits 0, within the configured grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from flowd.allocator import tune_allocator
from flowd.config import Settings, load_settings, log_level, worker_count
from flowd.decode import TemplateCache
from flowd.decode.memo import MEMO_CLEARS
from flowd.decode.template_snapshot import SnapshotCopy, render_snapshot
from flowd.durable import write_atomically
from flowd.enrich.chain import build_enricher
from flowd.errors import ConfigError, SinkError
from flowd.output.discard import DiscardSink
from flowd.output.files import NdjsonFileSink
from flowd.output.raw_fields import RawFieldFilter
from flowd.output.sink import Sink
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.heap import settle_heap
from flowd.server.ingress import IngressQueue
from flowd.server.metrics import WorkerStats, export_component_stats
from flowd.server.parked_store import (
    claim_file,
    claim_taken,
    claimable,
    parked_directory,
    read_parked,
    remove_stale_temporaries,
    write_parked,
)
from flowd.server.pipeline import Pipeline
from flowd.server.tcp import IpfixTcpServer
from flowd.server.udp import DrainingReceiver, ExporterAllowlist, ListenerStats, open_udp_listener, read_kernel_drops
from flowd.template_report import snapshot_files

log = logging.getLogger("flowd.worker")

EXIT_OK = 0
EXIT_DRAIN_TIMEOUT = 1
EXIT_STARTUP_FAILED = 3
"""A worker that cannot bind or open its sink: the supervisor stops instead of restarting it."""
REPORT_INTERVAL_S = 1.0
TEMPLATE_EXPIRE_INTERVAL_S = 60.0
DRAIN_MARGIN_S = 1.0
SINK_RESERVE_S = 5.0
"""Of the shutdown grace, the last seconds a sink spends spooling rather than waiting on its cluster."""
SESSION_LINGER_S = 10.0
"""An ended IPFIX-over-TCP session's templates stay this long, for its messages still queued."""
UDP_PROTOCOLS = ("netflow", "ipfix", "sflow")
TEMPLATE_EVENTS = (
    "added",
    "redefined",
    "withdrawn",
    "expired",
    "rejected_over_cap",
    "sampling_over_cap",
    "domains_evicted",
)
"""`TemplateStats` counters served as `flowd_template_events{event}`."""


def run_server(config_path: str | None) -> int:
    """The `flowd run` command: 0 after a clean shutdown, 2 on a configuration error."""
    try:
        loaded = load_settings(config_path)
        log_level()
    except ConfigError as error:
        print(f"flowd: configuration error: {error}", file=sys.stderr)
        return 2
    setup_logging()
    from flowd.server.workers import Supervisor

    return Supervisor(loaded.settings, config_path=config_path).run()


def setup_logging(worker: int | None = None) -> None:
    who = "supervisor" if worker is None else f"worker-{worker}"
    logging.basicConfig(
        level=log_level(),
        format=f"%(asctime)s {who} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def describe_output(settings: Settings) -> str:
    if settings.elasticsearch.hosts:
        return f"Elasticsearch at {', '.join(settings.elasticsearch.hosts)}"
    directory = Path(settings.output.directory).resolve()
    return f"NDJSON files under {directory} (no Elasticsearch configured; the embedded default)"


def build_sink(settings: Settings, worker: int) -> Sink:
    """Elasticsearch when hosts are configured, else NDJSON files; nowhere when `output.discard`
    is set. The Elasticsearch client is imported only when a cluster is configured."""
    if settings.output.discard:
        log.warning("output.discard is set: documents are built and dropped, nothing is stored")
        return DiscardSink(settings.elasticsearch)
    if settings.elasticsearch.hosts:
        from flowd.output.elasticsearch import build_elasticsearch_sink

        return build_elasticsearch_sink(settings.elasticsearch, worker, worker_count(settings))
    return NdjsonFileSink(settings.output.directory, worker=worker, rotate_bytes=settings.output.rotate_bytes)


# --- template persistence --------------------------------------------------------------------


def template_path(base: str | Path, worker: int) -> Path:
    """Worker 0 writes the configured path; worker N writes `<stem>-N<suffix>` beside it."""
    path = Path(base)
    return path if worker == 0 else path.with_name(f"{path.stem}-{worker}{path.suffix}")


def restore_templates(templates: TemplateCache, base: str | Path) -> int:
    """Load every worker's snapshot: after a restart the kernel may hash an exporter to another
    worker, and templates of exporters a worker never sees cost only memory within the caps."""
    restored = 0
    for candidate in snapshot_files(base):
        try:
            snapshot = orjson.loads(candidate.read_bytes())
            restored += templates.restore(snapshot)
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
            log.warning("ignoring template snapshot %s: %s", candidate, error)
    return restored


def write_snapshot_atomically(path: Path, snapshot: dict[str, Any]) -> None:
    """The snapshot as JSON, written whole or not at all (`durable.write_atomically`)."""
    write_atomically(path, orjson.dumps(snapshot))


# --- the worker --------------------------------------------------------------------------------


_STOP_REQUESTED_EARLY: list[bool] = []
"""A SIGTERM that came before the worker's loop listened for it."""


def _stop_before_the_loop(signum: int, frame: object) -> None:
    _STOP_REQUESTED_EARLY.append(True)


def worker_main(settings: Settings, worker: int, connection: Connection, config_path: str | None = None) -> None:
    """Process entry point of one worker."""
    tune_allocator()  # a spawned interpreter starts with glibc's defaults again
    setup_logging(worker)
    for signum in (signal.SIGINT, signal.SIGHUP):  # until the loop installs its own handlers
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_before_the_loop)
    import uvloop

    code = uvloop.run(Worker(settings, worker, connection, config_path).run())
    connection.close()
    sys.exit(code)


class Worker:
    def __init__(
        self, settings: Settings, worker: int, connection: Connection | None, config_path: str | None = None
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        """Read again on SIGHUP for the enrichment tables (`reload_tables`)."""
        self.worker = worker
        self.connection = connection
        self.stats = WorkerStats()
        tpl = settings.templates
        self.templates = TemplateCache(
            ttl_s=tpl.ttl_s,
            max_per_exporter=tpl.max_per_exporter,
            max_templates=tpl.max_total,
            claim=claim_file,
            claim_taken=claim_taken,
        )
        self.listeners: list[ListenerStats] = []
        self.receivers: list[DrainingReceiver] = []
        self.tcp_servers: list[IpfixTcpServer] = []
        self.stop = asyncio.Event()
        self._parent = os.getppid()
        self.sink: Sink | None = None
        self._persisting: asyncio.Future[bool] | None = None
        """The periodic template save running in a thread, which the shutdown save must follow."""

    def send(self, kind: str, payload: Any) -> None:
        if self.connection is None:
            return
        try:
            self.connection.send((kind, self.worker, payload))
        except (OSError, ValueError):
            self.stop.set()  # the supervisor is gone

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop.set)
        if _STOP_REQUESTED_EARLY:
            self.stop.set()  # it starts and stops at once, taking what the sockets hold with it
        settings = self.settings
        restored = restore_templates(self.templates, settings.templates.path)
        self.stats.inc("flowd_templates_restored", (), restored)
        if restored:
            log.info("restored %d templates from %s", restored, settings.templates.path)
        self.restore_parked()
        sink = build_sink(settings, self.worker)
        self.sink = sink
        try:
            await sink.start()
        except (SinkError, OSError) as error:
            log.error("cannot start the output: %s", error)
            return EXIT_STARTUP_FAILED
        ingress = IngressQueue(settings.listen.batch_size, settings.listen.queue_size)
        decoder = BatchDecoder(self.templates, self.stats, exporter_label_limit=settings.metrics.exporter_label_limit)
        try:
            enricher = build_enricher(settings.enrich)
        except (ConfigError, ValueError) as error:  # restarting would fail the same way
            log.error("cannot set up enrichment: %s", error)
            return EXIT_STARTUP_FAILED
        pipeline = Pipeline(
            ingress,
            decoder,
            sink,
            self.stats,
            enricher=enricher,
            raw_fields=RawFieldFilter.from_patterns(settings.output.raw_fields),
            batch_delay_s=settings.listen.batch_delay_ms / 1000,
        )
        pipeline.start()
        loop.add_signal_handler(signal.SIGHUP, self._reload, pipeline)
        try:
            await self._open_listeners(ingress, decoder)
        except OSError as error:
            log.error("cannot listen: %s", error)
            await self._stop_receiving()
            pipeline.abort()  # nothing was received yet
            return EXIT_STARTUP_FAILED
        self._update_stats(ingress, pipeline)
        settle_heap()
        self.send("stats", self.stats.snapshot())  # before "ready": restored templates are visible at once
        self.send("ready", {"listeners": [s.name for s in self.listeners] + [t.name for t in self.tcp_servers]})
        reporter = asyncio.create_task(self._report_loop(ingress, pipeline))
        await self.stop.wait()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            # A second signal (the supervisor forwards one, a terminal or `timeout` sends the
            # group one) must not kill the drain, nor the exit after the loop has closed.
            loop.remove_signal_handler(signum)
            signal.signal(signum, signal.SIG_IGN)

        code = EXIT_OK
        # The supervisor kills at the grace's end: everything below ends DRAIN_MARGIN_S before it,
        # and a sink that waits on a cluster stops waiting SINK_RESERVE_S before that, to spool.
        grace = max(0.5, settings.shutdown_grace_s - DRAIN_MARGIN_S)
        ends_at = time.monotonic() + grace
        begin_shutdown = getattr(sink, "begin_shutdown", None)
        if begin_shutdown is not None:
            await begin_shutdown(max(0.0, grace - min(SINK_RESERVE_S, grace / 3)))
        await self._stop_receiving()
        try:
            await asyncio.wait_for(pipeline.drain(), timeout=max(0.1, ends_at - time.monotonic()))
        except TimeoutError:
            datagrams, documents = pipeline.abort()
            log.error(
                "drain did not finish within %.1f s: %d datagrams and %d documents not written",
                grace,
                datagrams,
                documents,
            )
            self.stats.inc("flowd_shutdown_lost", ("datagrams",), datagrams)
            self.stats.inc("flowd_shutdown_lost", ("documents",), documents)
            code = EXIT_DRAIN_TIMEOUT
        reporter.cancel()
        if self._persisting is not None and not self._persisting.done():  # an older snapshot being written
            await asyncio.wait([self._persisting], timeout=max(0.1, ends_at - time.monotonic()))
        self.persist_templates()  # first: the parked sets' files take longer, and a kill may come
        self.persist_parked()
        try:
            await sink.close(timeout_s=max(0.5, ends_at - time.monotonic()))
        except Exception as error:
            log.error("closing the output failed: %s", error)
        if pipeline.enricher is not None:
            with contextlib.suppress(Exception):
                await pipeline.enricher.close()
        self._update_stats(ingress, pipeline)
        self.send("bye", self.stats.snapshot())
        return code

    def _reload(self, pipeline: Pipeline) -> None:
        """SIGHUP: the enrichment tables and `output.raw_fields` from the configuration again; the
        rest needs a restart."""
        reload_tables = getattr(pipeline.enricher, "reload_tables", None)
        try:
            settings = load_settings(self.config_path).settings
            changed = [f"enrich.{key}" for key in reload_tables(settings.enrich)] if reload_tables else []
        except ConfigError as error:
            self.stats.inc("flowd_config_reloads", ("failed",))
            log.error("reload refused, the running enrichment tables stay: %s", error)
            return
        except Exception as error:  # a reload must never stop the worker
            self.stats.inc("flowd_config_reloads", ("failed",))
            log.exception("reload refused, the running enrichment tables stay: %s: %s", type(error).__name__, error)
            return
        if settings.output.raw_fields != self.settings.output.raw_fields:
            pipeline.raw_fields = RawFieldFilter.from_patterns(settings.output.raw_fields)
            self.settings.output.raw_fields = settings.output.raw_fields
            changed.append("output.raw_fields")
        self.stats.inc("flowd_config_reloads", ("ok",))
        log.info("reloaded: %s", ", ".join(changed) or "no table changed")

    async def _open_listeners(self, ingress: IngressQueue, decoder: BatchDecoder) -> None:
        listen = self.settings.listen
        allowlist = ExporterAllowlist(listen.allowed_exporters) if listen.allowed_exporters else None
        for protocol in UDP_PROTOCOLS:
            for address in getattr(listen, protocol):
                receiver, stats = await open_udp_listener(
                    f"{protocol}/udp/{address}",
                    address,
                    ingress,
                    receive_buffer_bytes=listen.receive_buffer_bytes,
                    allowlist=allowlist,
                    warn_buffer=self.worker == 0,
                )
                self.receivers.append(receiver)
                self.listeners.append(stats)
        for address in listen.ipfix_tcp:
            server = IpfixTcpServer(f"ipfix/tcp/{address}", ingress, self.stats, decoder.exporter_label)
            await server.start(address, allowlist)
            self.tcp_servers.append(server)

    async def _stop_receiving(self) -> None:
        for receiver in self.receivers:
            receiver.finish()
        self._record_kernel_drops()  # a closed socket leaves /proc/net/udp, and its last drops with it
        for receiver in self.receivers:
            receiver.close()
        for server in self.tcp_servers:
            await server.stop_receiving()

    async def _report_loop(self, ingress: IngressQueue, pipeline: Pipeline) -> None:
        interval = self.settings.templates.persist_interval_s
        next_persist = time.monotonic() + interval if interval > 0 else float("inf")
        next_expire = time.monotonic() + TEMPLATE_EXPIRE_INTERVAL_S
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            now = time.monotonic()
            ended = {peer for server in self.tcp_servers for peer in server.take_ended(now - SESSION_LINGER_S)}
            if ended:
                self.templates.forget_exporters(ended)
            if now >= next_expire:
                self.templates.expire(time.time())
                next_expire = now + TEMPLATE_EXPIRE_INTERVAL_S
            if now >= next_persist:
                self._persisting = asyncio.ensure_future(
                    asyncio.to_thread(self._write_templates, self.templates.capture())
                )
                self._count_persist(await asyncio.shield(self._persisting))
                next_persist = now + interval
            self._update_stats(ingress, pipeline)
            self.send("stats", self.stats.snapshot())
            if os.getppid() != self._parent:
                log.error("the supervisor is gone; stopping")
                self.stop.set()

    def _record_kernel_drops(self) -> None:
        """Each listener's drops from /proc/net/udp. A closed socket leaves it: the last count
        stays instead of going back to 0."""
        if not self.listeners:
            return
        drops = read_kernel_drops()
        kernel = self.stats.counters.setdefault("flowd_kernel_drops", {})
        for listener in self.listeners:
            labels = (listener.name,)
            kernel[labels] = max(kernel.get(labels, 0), sum(drops.get(i, 0) for i in listener.inodes))

    def _update_stats(self, ingress: IngressQueue, pipeline: Pipeline) -> None:
        stats = self.stats
        self._record_kernel_drops()
        stats.counters.setdefault("flowd_export_sequence_streams_evicted", {})[()] = pipeline.decoder.sequences.evicted
        stats.counters.setdefault("flowd_stage_seconds", {})[("receive",)] = sum(
            listener.receive_seconds for listener in self.listeners
        )
        for listener in self.listeners:
            labels = (listener.name,)
            stats.counters.setdefault("flowd_datagrams_received", {})[labels] = listener.datagrams
            stats.counters.setdefault("flowd_bytes_received", {})[labels] = listener.bytes
            stats.counters.setdefault("flowd_ingress_drops", {})[labels] = listener.ingress_drops
            stats.counters.setdefault("flowd_allowlist_drops", {})[labels] = listener.allowlist_drops
            stats.set("flowd_receive_buffer_bytes", labels, listener.receive_buffer_bytes)
        for server in self.tcp_servers:
            labels = (server.name,)
            stats.counters.setdefault("flowd_datagrams_received", {})[labels] = server.listener_datagrams
            stats.counters.setdefault("flowd_bytes_received", {})[labels] = server.listener_bytes
        if self.tcp_servers:  # all listeners' (IPv4 and IPv6), not the last one's
            stats.set("flowd_tcp_connections_open", (), sum(len(server.connections) for server in self.tcp_servers))
        export_component_stats(stats, self.sink, pipeline.enricher)
        memo_clears = stats.counters.setdefault("flowd_memo_cache_clears", {})
        for name, clears in MEMO_CLEARS.items():  # this process's, as its caches are
            memo_clears[(name,)] = clears
        stats.set("flowd_queue_depth", ("ingress",), len(ingress))
        stats.set("flowd_queue_capacity", ("ingress",), ingress.capacity)
        stats.set("flowd_queue_depth", ("documents",), pipeline.documents.qsize())
        stats.set("flowd_documents_waiting", (), pipeline.documents_waiting())
        stats.set("flowd_queue_capacity", ("documents",), pipeline.documents.maxsize)
        cache = self.templates
        stats.set("flowd_templates_known", (), len(cache))
        cache.let_go_of_claimed()  # at once, not at the next expiry: the gauge would count them twice meanwhile
        stats.set("flowd_parked_records", (), cache.waiting_sets(with_copies=self.worker == 0))
        template_events = stats.counters.setdefault("flowd_template_events", {})
        for event in TEMPLATE_EVENTS:
            template_events[(event,)] = getattr(cache.stats, event)
        parked_events = stats.counters.setdefault("flowd_parked_events", {})
        for event, attribute in (
            ("parked", "parked"),
            ("unparked", "unparked"),
            ("dropped", "parked_dropped"),
            ("expired", "parked_expired"),
            ("shutdown", "parked_at_shutdown"),
            ("persisted", "parked_persisted"),
            ("restored", "parked_restored"),
        ):
            parked_events[(event,)] = getattr(cache.stats, attribute)

    def restore_parked(self) -> None:
        """Hold every file of parked data sets a previous run kept, where files can be claimed."""
        directory = parked_directory(self.settings.templates.path)
        if not directory.is_dir():
            return
        if not claimable(directory):
            log.error(
                "parked data sets in %s stay there: this process cannot remove files there, so no "
                "worker could claim them and each might decode them",
                directory,
            )
            return
        remove_stale_temporaries(directory)
        held = sum(self.templates.restore_parked(claim, entries) for claim, entries in read_parked(directory))
        if held:
            log.info("holding %d data sets that a previous run kept waiting for their templates", held)

    def persist_parked(self) -> None:
        """Data sets still waiting for their templates go to disk for the next start, but for
        those of IPFIX-over-TCP sessions, which ended with this run."""
        parked = self.templates.take_parked()
        sessions = {peer for server in self.tcp_servers for peer in server.session_peers()}
        ended = sum(len(sets) for key, sets in parked.items() if key[0] in sessions)
        if ended:
            parked = {key: sets for key, sets in parked.items() if key[0] not in sessions}
            self.templates.count_shutdown(0, ended)
            log.warning(
                "%d data sets of IPFIX-over-TCP sessions were still waiting for their templates and are lost: "
                'their sessions ended (flowd_parked_events{event="shutdown"})',
                ended,
            )
        held = sum(len(sets) for sets in parked.values())
        if not held:
            return
        directory = parked_directory(self.settings.templates.path)
        exporters = len({key[0] for key in parked})
        persisted, error = write_parked(directory, self.worker, parked)
        self.templates.count_shutdown(persisted, held - persisted)
        if error is not None:
            log.error(
                "%d of %d data sets from %d exporters still waiting for their templates are lost: "
                'cannot write them to %s: %s (flowd_parked_events{event="shutdown"})',
                held - persisted,
                held,
                exporters,
                directory,
                error,
            )
        if persisted:
            log.info(
                "%d data sets from %d exporters were still waiting for their templates: kept in %s for the next start",
                persisted,
                exporters,
                directory,
            )

    def persist_templates(self) -> None:
        self._count_persist(self._write_templates(self.templates.capture()))

    def _count_persist(self, written: bool) -> None:
        self.stats.inc("flowd_templates_persisted" if written else "flowd_templates_persist_errors")

    def _write_templates(self, captured: SnapshotCopy) -> bool:
        """Runs in a thread for the periodic save: touches nothing but the copy and the file.
        Rendering the copy takes seconds at the template cap, which the event loop must not wait."""
        path = template_path(self.settings.templates.path, self.worker)
        try:
            write_snapshot_atomically(path, render_snapshot(captured))
        except OSError as error:
            log.error("cannot persist templates to %s: %s", path, error)
            return False
        return True
