"""Generate dashboards/grafana/flowd-collector.json: the collector's health from its Prometheus metrics.

Run `python dashboards/tools/build_grafana.py` after a change and commit both files; the tests compare
the committed JSON with this script's output, parse every query as PromQL and check that each metric
name is one that flowd's `/metrics` serves. Counters are exported with prometheus_client's `_total`
suffix and histograms as `_bucket`/`_sum`/`_count` (flowd/server/metrics.py names them without).

The datasource is an `__inputs` entry, so Grafana's import asks which Prometheus to use.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent.parent / "grafana" / "flowd-collector.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
SELECTOR = 'job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"


def counter_rate(name: str, by: str = "", extra: str = "") -> str:
    """Per-second rate of a flowd counter, summed over workers (and `by` labels)."""
    grouping = f" by ({by})" if by else ""
    matchers = f"{SELECTOR}, {extra}" if extra else SELECTOR
    return f"sum{grouping} (rate({name}_total{{{matchers}}}[{RATE}]))"


def gauge(name: str, by: str = "", how: str = "sum") -> str:
    grouping = f" by ({by})" if by else ""
    return f"{how}{grouping} ({name}{{{SELECTOR}}})"


def quantile(q: float, name: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({name}_bucket{{{SELECTOR}}}[{RATE}])))"


def cache_hit_ratio() -> str:
    """flowd_enrich_events carries each cache's `<cache>_hits` and `<cache>_misses` in its `counter` label."""

    def side(suffix: str) -> str:
        series = f'rate(flowd_enrich_events_total{{{SELECTOR}, counter=~".+_{suffix}"}}[{RATE}])'
        return f'sum by (cache) (label_replace({series}, "cache", "$1", "counter", "(.+)_{suffix}"))'

    return f"{side('hits')} / ({side('hits')} + {side('misses')})"


class Board:
    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.y = 0
        self.x = 0
        self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0

    def _place(self, width: int, height: int) -> dict[str, int]:
        if self.x + width > 24:
            self._newline()
        position = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.x += width
        self.row_height = max(self.row_height, height)
        return position

    def add(
        self,
        title: str,
        description: str,
        unit: str,
        targets: list[tuple[str, str]],
        *,
        kind: str = "timeseries",
        width: int = 8,
        height: int = 8,
        stack: bool = False,
        maximum: float | None = None,
    ) -> None:
        """`targets`: (PromQL, legend format)."""
        defaults: dict[str, Any] = {"unit": unit, "min": 0}
        if maximum is not None:
            defaults["max"] = maximum
        options: dict[str, Any] = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max", "lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
        if kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 15 if stack else 5,
                "showPoints": "never",
                "spanNulls": False,
                "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            }
        else:
            options = {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value",
                "graphMode": "area",
                "textMode": "auto",
            }
            defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "green", "value": None}]}
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": kind,
                "title": title,
                "description": description,
                "datasource": DATASOURCE,
                "gridPos": self._place(width, height),
                "fieldConfig": {"defaults": defaults, "overrides": []},
                "options": options,
                "targets": [
                    {
                        "datasource": DATASOURCE,
                        "refId": chr(ord("A") + index),
                        "expr": expr,
                        "legendFormat": legend,
                        "range": True,
                        "instant": False,
                    }
                    for index, (expr, legend) in enumerate(targets)
                ],
            }
        )


def build() -> dict[str, Any]:
    b = Board()
    b.row("Summary")
    b.add(
        "Flows out",
        "Documents the sink accepted per second",
        "ops",
        [(counter_rate("flowd_flows_out"), "flows/s")],
        kind="stat",
        width=6,
        height=4,
    )
    b.add(
        "Datagrams received",
        "Datagrams per second, all listeners",
        "pps",
        [(counter_rate("flowd_datagrams_received"), "datagrams/s")],
        kind="stat",
        width=6,
        height=4,
    )
    b.add(
        "Drops",
        "Kernel and ingress queue drops per second",
        "pps",
        [(f"{counter_rate('flowd_kernel_drops')} + {counter_rate('flowd_ingress_drops')}", "drops/s")],
        kind="stat",
        width=6,
        height=4,
    )
    b.add(
        "Spool",
        "Bytes waiting in the disk spool",
        "bytes",
        [(gauge("flowd_es_spool_bytes"), "spool")],
        kind="stat",
        width=6,
        height=4,
    )

    b.row("Receive")
    b.add(
        "Receive rate per listener",
        "Datagrams (or IPFIX-over-TCP messages) received per second",
        "pps",
        [(counter_rate("flowd_datagrams_received", "listener"), "{{listener}}")],
    )
    b.add(
        "Receive throughput per listener",
        "Payload bits received per second",
        "bps",
        [(f"8 * {counter_rate('flowd_bytes_received', 'listener')}", "{{listener}}")],
    )
    b.add(
        "Kernel and queue drops",
        "Datagrams lost before decoding, per second",
        "pps",
        [
            (counter_rate("flowd_kernel_drops", "listener"), "kernel {{listener}}"),
            (counter_rate("flowd_ingress_drops", "listener"), "queue full {{listener}}"),
            (counter_rate("flowd_allowlist_drops", "listener"), "not allowed {{listener}}"),
            (counter_rate("flowd_shutdown_lost", "what"), "drain out of time ({{what}})"),
        ],
    )
    b.add(
        "Datagrams per exporter (top 20)",
        "Datagrams each exporter sends, per second, by protocol: an exporter that goes silent drops to 0"
        " (the FlowdExporterSilent alert watches for it)",
        "pps",
        [
            (
                f"topk(20, {counter_rate('flowd_exporter_datagrams', 'exporter, protocol')})",
                "{{exporter}} {{protocol}}",
            )
        ],
    )
    b.add(
        "Exports lost before flowd (top 10)",
        "Exports numbered by the exporter that never arrived (sequence gaps), per second: flows for"
        " NetFlow v5, data records for IPFIX, datagrams for NetFlow v9 and sFlow",
        "ops",
        [
            (
                f"topk(10, {counter_rate('flowd_export_sequence_missed', 'exporter, protocol')})",
                "{{exporter}} {{protocol}}",
            )
        ],
    )
    b.add(
        "Lost inside exporters, as they report it (top 10)",
        "What exporters say in their own statistics (options data, RFC 7011 section 4) they skipped or"
        " never sent, per second: a full flow cache or a metering process out of capacity, before flowd;"
        " and reports flowd left out because its tables of them were full",
        "ops",
        [
            (
                f"topk(10, sum by (exporter, counter) (rate(flowd_exporter_reported{{{SELECTOR}, "
                f'counter=~"not_sent_.*|ignored_.*"}}[{RATE}])))',
                "{{exporter}} {{counter}}",
            ),
            (counter_rate("flowd_exporter_reports_ignored"), "reports left out (tables full)"),
        ],
    )
    b.add(
        "Export sequence events",
        "Sequence numbers not as expected, per second: gaps (exports missing before this one), late"
        " (out of order), duplicate, reset (the exporter restarted its count), unnumbered (an exporter"
        " that does not number its exports, once), and streams forgotten at the tracker's cap",
        "ops",
        [
            (counter_rate("flowd_export_sequence_events", "protocol, event"), "{{protocol}} {{event}}"),
            (counter_rate("flowd_export_sequence_streams_evicted"), "streams forgotten"),
        ],
    )
    b.add(
        "Queue fill",
        "Items waiting between stages, as a share of each queue's capacity",
        "percentunit",
        [(f"{gauge('flowd_queue_depth', 'queue')} / {gauge('flowd_queue_capacity', 'queue')}", "{{queue}}")],
        maximum=1,
    )
    b.add(
        "Socket receive buffer",
        "SO_RCVBUF the kernel granted, per listener",
        "bytes",
        [(gauge("flowd_receive_buffer_bytes", "listener", how="max"), "{{listener}}")],
    )
    b.add(
        "IPFIX over TCP",
        "Connections open and accepted per second",
        "short",
        [
            (gauge("flowd_tcp_connections_open"), "open"),
            (counter_rate("flowd_tcp_connections"), "accepted/s"),
            (counter_rate("flowd_tcp_connections_refused", "reason"), "refused/s {{reason}}"),
        ],
    )

    b.row("Decode")
    b.add(
        "Flows decoded by protocol",
        "Flow records and sFlow samples decoded per second",
        "ops",
        [(counter_rate("flowd_flows_decoded", "protocol"), "{{protocol}}")],
        stack=True,
    )
    b.add(
        "Decode errors by reason",
        "Decode errors per second by protocol and reason",
        "ops",
        [(counter_rate("flowd_decode_errors", "protocol, reason"), "{{protocol}} {{reason}}")],
    )
    b.add(
        "Decode errors by exporter (top 10)",
        "The exporters sending what flowd cannot decode",
        "ops",
        [(f"topk(10, {counter_rate('flowd_decode_errors', 'exporter')})", "{{exporter}}")],
    )
    b.add(
        "Templates",
        "Templates known, and parked data sets waiting for theirs",
        "short",
        [(gauge("flowd_templates_known"), "templates known"), (gauge("flowd_parked_records"), "parked sets")],
    )
    b.add(
        "Template events",
        "Template cache events per second (added, replaced, expired...)",
        "ops",
        [
            (counter_rate("flowd_template_events", "event"), "{{event}}"),
            (counter_rate("flowd_parked_events", "event"), "parked {{event}}"),
        ],
    )
    b.add(
        "Datagrams and options records decoded",
        "Datagrams (at least partly) and options records decoded per second, by protocol",
        "ops",
        [
            (counter_rate("flowd_datagrams_decoded", "protocol"), "datagrams {{protocol}}"),
            (counter_rate("flowd_options_records_decoded", "protocol"), "options {{protocol}}"),
        ],
    )

    b.row("Enrichment")
    b.add(
        "Enrichment cache hit rate",
        "Hits / (hits + misses) of each enrichment cache",
        "percentunit",
        [(cache_hit_ratio(), "{{cache}}")],
        width=12,
        maximum=1,
    )
    b.add(
        "Enrichment events and errors",
        "Enrichment counters per second, and batches sent on without it",
        "ops",
        [
            (counter_rate("flowd_enrich_events", "counter"), "{{counter}}"),
            (counter_rate("flowd_enrich_errors"), "failed batches"),
        ],
        width=12,
    )
    b.add(
        "Enrichment tables",
        "Entries each enrichment cache and table holds (the largest worker's)",
        "short",
        [(gauge("flowd_enrich_entries", "table", "max"), "{{table}}")],
        width=12,
    )

    b.row("Elasticsearch")
    b.add(
        "Documents",
        "Documents indexed, retried, failed, dead-lettered (written or past the file's cap) and dropped per second",
        "ops",
        [
            (counter_rate("flowd_es_docs_indexed"), "indexed"),
            (counter_rate("flowd_es_docs_retried"), "retried"),
            (counter_rate("flowd_es_docs_duplicate"), "duplicates (409)"),
            (counter_rate("flowd_es_docs_failed"), "failed items"),
            (counter_rate("flowd_es_docs_dead_lettered"), "dead-lettered"),
            (counter_rate("flowd_es_dead_letters_unwritten"), "dead-lettered, file full"),
            (counter_rate("flowd_es_docs_dropped"), "dropped"),
            (counter_rate("flowd_es_docs_spool_lost"), "spool file gone"),
        ],
    )
    b.add(
        "Bulk latency",
        "Bulk request latency quantiles",
        "s",
        [
            (quantile(0.5, "flowd_es_bulk_latency_seconds"), "p50"),
            (quantile(0.95, "flowd_es_bulk_latency_seconds"), "p95"),
            (quantile(0.99, "flowd_es_bulk_latency_seconds"), "p99"),
        ],
    )
    b.add(
        "Bulk requests and failures",
        "Bulk requests sent, failed as a whole, and retried, per second",
        "reqps",
        [
            (counter_rate("flowd_es_bulk_requests"), "requests"),
            (counter_rate("flowd_es_bulk_request_failures"), "failed requests"),
            (counter_rate("flowd_es_retries"), "retries"),
        ],
    )
    b.add(
        "Spool size",
        "Bytes in the disk spool against its cap",
        "bytes",
        [(gauge("flowd_es_spool_bytes"), "spooled"), (gauge("flowd_es_spool_max_bytes"), "cap")],
    )
    b.add(
        "Spool documents",
        "Documents spooled and replayed per second, and documents in the spool",
        "short",
        [
            (gauge("flowd_es_spool_docs"), "in spool"),
            (counter_rate("flowd_es_docs_spooled"), "spooled/s"),
            (counter_rate("flowd_es_docs_replayed"), "replayed/s"),
        ],
    )
    b.add(
        "Cluster availability",
        "Seconds the cluster has been unavailable, and age of the oldest spooled batch",
        "s",
        [
            (gauge("flowd_es_unavailable_seconds", how="max"), "unavailable for"),
            (gauge("flowd_es_spool_oldest_age_seconds", how="max"), "oldest spooled batch"),
        ],
    )
    b.add(
        "Buffered and in flight",
        "Bytes buffered for bulk requests",
        "bytes",
        [(gauge("flowd_es_buffered_bytes"), "buffered")],
    )
    b.add(
        "Requests and documents in flight",
        "Bulk requests in flight, documents held in memory by the sink, and documents decoded but not yet"
        " handed to it (what a worker that dies takes with it)",
        "short",
        [
            (gauge("flowd_es_in_flight"), "requests in flight"),
            (gauge("flowd_es_buffered_docs"), "documents in the sink's memory"),
            (gauge("flowd_documents_waiting"), "documents between the stages"),
        ],
    )
    b.add(
        "Outages",
        "Times the cluster became unavailable (per hour)",
        "short",
        [(f"sum (increase(flowd_es_outages_total{{{SELECTOR}}}[1h]))", "outages")],
    )

    b.row("Sink and workers")
    b.add(
        "Sink write time",
        "Time the sink took to accept one batch (p95) and the receive-to-sink lag",
        "s",
        [
            (quantile(0.95, "flowd_sink_write_seconds"), "write p95"),
            (gauge("flowd_sink_lag_seconds", how="max"), "lag"),
        ],
    )
    b.add(
        "Worker time by stage",
        "Cores' worth of time each stage takes, summed over workers (1 = one core busy all the time):"
        " receive, decode, enrich, serialise, and the sink (its time includes waiting for it)",
        "short",
        [(counter_rate("flowd_stage_seconds", "stage"), "{{stage}}")],
    )
    b.add(
        "Sink errors",
        "Sink write or flush failures, and documents refused for their content, per second",
        "ops",
        [
            (counter_rate("flowd_sink_errors", "operation"), "{{operation}}"),
            (counter_rate("flowd_sink_rejected_documents"), "rejected documents"),
        ],
    )
    b.add(
        "Workers",
        "Worker processes by state, restarts in the last hour (and the datagrams queued in the workers that died),"
        " and SIGHUP reloads of the enrichment tables and"
        " raw fields in the last hour (per worker; failed: the file did not load and the running tables stayed)",
        "short",
        [
            (gauge("flowd_workers", "state"), "{{state}}"),
            (f"sum (increase(flowd_worker_restarts_total{{{SELECTOR}}}[1h]))", "restarts/h"),
            (f"sum (increase(flowd_worker_lost_datagrams_total{{{SELECTOR}}}[1h]))", "datagrams lost with them/h"),
            (f"sum (increase(flowd_worker_lost_documents_total{{{SELECTOR}}}[1h]))", "documents lost with them/h"),
            (f"sum by (result) (increase(flowd_config_reloads_total{{{SELECTOR}}}[1h]))", "reloads/h {{result}}"),
        ],
    )
    b.add(
        "Template persistence",
        "Template snapshots written and failed per second",
        "ops",
        [
            (counter_rate("flowd_templates_persisted"), "written"),
            (counter_rate("flowd_templates_persist_errors"), "failed"),
            (counter_rate("flowd_templates_restored"), "restored at start"),
        ],
    )
    b.add(
        "Memo cache clears",
        "Times per second a cache that only saves time (address text, template layouts, timestamp prefixes...)"
        " was full and started over, by cache: a steady rate means its working set outgrew it",
        "ops",
        [(counter_rate("flowd_memo_cache_clears", "cache"), "{{cache}}")],
    )
    b.add(
        "Fast path fallbacks",
        "Times per second a vectorised path raised and its work was done one record at a time instead"
        " (decoded one by one, or a table written as dicts), by path: nothing is lost, but each is a bug"
        " worth reporting, and costs throughput",
        "ops",
        [(counter_rate("flowd_fast_path_fallbacks", "path"), "{{path}}")],
    )

    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes flowd's /metrics",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
            {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
        ],
        "uid": "flowd-collector",
        "title": "flowd collector",
        "description": "Health of the flowd NetFlow/IPFIX/sFlow collector, from its Prometheus metrics.",
        "tags": ["flowd", "netflow", "ipfix", "sflow"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "job",
                    "label": "Job",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": "label_values(flowd_workers, job)", "refId": "job"},
                    "definition": "label_values(flowd_workers, job)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {},
                    "refresh": 2,
                    "sort": 1,
                },
                {
                    "name": "instance",
                    "label": "Instance",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": 'label_values(flowd_workers{job=~"$job"}, instance)', "refId": "instance"},
                    "definition": 'label_values(flowd_workers{job=~"$job"}, instance)',
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {},
                    "refresh": 2,
                    "sort": 1,
                },
            ]
        },
        "panels": b.panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
