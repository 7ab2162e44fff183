"""What exporters report about themselves in options data, as `flowd_exporter_reported`.

Sequence numbers show what was lost between an exporter and flowd. Some losses happen before that,
inside the exporter: a full flow cache, a metering process that skipped packets, records it never
sent. Exporters report these in options records: IPFIX's Metering Process and Exporting Process
Reliability Statistics (RFC 7011 section 4.2 and 4.3), and Cisco's NetFlow v9 exporter statistics.
The values are the exporter's running totals. Each one becomes a gauge per exporter and counter,
summed over the exporter's observation domains (v9 source ids). A total that falls means the
exporter restarted, and `increase()` treats it as a reset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flowd.server.metrics import WorkerStats

REPORTED_COUNTERS = (
    "exported_message_total_count",
    "exported_flow_record_total_count",
    "exported_octet_total_count",
    "observed_flow_total_count",
    "ignored_packet_total_count",
    "ignored_octet_total_count",
    "ignored_data_record_total_count",
    "not_sent_flow_total_count",
    "not_sent_packet_total_count",
    "not_sent_octet_total_count",
)
"""IANA elements 41, 42, 40, 163, 164, 165, 407, 166, 167 and 168, by their document names."""
_KEYS = tuple((f"netflow.{name}", name) for name in REPORTED_COUNTERS)
MAX_SOURCES_PER_SERIES = 10_000
"""Exporters and domains summed into one series: bounds what spoofed sources can make flowd keep."""
MAX_VALUE = 2**64 - 1


class ExporterReports:
    """Keeps each exporter's latest reported totals and sets `flowd_exporter_reported` from them."""

    def __init__(self, stats: WorkerStats, exporter_label: Callable[[str], str]) -> None:
        self.stats = stats
        self.exporter_label = exporter_label
        self._latest: dict[tuple[str, str], dict[tuple[str, Any], int]] = {}
        """(exporter label, counter) -> {(exporter address, domain): latest total}."""

    def learn(self, documents: Iterable[dict[str, Any]]) -> None:
        """Takes the totals in options documents; anything else in them is left alone."""
        for document in documents:
            for key, counter in _KEYS:
                value = document.get(key)
                if type(value) is not int or not 0 <= value <= MAX_VALUE:
                    continue
                address = str(document.get("observer.ip"))
                label = self.exporter_label(address)
                sources = self._latest.setdefault((label, counter), {})
                source = (address, document.get("netflow.exporter.source_id"))
                if source not in sources and len(sources) >= MAX_SOURCES_PER_SERIES:
                    continue
                sources[source] = value
                self.stats.set("flowd_exporter_reported", (label, counter), sum(sources.values()))
