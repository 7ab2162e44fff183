"""The supervisor: starts N worker processes, restarts one that dies, aggregates their metrics,
serves /metrics, /healthz and /readyz, shows the status line, and on SIGTERM/SIGINT asks every
worker to drain and waits for them (at most the grace period, then SIGKILL).

Workers are started with the "spawn" method (a fresh interpreter each: nothing of the
supervisor's threads or locks is inherited) and each binds every port itself with SO_REUSEPORT.
Each worker sends ("ready" | "stats" | "bye", worker id, payload) over its pipe; see metrics.py
for how the numbers are combined.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, field, fields
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, TextIO

from flowd.config import SECTIONS, Settings, load_settings, worker_count
from flowd.config_values import split_address
from flowd.enrich.chain import RELOADABLE_KEYS
from flowd.errors import ConfigError
from flowd.server.app import EXIT_STARTUP_FAILED, describe_output, worker_main
from flowd.server.metrics import Aggregator, MetricsServer, build_registry

log = logging.getLogger("flowd.supervisor")

POLL_S = 0.25
STATUS_TICK_S = 1.0
RELOADABLE_SETTINGS = (*(f"enrich.{key}" for key in RELOADABLE_KEYS), "output.raw_fields")
"""What SIGHUP applies to running workers; every other key waits for a restart."""
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_RUN_S = 60.0
"""A worker that ran this long resets its restart backoff."""
KILL_MARGIN_S = 0.5


@dataclass(slots=True)
class WorkerSlot:
    index: int
    process: BaseProcess | None = None
    connection: Connection | None = None
    started_at: float = 0.0
    ready: bool = False
    failures: int = 0
    restart_at: float | None = None
    listeners: list[str] = field(default_factory=list)
    reload_pending: bool = False
    """A SIGHUP came while the worker was starting, when it may not have its handler yet: it is
    passed on once the worker is ready."""


class StatusLine:
    """Live one-line status on a terminal; a periodic summary line in the log otherwise."""

    def __init__(self, stream: TextIO, interactive: bool, interval_s: float) -> None:
        self.stream = stream
        self.interactive = interactive
        self.interval_s = interval_s
        self._last: tuple[float, float, float] | None = None
        self._last_logged = time.monotonic()

    def tick(self, aggregator: Aggregator, now: float) -> None:
        datagrams = aggregator.counter_total("flowd_datagrams_received")
        flows = aggregator.counter_total("flowd_flows_out")
        if self._last is None:
            self._last = (now, datagrams, flows)
            return
        elapsed = max(1e-6, now - self._last[0])
        datagram_rate = (datagrams - self._last[1]) / elapsed
        flow_rate = (flows - self._last[2]) / elapsed
        if self.interactive:
            self._last = (now, datagrams, flows)
            self.stream.write("\r\x1b[K" + self.describe(aggregator, datagram_rate, flow_rate))
            self.stream.flush()
        elif self.interval_s > 0 and now - self._last_logged >= self.interval_s:
            self._last = (now, datagrams, flows)
            self._last_logged = now
            log.info("%s", self.describe(aggregator, datagram_rate, flow_rate))

    @staticmethod
    def describe(aggregator: Aggregator, datagram_rate: float, flow_rate: float) -> str:
        drops = aggregator.counter_total("flowd_kernel_drops") + aggregator.counter_total("flowd_ingress_drops")
        return (
            f"{datagram_rate:,.0f} datagrams/s  {flow_rate:,.0f} flows/s  drops {drops:,.0f}  "
            f"queue {aggregator.gauge_total('flowd_queue_depth'):,.0f}  "
            f"sink lag {aggregator.gauge_total('flowd_sink_lag_seconds'):.2f}s  "
            f"errors {aggregator.counter_total('flowd_decode_errors'):,.0f}"
        )

    def close(self) -> None:
        if self.interactive and self._last is not None:
            self.stream.write("\n")
            self.stream.flush()


SUMMARY_FIELDS: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("datagrams_received", "flowd_datagrams_received", None),
    ("flows_out", "flowd_flows_out", None),
    ("ingress_drops", "flowd_ingress_drops", None),
    ("shutdown_lost_datagrams", "flowd_shutdown_lost", ("datagrams",)),
    ("shutdown_lost_documents", "flowd_shutdown_lost", ("documents",)),
    ("kernel_drops", "flowd_kernel_drops", None),
    ("allowlist_drops", "flowd_allowlist_drops", None),
    ("decode_errors", "flowd_decode_errors", None),
    ("templates_persisted", "flowd_templates_persisted", None),
    ("parked_kept", "flowd_parked_events", ("persisted",)),
    ("parked_lost", "flowd_parked_events", ("shutdown",)),
    ("parked_dropped", "flowd_parked_events", ("dropped",)),
    ("parked_expired", "flowd_parked_events", ("expired",)),
    ("sink_rejected", "flowd_sink_rejected_documents", None),
    ("es_spooled", "flowd_es_docs_spooled", None),
    ("es_replayed", "flowd_es_docs_replayed", None),
    ("es_dead_lettered", "flowd_es_docs_dead_lettered", None),
    ("es_dropped", "flowd_es_docs_dropped", None),
    ("es_spool_lost", "flowd_es_docs_spool_lost", None),
    ("worker_lost_datagrams", "flowd_worker_lost_datagrams", None),
    ("worker_lost_documents", "flowd_worker_lost_documents", None),
)
"""The shutdown summary line: name, counter, and the label set it takes (None: all summed)."""


class Supervisor:
    def __init__(self, settings: Settings, *, stream: TextIO | None = None, config_path: str | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.context = multiprocessing.get_context("spawn")
        self.aggregator = Aggregator(settings.metrics.exporter_label_limit)
        self.slots = [WorkerSlot(index) for index in range(worker_count(settings))]
        out = stream or sys.stderr
        self.status = StatusLine(out, out.isatty(), settings.metrics.status_interval_s)
        self.stopping_since: float | None = None
        self.failed = False
        self._signalled = False
        self._reload_requested = False
        self._started = False
        """Every worker has been ready once: from then on one ready worker keeps flowd ready."""

    # --- health ---------------------------------------------------------------------------------

    def healthy(self) -> bool:
        return self.stopping_since is None and any(s.process is not None and s.process.is_alive() for s in self.slots)

    def ready(self) -> bool:
        """Ready once every worker has started, and then while any worker runs.

        A worker that dies closes its sockets, and the kernel hands its exporters to the others
        (SO_REUSEPORT), so a worker in restart backoff must not take the pod out of its Service:
        with one replica, or `externalTrafficPolicy: Local`, that would drop every exporter's
        traffic instead of a share of one worker's. At the first start all must be bound, or the
        first to bind would be sent the whole load.
        """
        return self.stopping_since is None and self._started and any(s.ready for s in self.slots)

    # --- processes ------------------------------------------------------------------------------

    def _spawn(self, slot: WorkerSlot) -> None:
        parent_end, child_end = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=worker_main,
            args=(self.settings, slot.index, child_end, self.config_path),
            name=f"flowd-worker-{slot.index}",
        )
        process.start()
        child_end.close()
        slot.process, slot.connection = process, parent_end
        slot.started_at, slot.ready, slot.restart_at = time.monotonic(), False, None
        slot.reload_pending = False  # it starts from the settings as reloaded

    def _receive(self, slot: WorkerSlot) -> None:
        connection = slot.connection
        if connection is None:
            return
        try:
            while connection.poll():
                kind, _, payload = connection.recv()
                if kind == "ready":
                    slot.ready = True
                    self._started = self._started or all(s.ready for s in self.slots)
                    slot.failures = 0 if time.monotonic() - slot.started_at > STABLE_RUN_S else slot.failures
                    slot.listeners = list(payload.get("listeners", []))
                    if slot.index == 0:
                        log.info("listening on %s", ", ".join(slot.listeners))
                    if slot.reload_pending:
                        slot.reload_pending = False
                        self._signal_reload(slot)
                elif kind in ("stats", "bye"):
                    self.aggregator.update(slot.index, payload)
        except (EOFError, OSError):
            connection.close()
            slot.connection = None

    def _reap(self, slot: WorkerSlot) -> None:
        process = slot.process
        assert process is not None
        self._receive(slot)
        process.join(timeout=0)
        code = process.exitcode
        last_gauges = self.aggregator.retire(slot.index)
        if slot.connection is not None:
            slot.connection.close()
        slot.process, slot.connection = None, None
        was_ready, slot.ready = slot.ready, False
        if self.stopping_since is not None:
            if code == -signal.SIGTERM and not was_ready:
                log.info("worker %d stopped while it was starting", slot.index)  # it held nothing yet
                return
            if code != 0:
                log.error("worker %d exited with status %s during shutdown", slot.index, code)
                self.failed = True
            return
        if code == EXIT_STARTUP_FAILED and not was_ready:
            log.error("worker %d could not start; stopping", slot.index)
            self.failed = True
            self._begin_stop()
            return
        ran = time.monotonic() - slot.started_at
        slot.failures = 0 if ran > STABLE_RUN_S else slot.failures + 1
        delay = RESTART_BACKOFF_S[min(slot.failures, len(RESTART_BACKOFF_S) - 1)]
        slot.restart_at = time.monotonic() + delay
        self.aggregator.local.inc("flowd_worker_restarts")
        queued = int(last_gauges.get("flowd_queue_depth", {}).get(("ingress",), 0))
        held = sum(
            int(last_gauges.get(name, {}).get((), 0)) for name in ("flowd_documents_waiting", "flowd_es_buffered_docs")
        )
        self.aggregator.local.inc("flowd_worker_lost_datagrams", (), queued)
        self.aggregator.local.inc("flowd_worker_lost_documents", (), held)
        log.error(
            "worker %d died (exit status %s) after %.1f s holding, at its last report, %d datagrams and %d"
            " documents, lost; restarting in %.1f s",
            slot.index,
            code,
            ran,
            queued,
            held,
            delay,
        )

    # --- shutdown -------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signalled = True

    def _on_reload_signal(self, signum: int, frame: FrameType | None) -> None:
        self._reload_requested = True

    def _reload(self) -> None:
        """SIGHUP: check the configuration, keep its enrichment tables for workers started from
        now on, and ask the running workers to take them (each reads the file itself)."""
        try:
            loaded = load_settings(self.config_path)
        except ConfigError as error:
            # Counted here: the workers are not signalled, so none of them counts it.
            self.aggregator.local.inc("flowd_config_reloads", ("failed",))
            log.error("reload refused, the running configuration stays: %s", error)
            return
        except Exception as error:  # a reload must never end the supervisor's loop
            self.aggregator.local.inc("flowd_config_reloads", ("failed",))
            log.exception("reload refused, the running configuration stays: %s: %s", type(error).__name__, error)
            return
        fresh = loaded.settings
        later = [
            f"{name}.{item.name}"
            for name in SECTIONS
            for item in fields(getattr(fresh, name))
            if f"{name}.{item.name}" not in RELOADABLE_SETTINGS
            and getattr(getattr(fresh, name), item.name) != getattr(getattr(self.settings, name), item.name)
        ]
        if fresh.shutdown_grace_s != self.settings.shutdown_grace_s:
            later.append("shutdown_grace_s")
        if later:
            log.warning(
                "reload takes the enrichment tables and output.raw_fields; a restart applies %s", ", ".join(later)
            )
        for key in RELOADABLE_SETTINGS:
            section, name = key.split(".")
            setattr(getattr(self.settings, section), name, getattr(getattr(fresh, section), name))
        for slot in self.slots:
            if slot.ready:
                self._signal_reload(slot)
            else:  # spawned from the settings before this reload, and perhaps not listening for SIGHUP yet
                slot.reload_pending = slot.process is not None
        log.info("reloading the enrichment tables and output.raw_fields in %d worker(s)", len(self.slots))

    @staticmethod
    def _signal_reload(slot: WorkerSlot) -> None:
        if slot.process is not None and slot.process.is_alive() and slot.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.process.pid, signal.SIGHUP)

    def _begin_stop(self) -> None:
        if self.stopping_since is not None:
            return
        self.stopping_since = time.monotonic()
        log.info("stopping: draining workers (grace %.1f s)", self.settings.shutdown_grace_s)
        for slot in self.slots:
            slot.restart_at = None
            if slot.process is not None and slot.process.pid is not None and slot.process.is_alive():
                os.kill(slot.process.pid, signal.SIGTERM)

    def _kill_stragglers(self) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.is_alive():
                log.error("worker %d did not stop within the grace period; killing it", slot.index)
                slot.process.kill()
                self.failed = True

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        settings = self.settings
        log.info("output: %s", describe_output(settings))
        log.info("starting %d worker(s)", len(self.slots))
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_reload_signal)
        server = self._start_metrics_server()
        try:
            for slot in self.slots:
                self._spawn(slot)
            self._loop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.status.close()
            if server is not None:
                server.close()
        self._log_summary()
        return 1 if self.failed else 0

    def _start_metrics_server(self) -> MetricsServer | None:
        host, port = split_address(self.settings.metrics.address, "metrics.address")
        if port == 0:
            return None
        server = MetricsServer(host, port, build_registry(self.aggregator), self.healthy, self.ready)
        server.start()
        log.info("metrics on http://%s/metrics", self.settings.metrics.address)
        return server

    def _loop(self) -> None:
        next_status = time.monotonic() + STATUS_TICK_S
        grace = self.settings.shutdown_grace_s
        while True:
            if self._signalled:
                self._begin_stop()
            elif self._reload_requested:
                self._reload_requested = False
                self._reload()
            waitables: list[Any] = []
            for slot in self.slots:
                if slot.connection is not None:
                    waitables.append(slot.connection)
                if slot.process is not None:
                    waitables.append(slot.process.sentinel)
            if waitables:
                wait(waitables, timeout=POLL_S)
            else:
                time.sleep(POLL_S)
            now = time.monotonic()
            for slot in self.slots:
                self._receive(slot)
                if slot.process is not None and not slot.process.is_alive():
                    self._reap(slot)
                elif slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                    self._spawn(slot)
            alive = sum(1 for s in self.slots if s.process is not None)
            self.aggregator.local.set("flowd_workers", ("configured",), len(self.slots))
            self.aggregator.local.set("flowd_workers", ("alive",), alive)
            self.aggregator.local.set("flowd_workers", ("ready",), sum(1 for s in self.slots if s.ready))
            if self.stopping_since is not None:
                if alive == 0:
                    return
                if now - self.stopping_since > grace + KILL_MARGIN_S:
                    self._kill_stragglers()
            if now >= next_status and self.stopping_since is None:
                self.status.tick(self.aggregator, now)
                next_status = now + STATUS_TICK_S

    def _log_summary(self) -> None:
        """One line of what the run received, delivered and lost. /metrics goes with the process,
        so this line is what is left of the losses a shutdown itself causes (documents the cluster
        and the spool could not take, data sets still waiting for their templates)."""
        total = self.aggregator.counter_total
        fields = [(name, total(metric, labels)) for name, metric, labels in SUMMARY_FIELDS]
        log.info("stopped: %s", " ".join(f"{name}={value:.0f}" for name, value in fields))
