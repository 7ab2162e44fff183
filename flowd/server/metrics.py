"""Metrics: plain counters in each worker, summed by the supervisor, served as Prometheus text.

Workers do not use prometheus_client at all: each keeps its numbers in a `WorkerStats` (dicts
of label tuples, no locks, cheap to bump on the hot path) and sends `snapshot()` to the
supervisor over its pipe about once a second. The supervisor's `Aggregator` keeps the latest
snapshot per worker and sums them when scraped; when a worker dies its last counter values are
folded into a "retired" total so counters never go backwards across a restart. This avoids
prometheus_client's multiprocess mode (mmap files in a shared directory, no custom collectors).

Every name is prefixed `flowd_` and kept stable: the Grafana dashboard is built on them.
Exporter labels are capped (`LabelCap`): the first N distinct exporters are named, the rest
are counted as "other", so a spoofed flood cannot grow the series count without bound.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

Labels = tuple[str, ...]
OTHER = "other"
SINK_SECONDS_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ES_LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""flowd.output.es_stats's LATENCY_BUCKETS_S (kept in step by a test)."""


@dataclass(frozen=True, slots=True)
class MetricDef:
    kind: str
    """"counter", "gauge" or "histogram"."""
    help: str
    labels: Labels = ()
    across_workers: str = "sum"
    """How gauges of several workers combine: "sum" or "max"."""
    buckets: tuple[float, ...] = SINK_SECONDS_BUCKETS


METRICS: dict[str, MetricDef] = {
    "flowd_datagrams_received": MetricDef("counter", "Datagrams (or TCP messages) received", ("listener",)),
    "flowd_bytes_received": MetricDef("counter", "Payload bytes received", ("listener",)),
    "flowd_kernel_drops": MetricDef(
        "counter", "Datagrams the kernel dropped on our sockets (/proc/net/udp)", ("listener",)
    ),
    "flowd_ingress_drops": MetricDef("counter", "Datagrams dropped because the ingress queue was full", ("listener",)),
    "flowd_shutdown_lost": MetricDef(
        "counter",
        "Datagrams still queued, and documents decoded but not written, when a worker's drain ran out of "
        "shutdown_grace_s (what=datagrams|documents)",
        ("what",),
    ),
    "flowd_allowlist_drops": MetricDef(
        "counter", "Datagrams dropped because the exporter is not allowed", ("listener",)
    ),
    "flowd_receive_buffer_bytes": MetricDef(
        "gauge", "SO_RCVBUF the kernel granted (per socket)", ("listener",), across_workers="max"
    ),
    "flowd_queue_depth": MetricDef(
        "gauge", "Items waiting between stages (ingress: datagrams; documents: batches)", ("queue",)
    ),
    "flowd_queue_capacity": MetricDef("gauge", "Capacity of each stage queue", ("queue",)),
    "flowd_exporter_datagrams": MetricDef(
        "counter",
        "Datagrams received from each exporter (the first exporter_label_limit; the rest as other), by protocol",
        ("exporter", "protocol"),
    ),
    "flowd_datagrams_decoded": MetricDef("counter", "Datagrams decoded at least in part", ("protocol",)),
    "flowd_decode_errors": MetricDef("counter", "Decode errors", ("exporter", "protocol", "reason")),
    "flowd_export_sequence_missed": MetricDef(
        "counter",
        "Exports numbered by the exporter that never reached flowd, from sequence gaps: flows (NetFlow v5),"
        " data records (IPFIX), datagrams (NetFlow v9, sFlow)",
        ("exporter", "protocol"),
    ),
    "flowd_export_sequence_streams_evicted": MetricDef(
        "counter",
        "Export sequence streams forgotten to make room (65,536 per worker): their next export is not checked",
    ),
    "flowd_export_sequence_events": MetricDef(
        "counter",
        "Export sequence numbers not as expected (gap: exports missing before it; late: older than expected;"
        " duplicate: the previous export's number; reset: the exporter restarted its count;"
        " unnumbered: the same number every time, an exporter that does not number, reported once)",
        ("exporter", "protocol", "event"),
    ),
    "flowd_exporter_reported": MetricDef(
        "gauge",
        "Running totals exporters report of themselves in options data (RFC 7011 section 4 statistics: "
        "exported, observed, ignored and not-sent messages, flows, packets and octets), latest value per "
        "exporter and observation domain (the largest of the workers: an exporter that moved between workers "
        "is in both for a while)",
        ("exporter", "domain", "counter"),
        across_workers="max",
    ),
    "flowd_exporter_reports_ignored": MetricDef(
        "counter",
        "Totals exporters reported of themselves left out of flowd_exporter_reported: the tables of exporters, "
        "domains and counters it keeps were full (past the exporters let go it keeps by address, a first report "
        "is taken, up to its value, as the return of one it no longer knows)",
    ),
    "flowd_flows_decoded": MetricDef("counter", "Flow records and sFlow samples decoded", ("protocol",)),
    "flowd_options_records_decoded": MetricDef("counter", "Options records decoded", ("protocol",)),
    "flowd_templates_known": MetricDef("gauge", "Templates in the template caches"),
    "flowd_template_events": MetricDef(
        "counter",
        "Template cache events (sampling_over_cap: sampler or interface rates refused, the cache holding"
        " its cap of them; domains_evicted: the oldest domain's sampling state let go for a new one)",
        ("event",),
    ),
    "flowd_parked_records": MetricDef("gauge", "Data sets parked waiting for their template"),
    "flowd_parked_events": MetricDef(
        "counter",
        "Data sets that arrived before their template: parked, unparked (decoded when it came), dropped "
        "(over the caps), expired (no template within 10 minutes), shutdown (still waiting when flowd stopped and "
        "not written to disk: lost), persisted (written at shutdown for the next start), restored (persisted by a "
        "previous run and taken up by this worker)",
        ("event",),
    ),
    "flowd_enrich_errors": MetricDef("counter", "Batches whose enrichment failed (sent on without it)"),
    "flowd_flows_out": MetricDef("counter", "Documents accepted by the sink"),
    "flowd_sink_errors": MetricDef("counter", "Sink write or flush failures", ("operation",)),
    "flowd_sink_rejected_documents": MetricDef("counter", "Documents the sink refused for their content"),
    "flowd_sink_write_seconds": MetricDef("histogram", "Time the sink took to accept one batch"),
    "flowd_stage_seconds": MetricDef(
        "counter",
        "Seconds each worker stage took (receive, decode, enrich, serialise, sink; the sink's include"
        " waiting for it): where a worker's time goes, measured without a profiler",
        ("stage",),
    ),
    "flowd_sink_lag_seconds": MetricDef(
        "gauge", "Receive-to-sink delay of the last batch written (largest of the workers)", across_workers="max"
    ),
    "flowd_templates_persisted": MetricDef("counter", "Template cache snapshots written"),
    "flowd_templates_persist_errors": MetricDef("counter", "Template cache snapshots that failed"),
    "flowd_templates_restored": MetricDef("counter", "Templates restored from disk at start"),
    "flowd_config_reloads": MetricDef(
        "counter",
        "SIGHUP reloads of the enrichment tables and raw fields, by result (ok, failed: the running ones stay)",
        ("result",),
    ),
    "flowd_tcp_connections": MetricDef("counter", "IPFIX-over-TCP connections accepted"),
    "flowd_tcp_connections_open": MetricDef("gauge", "IPFIX-over-TCP connections open"),
    "flowd_tcp_connections_refused": MetricDef(
        "counter",
        "IPFIX-over-TCP connections refused at the connection cap (limit), or closed there after a minute "
        "without a whole message to make room for a new one (idle_evicted)",
        ("reason",),
    ),
    "flowd_enrich_events": MetricDef("counter", "Enrichment counters (cache hits/misses, lookups...)", ("counter",)),
    "flowd_fast_path_fallbacks": MetricDef(
        "counter",
        "Times a vectorised path raised and its records were decoded one by one instead, or a table's"
        " documents written as dicts (nothing is lost; each is a bug to report, and costs throughput), by path",
        ("path",),
    ),
    "flowd_memo_cache_clears": MetricDef(
        "counter",
        "Times a memo cache (one that only saves time: address text, compiled template layouts, timestamp"
        " prefixes...) was full and started over; a steady rate means its working set outgrew it",
        ("cache",),
    ),
    "flowd_enrich_entries": MetricDef(
        "gauge",
        "Enrichment caches' sizes and table entries (per worker: the largest of the workers)",
        ("table",),
        across_workers="max",
    ),
    "flowd_es_docs_indexed": MetricDef("counter", "Documents Elasticsearch accepted"),
    "flowd_es_docs_duplicate": MetricDef("counter", "Documents already indexed by an earlier attempt (409)"),
    "flowd_es_docs_failed": MetricDef("counter", "Bulk item failures (each attempt counts)"),
    "flowd_es_docs_retried": MetricDef("counter", "Documents sent again after a failure"),
    "flowd_es_docs_dead_lettered": MetricDef(
        "counter", "Documents rejected for their content, not retried: written to the dead-letter file, or unwritten"
    ),
    "flowd_es_dead_letters_unwritten": MetricDef(
        "counter",
        "Dead-lettered documents not written: the file was at elasticsearch.dead_letter_max_bytes, or writing it"
        " failed (a disk error, logged)",
    ),
    "flowd_es_docs_dropped": MetricDef(
        "counter", "Documents lost at shutdown: neither delivered nor spooled (both full, or the close cancelled)"
    ),
    "flowd_es_docs_spool_lost": MetricDef(
        "counter", "Spooled documents lost: their spool file was gone when its turn to be replayed came"
    ),
    "flowd_es_bulk_requests": MetricDef("counter", "Bulk requests sent"),
    "flowd_es_bulk_request_failures": MetricDef("counter", "Bulk requests that failed as a whole"),
    "flowd_es_retries": MetricDef("counter", "Batches put back for another attempt"),
    "flowd_es_outages": MetricDef("counter", "Times the cluster became unavailable"),
    "flowd_es_docs_spooled": MetricDef("counter", "Documents written to the disk spool"),
    "flowd_es_docs_replayed": MetricDef(
        "counter", "Spooled documents replayed: answered by the cluster (failed attempts not counted)"
    ),
    "flowd_es_bulk_latency_seconds": MetricDef("histogram", "Bulk request latency", buckets=ES_LATENCY_BUCKETS),
    "flowd_es_spool_bytes": MetricDef("gauge", "Bytes in the disk spool"),
    "flowd_es_spool_docs": MetricDef("gauge", "Documents in the disk spool"),
    "flowd_es_spool_max_bytes": MetricDef("gauge", "Disk spool cap", across_workers="sum"),
    "flowd_es_spool_oldest_age_seconds": MetricDef("gauge", "Age of the oldest spooled batch", across_workers="max"),
    "flowd_es_buffered_bytes": MetricDef("gauge", "Bytes buffered in memory for bulk requests"),
    "flowd_es_buffered_docs": MetricDef(
        "gauge", "Documents in memory for bulk requests (buffered, and in requests not from the spool)"
    ),
    "flowd_es_in_flight": MetricDef("gauge", "Bulk requests in flight"),
    "flowd_es_unavailable_seconds": MetricDef(
        "gauge", "How long the cluster has been unavailable", across_workers="max"
    ),
    "flowd_workers": MetricDef("gauge", "Worker processes", ("state",)),
    "flowd_worker_restarts": MetricDef("counter", "Worker processes restarted after dying"),
    "flowd_documents_waiting": MetricDef(
        "gauge", "Documents decoded and not yet handed to the output (queued between the stages)"
    ),
    "flowd_worker_lost_documents": MetricDef(
        "counter",
        "Documents a worker that died held at its last report (about a second before): decoded and not yet"
        " written, or in its Elasticsearch sink's memory",
    ),
    "flowd_worker_lost_datagrams": MetricDef(
        "counter",
        "Datagrams a worker that died held in its ingress queue at its last report (about a second before): "
        "lost with it, as is what it received since",
    ),
}


class LabelCap:
    """The first `limit` distinct values pass; later ones become "other"."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value


Samples = dict[str, list[tuple[dict[str, str], float]]]
"""Sample name (`flowd_flows_out_total`) -> (labels, value) of each of its series."""


def parse_samples(text: str) -> Samples:
    """What `/metrics` serves, read back: by `flowd status` and the benchmark harness."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


class WorkerStats:
    """One worker's numbers. Counters only grow; gauges are set by whoever owns them."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = {}
        self.gauges: dict[str, dict[Labels, float]] = {}
        self.histograms: dict[str, list[float]] = {}
        """name -> per-bucket counts (len(buckets) + 1, last is +Inf) followed by the sum."""

    def inc(self, name: str, labels: Labels = (), value: float = 1) -> None:
        series = self.counters.setdefault(name, {})
        series[labels] = series.get(labels, 0) + value

    def set(self, name: str, labels: Labels, value: float) -> None:
        self.gauges.setdefault(name, {})[labels] = value

    def observe(self, name: str, value: float) -> None:
        counts = self.histograms.get(name)
        if counts is None:
            counts = self.histograms[name] = [0.0] * (len(SINK_SECONDS_BUCKETS) + 2)
        index = next((i for i, bound in enumerate(SINK_SECONDS_BUCKETS) if value <= bound), len(SINK_SECONDS_BUCKETS))
        counts[index] += 1
        counts[-1] += value

    def counter(self, name: str, labels: Labels = ()) -> float:
        return self.counters.get(name, {}).get(labels, 0)

    def total(self, name: str) -> float:
        return sum(self.counters.get(name, {}).values())

    def snapshot(self) -> dict[str, Any]:
        return {
            "counters": {name: dict(series) for name, series in self.counters.items()},
            "gauges": {name: dict(series) for name, series in self.gauges.items()},
            "histograms": {name: list(counts) for name, counts in self.histograms.items()},
        }


def _add_into(target: dict[str, dict[Labels, float]], source: dict[str, dict[Labels, float]]) -> None:
    for name, series in source.items():
        into = target.setdefault(name, {})
        for labels, value in series.items():
            into[labels] = into.get(labels, 0) + value


class Aggregator:
    """Latest snapshot per worker plus counters of workers that have gone; sums on demand."""

    def __init__(self, exporter_label_limit: int = 1000) -> None:
        self._lock = threading.Lock()
        self._latest: dict[int, dict[str, Any]] = {}
        self._retired_counters: dict[str, dict[Labels, float]] = {}
        self._retired_histograms: dict[str, list[float]] = {}
        self._exporters = LabelCap(exporter_label_limit)
        self.local = WorkerStats()
        """The supervisor's own numbers (workers alive, restarts)."""

    def update(self, worker: int, snapshot: dict[str, Any]) -> None:
        with self._lock:
            self._latest[worker] = snapshot

    def retire(self, worker: int) -> dict[str, dict[Labels, float]]:
        """A worker exited: keep its counters, forget its gauges (returned: its last report's)."""
        with self._lock:
            snapshot = self._latest.pop(worker, None)
            if snapshot is None:
                return {}
            _add_into(self._retired_counters, snapshot["counters"])
            for name, counts in snapshot["histograms"].items():
                self._add_histogram(self._retired_histograms, name, counts)
            gauges: dict[str, dict[Labels, float]] = snapshot["gauges"]
            return gauges

    @staticmethod
    def _add_histogram(target: dict[str, list[float]], name: str, counts: list[float]) -> None:
        into = target.setdefault(name, [0.0] * len(counts))
        for i, value in enumerate(counts):
            into[i] += value

    def totals(self) -> tuple[dict[str, dict[Labels, float]], dict[str, dict[Labels, float]], dict[str, list[float]]]:
        """(counters, gauges, histograms) summed over workers, retired workers and the supervisor."""
        with self._lock:
            counters: dict[str, dict[Labels, float]] = {}
            gauges: dict[str, dict[Labels, float]] = {}
            histograms: dict[str, list[float]] = {}
            _add_into(counters, self._retired_counters)
            for name, counts in self._retired_histograms.items():
                self._add_histogram(histograms, name, counts)
            for snapshot in [*self._latest.values(), self.local.snapshot()]:
                _add_into(counters, snapshot["counters"])
                for name, series in snapshot["gauges"].items():
                    into = gauges.setdefault(name, {})
                    definition = METRICS.get(name)
                    largest = definition is not None and definition.across_workers == "max"
                    for labels, value in series.items():
                        previous = into.get(labels)
                        if previous is None:
                            into[labels] = value
                        else:
                            into[labels] = max(previous, value) if largest else previous + value
                for name, counts in snapshot["histograms"].items():
                    self._add_histogram(histograms, name, counts)
            return counters, gauges, histograms

    def counter_total(self, name: str, labels: tuple[str, ...] | None = None) -> float:
        """The counter summed over workers: over every label set, or for `labels` only."""
        series = self.totals()[0].get(name, {})
        return sum(series.values()) if labels is None else series.get(labels, 0.0)

    def gauge_total(self, name: str) -> float:
        series = self.totals()[1].get(name, {})
        definition = METRICS.get(name)
        if definition is not None and definition.across_workers == "max":
            return max(series.values(), default=0.0)
        return sum(series.values())

    def collect(self) -> Iterator[Metric]:
        counters, gauges, histograms = self.totals()
        for name, definition in METRICS.items():
            if definition.kind == "histogram":
                yield self._histogram(name, definition, histograms.get(name))
                continue
            family: CounterMetricFamily | GaugeMetricFamily
            if definition.kind == "counter":
                family = CounterMetricFamily(name, definition.help, labels=definition.labels)
                series = counters.get(name, {})
            else:
                family = GaugeMetricFamily(name, definition.help, labels=definition.labels)
                series = gauges.get(name, {})
            for labels, value in self._capped(definition, series).items():
                family.add_metric(list(labels), value)
            yield family

    def _capped(self, definition: MetricDef, series: dict[Labels, float]) -> dict[Labels, float]:
        if "exporter" not in definition.labels:
            return series
        position = definition.labels.index("exporter")
        capped: dict[Labels, float] = {}
        with self._lock:
            for labels, value in sorted(series.items(), key=lambda item: -item[1]):
                key = (*labels[:position], self._exporters(labels[position]), *labels[position + 1 :])
                capped[key] = capped.get(key, 0) + value
        return capped

    @staticmethod
    def _histogram(name: str, definition: MetricDef, counts: list[float] | None) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, definition.help)
        bounds = definition.buckets
        if counts is None or len(counts) != len(bounds) + 2:
            counts = [0.0] * (len(bounds) + 2)
        cumulative = 0.0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip([*map(str, bounds), "+Inf"], counts[:-1], strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        family.add_metric([], buckets, counts[-1])
        return family


class _AggregatorCollector(Collector):
    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    def collect(self) -> Iterable[Metric]:
        return self.aggregator.collect()


def build_registry(aggregator: Aggregator) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_AggregatorCollector(aggregator))
    return registry


class _ThreadingHTTPServerV6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


HTTP_IDLE_TIMEOUT_S = 10.0
"""A metrics client that sends nothing for this long is disconnected (each holds a thread)."""


class MetricsServer:
    """/metrics, /healthz and /readyz on a small threaded HTTP server."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
    ) -> None:
        handler = _make_handler(registry, healthy, ready)
        server_class = _ThreadingHTTPServerV6 if ":" in host else ThreadingHTTPServer
        self._server = server_class((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="flowd-metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _make_handler(
    registry: CollectorRegistry, healthy: Callable[[], bool], ready: Callable[[], bool]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = HTTP_IDLE_TIMEOUT_S  # an idle or slow client lets go of its thread

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/healthz":
                ok = healthy()
                self._reply(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n")
            elif path == "/readyz":
                ok = ready()
                self._reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._reply(404, b"not found\n")

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


ES_COUNTERS = (
    "docs_indexed",
    "docs_duplicate",
    "docs_failed",
    "docs_retried",
    "docs_dead_lettered",
    "dead_letters_unwritten",
    "docs_dropped",
    "docs_spool_lost",
    "bulk_requests",
    "bulk_request_failures",
    "retries",
    "outages",
    "docs_spooled",
    "docs_replayed",
)
ES_GAUGES = (
    "spool_bytes",
    "spool_docs",
    "spool_max_bytes",
    "spool_oldest_age_seconds",
    "buffered_bytes",
    "buffered_docs",
    "in_flight",
    "unavailable_seconds",
)


ENRICH_ENTRY_SUFFIXES = ("_size", "_entries", "interface_names_configured")
"""Enrichment stats that are how much a table holds, not how often something happened."""


def export_component_stats(stats: WorkerStats, sink: Any, enricher: Any) -> None:
    """Copy the Elasticsearch sink's and the enrichment chain's own counters into `stats`."""
    sink_stats = getattr(sink, "stats", None)
    if isinstance(sink_stats, dict):
        for key in ES_COUNTERS:
            if isinstance(sink_stats.get(key), int | float):
                stats.counters.setdefault(f"flowd_es_{key}", {})[()] = sink_stats[key]
        for key in ES_GAUGES:
            if isinstance(sink_stats.get(key), int | float):
                stats.set(f"flowd_es_{key}", (), sink_stats[key])
        buckets = sink_stats.get("bulk_latency_buckets")
        if isinstance(buckets, list) and len(buckets) == len(ES_LATENCY_BUCKETS) + 1:
            stats.histograms["flowd_es_bulk_latency_seconds"] = [
                *map(float, buckets),
                float(sink_stats.get("bulk_latency_seconds_sum", 0.0)),
            ]
    enrich_stats = getattr(enricher, "stats", None)
    if callable(enrich_stats):
        try:
            counters = enrich_stats()
        except Exception:
            return
        if isinstance(counters, dict):
            series = stats.counters.setdefault("flowd_enrich_events", {})
            for key, value in list(counters.items())[:200]:
                if not isinstance(value, int | float):
                    continue
                if str(key).endswith(ENRICH_ENTRY_SUFFIXES):  # sizes go up and down: gauges
                    stats.set("flowd_enrich_entries", (str(key),), value)
                else:
                    series[(str(key),)] = value
