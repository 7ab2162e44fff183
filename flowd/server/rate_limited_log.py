"""A log that holds back repeats: each line keyed (by source and reason, say), and at most a few
lines per interval in all, so that a storm of bad datagrams cannot flood the log. What it held
back is counted in the next line it lets through. Used wherever traffic from the network can
cause a warning (the batch decoder, the TCP listener)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

LOG_INTERVAL_S = 10.0
MAX_LOG_KEYS = 1024
MAX_LINES_PER_INTERVAL = 20


class RateLimitedLog:
    """At most one line per key per interval, and `MAX_LINES_PER_INTERVAL` in all (keys hold the
    source address: a storm from many sources must not log a line each); the lines held back are
    counted in the next one). Held-back counts are kept per key for at most `MAX_LOG_KEYS` keys;
    the rest are summed into one count the next line reports, so that a storm from spoofed
    sources cannot grow the table of counts without bound."""

    def __init__(
        self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ):
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._suppressed_elsewhere = 0
        """Lines held back under keys past the `MAX_LOG_KEYS` kept in `_suppressed`."""
        self._window_started = float("-inf")
        self._window_lines = 0

    def warning(self, key: str, message: str) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if now - self._window_started >= self.interval_s:
            self._window_started, self._window_lines = now, 0
        if (last is not None and now - last < self.interval_s) or self._window_lines >= MAX_LINES_PER_INTERVAL:
            suppressed = self._suppressed
            if key in suppressed or len(suppressed) < MAX_LOG_KEYS:
                suppressed[key] = suppressed.get(key, 0) + 1
            else:
                self._suppressed_elsewhere += 1
            return False
        self._window_lines += 1
        if key not in self._last and len(self._last) >= MAX_LOG_KEYS:
            self._last.clear()
        self._last[key] = now
        held = self._suppressed.pop(key, 0)
        elsewhere, self._suppressed_elsewhere = self._suppressed_elsewhere, 0
        notes = [f"{held} similar suppressed"] if held else []
        if elsewhere:
            notes.append(f"{elsewhere} more suppressed from other sources")
        self.logger.warning("%s%s", message, f" ({', '.join(notes)})" if notes else "")
        return True
