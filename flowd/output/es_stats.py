"""The Elasticsearch sink's counters: what /metrics exports as `flowd_es_*`.

Plain data, changed on the event loop only; `ElasticsearchSink.stats` flattens it and adds the
live gauges (memory queue, spool, requests in flight).
"""

from __future__ import annotations

from dataclasses import dataclass, field

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(slots=True)
class SinkStats:
    """Counters (monotonic) and gauges for /metrics; `ElasticsearchSink.stats` adds the live gauges."""

    docs_written: int = 0
    """Documents handed to `write`."""
    docs_indexed: int = 0
    docs_duplicate: int = 0
    """Answered 409 to `create`: already indexed by an earlier attempt; counted as done."""
    docs_failed: int = 0
    """Item failures of any kind (each attempt counts)."""
    docs_retried: int = 0
    docs_dead_lettered: int = 0
    dead_letters_unwritten: int = 0
    """Dead-lettered documents not written: the file was at `dead_letter_max_bytes`, or writing
    it failed (a disk error, logged)."""
    docs_dropped: int = 0
    """Lost at shutdown because neither the cluster nor the spool took them: both full, or the
    close cancelled before it spooled them (logged)."""
    docs_spool_lost: int = 0
    """Spooled, then lost: their file was gone when its turn to be replayed came."""
    bulk_requests: int = 0
    bulk_request_failures: int = 0
    """Requests that failed as a whole: connection errors, timeouts, 429, 5xx and other non-2xx."""
    retries: int = 0
    """Batches (or the failed part of one) put back for another attempt."""
    bulk_latency_seconds_sum: float = 0.0
    bulk_latency_seconds_count: int = 0
    bulk_latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    """Non-cumulative counts per LATENCY_BUCKETS_S upper bound, the last one for +Inf."""
    batches_replayed: int = 0
    docs_replayed: int = 0
    outages: int = 0

    def observe_latency(self, seconds: float) -> None:
        """One bulk request's time into the histogram."""
        self.bulk_latency_seconds_sum += seconds
        self.bulk_latency_seconds_count += 1
        for position, bound in enumerate(LATENCY_BUCKETS_S):
            if seconds <= bound:
                self.bulk_latency_buckets[position] += 1
                return
        self.bulk_latency_buckets[-1] += 1
