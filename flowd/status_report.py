"""`flowd status`: what a running collector received, delivered and lost, read from its `/metrics`.

For operators without Prometheus and Grafana, such as a contest NOC with a few routers. It answers
"is anything being lost, and where?" from the same counters the dashboards plot: drops before
decoding (kernel, queue, allowlist), decode errors by reason, exports the exporters numbered but
flowd never got, data that never met its template, what the output refused or dropped, and the
losses exporters report themselves. Pure: metrics text in, a summary out.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from flowd.server.metrics import Samples, parse_samples

PARKED_LOSSES = ("dropped", "expired", "shutdown")
OUTPUT_LOSSES = {
    "flowd_sink_rejected_documents_total": "rejected by the sink",
    "flowd_es_docs_dead_lettered_total": "dead-lettered by Elasticsearch",
    "flowd_es_docs_dropped_total": "dropped at shutdown (cluster and spool full)",
}
REPORTED = {"not_sent_flow_total_count": "not sent (flows)", "ignored_packet_total_count": "ignored (packets)"}


def _total(samples: Samples, name: str, **match: str) -> float:
    return sum(value for labels, value in samples.get(name, []) if all(labels.get(k) == v for k, v in match.items()))


def _by(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    totals: dict[tuple[str, ...], float] = defaultdict(float)
    for labels, value in samples.get(name, []):
        totals[tuple(labels.get(key, "") for key in keys)] += value
    return dict(totals)


@dataclass
class ExporterRow:
    exporter: str
    protocol: str
    datagrams: int = 0
    missed_exports: int = 0
    decode_errors: int = 0
    reported: dict[str, int] = field(default_factory=dict)


@dataclass
class Status:
    workers_alive: int
    worker_restarts: int
    datagrams_received: int
    flows_out: int
    kernel_drops: int
    queue_drops: int
    allowlist_drops: int
    decode_errors: dict[str, int]
    """By reason."""
    parked_now: int
    parked_losses: dict[str, int]
    output_losses: dict[str, int]
    spool_bytes: int
    exporters: list[ExporterRow]

    @property
    def losses(self) -> int:
        """Everything counted as lost inside flowd or on the way to it (not what exporters report)."""
        return (
            self.kernel_drops
            + self.queue_drops
            + sum(self.decode_errors.values())
            + sum(row.missed_exports for row in self.exporters)
            + sum(self.parked_losses.values())
            + sum(self.output_losses.values())
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(text: str) -> Status:
    samples = parse_samples(text)
    rows: dict[tuple[str, str], ExporterRow] = {}

    def row(exporter: str, protocol: str) -> ExporterRow:
        return rows.setdefault((exporter, protocol), ExporterRow(exporter, protocol))

    for (exporter, protocol), value in _by(samples, "flowd_exporter_datagrams_total", "exporter", "protocol").items():
        row(exporter, protocol).datagrams = int(value)
    for (exporter, protocol), value in _by(
        samples, "flowd_export_sequence_missed_total", "exporter", "protocol"
    ).items():
        row(exporter, protocol).missed_exports = int(value)
    for (exporter, protocol), value in _by(samples, "flowd_decode_errors_total", "exporter", "protocol").items():
        row(exporter, protocol).decode_errors += int(value)
    for (exporter, counter), value in _by(samples, "flowd_exporter_reported", "exporter", "counter").items():
        if counter in REPORTED:
            # Reports come over NetFlow v9 or IPFIX: shown on the exporter's first row.
            owner = next((r for key, r in sorted(rows.items()) if key[0] == exporter), None) or row(exporter, "")
            owner.reported[counter] = int(value)
    errors = {reason: int(value) for (reason,), value in _by(samples, "flowd_decode_errors_total", "reason").items()}
    return Status(
        workers_alive=int(_total(samples, "flowd_workers", state="alive")),
        worker_restarts=int(_total(samples, "flowd_worker_restarts_total")),
        datagrams_received=int(_total(samples, "flowd_datagrams_received_total")),
        flows_out=int(_total(samples, "flowd_flows_out_total")),
        kernel_drops=int(_total(samples, "flowd_kernel_drops_total")),
        queue_drops=int(_total(samples, "flowd_ingress_drops_total")),
        allowlist_drops=int(_total(samples, "flowd_allowlist_drops_total")),
        decode_errors=errors,
        parked_now=int(_total(samples, "flowd_parked_records")),
        parked_losses={
            event: int(_total(samples, "flowd_parked_events_total", event=event)) for event in PARKED_LOSSES
        },
        output_losses={label: int(_total(samples, name)) for name, label in OUTPUT_LOSSES.items()},
        spool_bytes=int(_total(samples, "flowd_es_spool_bytes")),
        exporters=[rows[key] for key in sorted(rows)],
    )


def describe(status: Status, source: str) -> str:
    lines = [
        f"flowd at {source}: {status.workers_alive} worker(s) alive, {status.worker_restarts:,} restart(s)",
        f"received {status.datagrams_received:,} datagrams; {status.flows_out:,} documents out",
        f"lost before decoding: kernel {status.kernel_drops:,}, queue full {status.queue_drops:,}"
        f" (not allowed, dropped on purpose: {status.allowlist_drops:,})",
        "decode errors: "
        + (", ".join(f"{reason} {count:,}" for reason, count in sorted(status.decode_errors.items())) or "none"),
        f"waiting for templates: {status.parked_now:,} data sets now; lost: "
        + ", ".join(f"{event} {count:,}" for event, count in status.parked_losses.items()),
        "output: "
        + ", ".join(f"{label} {count:,}" for label, count in status.output_losses.items())
        + f"; spool {status.spool_bytes:,} bytes",
    ]
    if status.exporters:
        header = ("exporter", "protocol", "datagrams", "missed exports", "decode errors", *REPORTED.values())
        table = [header] + [
            (
                row.exporter,
                row.protocol,
                f"{row.datagrams:,}",
                f"{row.missed_exports:,}",
                f"{row.decode_errors:,}",
                *(f"{row.reported[c]:,}" if c in row.reported else "-" for c in REPORTED),
            )
            for row in status.exporters
        ]
        widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]
        lines.append(f"exporters ({len(status.exporters)}):")
        lines += [
            ("  " + "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))).rstrip()
            for cells in table
        ]
    verdict = "nothing counted as lost" if status.losses == 0 else f"{status.losses:,} counted as lost (see above)"
    lines.append(verdict)
    return "\n".join(lines)
