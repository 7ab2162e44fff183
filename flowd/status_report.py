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
    "flowd_es_docs_dropped_total": "dropped at shutdown (neither delivered nor spooled)",
    "flowd_es_docs_spool_lost_total": "spool files gone before replay",
    "flowd_shutdown_lost_total": "not written when a drain ran out of time",
    "flowd_worker_lost_documents_total": "held by workers that died",
}
OUTPUT_MATCH = {"flowd_shutdown_lost_total": {"what": "documents"}}
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
    worker_lost: int
    """Datagrams queued in workers that died (at their last report)."""
    drain_lost: int
    """Datagrams still queued when a worker's drain ran out of time."""
    decode_errors: dict[str, int]
    """By reason."""
    parked_now: int
    parked_losses: dict[str, int]
    output_losses: dict[str, int]
    spool_bytes: int
    exporters: list[ExporterRow]

    @property
    def datagrams_lost(self) -> int:
        """Datagrams lost inside flowd before decoding."""
        return self.kernel_drops + self.queue_drops + self.worker_lost + self.drain_lost

    @property
    def missed_exports(self) -> int:
        """Exports the exporters numbered that never arrived: lost on the way, and also the ones
        flowd dropped itself (a dropped datagram is a gap in the numbers too)."""
        return sum(row.missed_exports for row in self.exporters)

    @property
    def losses(self) -> int:
        """Anything counted as lost, in flowd or on the way to it (not what exporters report).
        The parts count different things (datagrams, errors, exports, data sets, documents), so
        this answers "is anything lost?"; `describe` gives each part with its unit."""
        return (
            self.datagrams_lost
            + sum(self.decode_errors.values())
            + self.missed_exports
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
        worker_lost=int(_total(samples, "flowd_worker_lost_datagrams_total")),
        drain_lost=int(_total(samples, "flowd_shutdown_lost_total", what="datagrams")),
        decode_errors=errors,
        parked_now=int(_total(samples, "flowd_parked_records")),
        parked_losses={
            event: int(_total(samples, "flowd_parked_events_total", event=event)) for event in PARKED_LOSSES
        },
        output_losses={
            label: int(_total(samples, name, **OUTPUT_MATCH.get(name, {}))) for name, label in OUTPUT_LOSSES.items()
        },
        spool_bytes=int(_total(samples, "flowd_es_spool_bytes")),
        exporters=[rows[key] for key in sorted(rows)],
    )


def describe(status: Status, source: str) -> str:
    lines = [
        f"flowd at {source}: {status.workers_alive} worker(s) alive, {status.worker_restarts:,} restart(s)",
        f"received {status.datagrams_received:,} datagrams; {status.flows_out:,} documents out",
        f"lost before decoding: kernel {status.kernel_drops:,}, queue full {status.queue_drops:,},"
        f" in workers that died {status.worker_lost:,}, when a drain ran out of time {status.drain_lost:,}"
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
    lines.append(verdict(status))
    return "\n".join(lines)


def verdict(status: Status) -> str:
    """The losses by what they count; datagrams, errors, data sets and documents are not added up,
    and exports missing by sequence number include flowd's own drops, so they stand apart."""
    if status.losses == 0:
        return "nothing counted as lost"
    parts = [
        (status.datagrams_lost, "datagram", "before decoding"),
        (sum(status.decode_errors.values()), "decode error", ""),
        (sum(status.parked_losses.values()), "data set", "that never met a template"),
        (sum(status.output_losses.values()), "document", "at the output"),
    ]
    counted = ", ".join(_counted(count, noun, where) for count, noun, where in parts if count)
    line = f"counted as lost: {counted}" if counted else "counted as lost in flowd: nothing"
    if status.missed_exports:
        missing = _counted(status.missed_exports, "export", "missing by sequence number")
        line += f"; {missing} (on the way, and flowd's own drops above)"
    return line


def _counted(count: int, noun: str, where: str) -> str:
    return " ".join(part for part in (f"{count:,}", noun if count == 1 else noun + "s", where) if part)
