"""What exporters report about themselves in options data, as `flowd_exporter_reported`.

Sequence numbers show what was lost between an exporter and flowd. Some losses happen before that,
inside the exporter: a full flow cache, a metering process that skipped packets, records it never
sent. Exporters report these in options records: IPFIX's Metering Process and Exporting Process
Reliability Statistics (RFC 7011 section 4.2 and 4.3), and Cisco's NetFlow v9 exporter statistics.
The values are the exporter's running totals. Each one becomes a gauge per exporter, observation
domain (v9 source id) and counter: a domain is a metering or exporting process of its own, which
restarts, or goes quiet, on its own. A total that falls means that process restarted, and
`increase()` treats it as a reset. A sum over domains fell whenever one of them restarted or was
let go, and `increase()` then counted the other domains' whole totals as new loss.
"""

from __future__ import annotations

import time
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
"""Exporter addresses summed into one series (they share it when `metrics.exporter_label_limit`
folds them into one label): bounds what spoofed sources can make flowd keep."""
MAX_SERIES = 10_000
"""Series (exporter label, domain, counter) kept; the same bound for domains."""
MAX_SOURCES = 131_072
"""(series, exporter address) totals kept in all, about 90 bytes each: the two caps above alone
let spoofed sources and domains make 10,000 x 10,000 of them."""
MAX_RETIRED = 131_072
"""Addresses whose last total is kept, once let go, so that their return is not counted twice.
Past it, a total let go is kept in its series' sum without its address ("forgotten"), and the
next addresses to join the series take it back out, each up to what it reports: a return is not
counted twice, and a newcomer may be under-counted by at most the forgotten totals (each such
report counted in `flowd_exporter_reports_ignored`)."""
MAX_VALUE = 2**64 - 1


STALE_AFTER_S = 1_800.0
"""A source not heard from for this long is let go: it has moved to another worker (the kernel
rehashes exporters when workers restart) or stopped, and its last total must not stay counted."""
PRUNE_EVERY_S = 60.0

Series = tuple[str, str, str]
"""(exporter label, observation domain or v9 source id, counter)."""


class ExporterReports:
    """Keeps each exporter's latest reported totals and sets `flowd_exporter_reported` from them.
    Workers combine the gauge by its largest value: an exporter that moved between workers is
    in both for a while, with the newer (larger) running total in the one it moved to."""

    def __init__(
        self, stats: WorkerStats, exporter_label: Callable[[str], str], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stats = stats
        self.exporter_label = exporter_label
        self._clock = clock
        self._latest: dict[Series, dict[str, tuple[int, float]]] = {}
        """(exporter label, domain, counter) -> {exporter address: (latest total, when)}: one address
        but where the label limit folds several exporters into one label."""
        self._totals: dict[Series, int] = {}
        self._retired: dict[Series, int] = {}
        """Last totals of addresses let go from a series that others still share, so that the sum
        does not fall (a fall reads as the exporter's restart)."""
        self._retired_by: dict[Series, dict[str, int]] = {}
        """The part of `_retired` kept by address (up to `MAX_RETIRED` in all): an address that
        reports again takes its total back out, or its running total would be counted twice."""
        self._forgotten: dict[Series, int] = {}
        """The rest of `_retired`: totals let go past `MAX_RETIRED`, taken back out by the
        addresses that join the series next (one may be a forgotten one's return)."""
        self._retired_count = 0
        self._sources = 0
        """Addresses summed over every series of `_latest`."""
        self._pruned_at = clock()

    @property
    def has_sources(self) -> bool:
        return bool(self._latest)

    def learn(self, documents: Iterable[dict[str, Any]]) -> None:
        """Takes the totals in options documents; anything else in them is left alone."""
        now = self._clock()
        for document in documents:
            for key, counter in _KEYS:
                value = document.get(key)
                if type(value) is not int or not 0 <= value <= MAX_VALUE:
                    continue
                address = str(document.get("observer.ip"))
                domain = document.get("netflow.exporter.source_id")
                series = (self.exporter_label(address), "" if domain is None else str(domain), counter)
                sources = self._latest.get(series)
                previous = None if sources is None else sources.get(address)
                if previous is None and not self._room_for(sources):
                    self.stats.inc("flowd_exporter_reports_ignored")
                    continue
                if sources is None:
                    sources = self._latest[series] = {}
                if previous is None:
                    self._sources += 1
                    previous = self._rejoin(series, address, value, now)
                sources[address] = (value, now)
                total = self._totals.get(series, 0) + value - (previous[0] if previous else 0)
                self._totals[series] = total
                self.stats.set("flowd_exporter_reported", series, total)
        self.maybe_prune(now)

    def _rejoin(self, series: Series, address: str, value: int, now: float) -> tuple[int, float] | None:
        """An address let go from `series` reports again: its last total leaves the retired sum,
        to be counted as its latest (the series grows by what it reported since). An address not
        kept takes up to `value` of the forgotten totals instead: it may be one of them."""
        retired = self._retired_by.get(series)
        earlier = None if retired is None else retired.pop(address, None)
        if earlier is None:
            return self._take_forgotten(series, value, now)
        self._retired_count -= 1
        self._retired[series] -= earlier
        if not retired:
            del self._retired_by[series]
        return (earlier, now)

    def _take_forgotten(self, series: Series, value: int, now: float) -> tuple[int, float] | None:
        """Up to `value` of `series`' forgotten totals, taken as the joining address's earlier
        total: the series neither falls nor counts a return twice."""
        forgotten = self._forgotten.get(series, 0)
        taken = min(value, forgotten)
        if not taken:
            return None
        self.stats.inc("flowd_exporter_reports_ignored")
        self._retired[series] -= taken
        if taken == forgotten:
            del self._forgotten[series]
        else:
            self._forgotten[series] = forgotten - taken
        return (taken, now)

    def _room_for(self, sources: dict[str, tuple[int, float]] | None) -> bool:
        """Whether a new address may join a series (None: a new series)."""
        if self._sources >= MAX_SOURCES:
            return False
        if sources is None:
            return len(self._latest) < MAX_SERIES
        return len(sources) < MAX_SOURCES_PER_SERIES

    def maybe_prune(self, now: float | None = None) -> None:
        """`prune` at most every `PRUNE_EVERY_S` (the decoder calls it each batch)."""
        now = self._clock() if now is None else now
        if now - self._pruned_at >= PRUNE_EVERY_S:
            self.prune(now)

    def prune(self, now: float) -> None:
        """Let go of sources not heard from for `STALE_AFTER_S`. A series left with none goes
        (Prometheus ends it: no reset is read); one that others still share keeps the total."""
        self._pruned_at = now
        gauges = self.stats.gauges.get("flowd_exporter_reported", {})
        for series, sources in list(self._latest.items()):
            stale = [address for address, (_, seen) in sources.items() if now - seen > STALE_AFTER_S]
            if not stale:
                continue
            self._sources -= len(stale)
            if len(stale) == len(sources):
                del self._latest[series]
                self._totals.pop(series, None)
                self._retired.pop(series, None)
                self._forgotten.pop(series, None)
                self._retired_count -= len(self._retired_by.pop(series, {}))
                gauges.pop(series, None)
                continue
            for address in stale:
                value = sources.pop(address)[0]
                self._retired[series] = self._retired.get(series, 0) + value
                if self._retired_count < MAX_RETIRED:
                    self._retired_by.setdefault(series, {})[address] = value
                    self._retired_count += 1
                else:
                    self._forgotten[series] = self._forgotten.get(series, 0) + value
            self._totals[series] = self._retired[series] + sum(value for value, _ in sources.values())
