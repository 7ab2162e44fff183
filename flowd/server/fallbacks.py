"""Where a vectorised path gave up: counted and logged, since nothing else would show it.

Decoding (data sets, NetFlow v5, the sFlow walk and readers) and serialising (NDJSON from
columns) each have a fast path over a whole batch or table and a slow one per record. A fast
path that raises hands its work to the slow one, so nothing is lost, but it is a bug, and it
costs throughput: `flowd_fast_path_fallbacks{path}` counts each time, and the log names the
error, rate-limited per path.
"""

from __future__ import annotations

from flowd.server.metrics import WorkerStats
from flowd.server.rate_limited_log import RateLimitedLog

PATHS = ("data_sets", "netflow_v5_batch", "sflow_walk", "netflow_table", "sflow_samples", "sflow_tables", "ndjson")
"""The `path` label's values (the README lists them)."""


class Fallbacks:
    def __init__(self, stats: WorkerStats, log: RateLimitedLog) -> None:
        self.stats = stats
        self.log = log

    def fell_back(self, path: str, error: Exception) -> None:
        """`path` raised `error` and its work went the slow way."""
        self.stats.inc("flowd_fast_path_fallbacks", (path,))
        self.log.warning(
            f"fallback|{path}",
            f"{path}: the vectorised path failed, its work done one record at a time: {type(error).__name__}: {error}",
        )
