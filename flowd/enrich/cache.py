"""A bounded LRU cache whose entries expire after a TTL, with hit/miss/eviction counters.

Every enrichment table keyed by what the network sends (addresses, MACs, names) goes through one
of these, so none can grow without bound (design.md section 7). Time is an argument or an injected
clock, never read behind the caller's back, so expiry is tested without sleeping.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Clock = Callable[[], float]
"""Seconds on a monotonic scale; `time.monotonic` unless a test injects its own."""


class TtlLruCache(Generic[K, V]):
    """At most `max_size` entries, each valid for `ttl_s` seconds after it was stored.

    Values must not be None: `get` returns None for "not cached". A `max_size` of 0 disables the
    cache (every `get` misses and `put` stores nothing).
    """

    __slots__ = ("_clock", "_entries", "evictions", "expirations", "hits", "max_size", "misses", "name", "ttl_s")

    def __init__(self, max_size: int, ttl_s: float, clock: Clock = time.monotonic, name: str = "cache") -> None:
        if max_size < 0:
            raise ValueError(f"{name}: max_size must be >= 0, got {max_size}")
        if ttl_s <= 0:
            raise ValueError(f"{name}: ttl_s must be > 0, got {ttl_s}")
        self.name = name
        self.max_size = max_size
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        """Entries pushed out by the size bound."""
        self.expirations = 0
        """Entries found stale on access."""

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def now(self) -> float:
        return self._clock()

    def get(self, key: K, now: float | None = None) -> V | None:
        """The cached value, or None when absent or expired. Pass `now` to read the clock once per batch."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if now is None:
            now = self._clock()
        if entry[0] <= now:
            del self._entries[key]
            self.expirations += 1
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def get_many(self, keys: list[K], now: float) -> list[V | None]:
        """`get` of every key at one time, in one loop (a batch's distinct addresses)."""
        entries = self._entries
        lookup = entries.get
        refresh = entries.move_to_end
        found: list[V | None] = []
        append = found.append
        hits = 0
        for key in keys:
            entry = lookup(key)
            if entry is None:
                append(None)
            elif entry[0] <= now:
                del entries[key]
                self.expirations += 1
                append(None)
            else:
                refresh(key)
                hits += 1
                append(entry[1])
        self.hits += hits
        self.misses += len(keys) - hits
        return found

    def put(self, key: K, value: V, now: float | None = None, ttl_s: float | None = None) -> None:
        if self.max_size == 0:
            return
        if now is None:
            now = self._clock()
        entries = self._entries
        entries[key] = (now + (self.ttl_s if ttl_s is None else ttl_s), value)
        entries.move_to_end(key)
        while len(entries) > self.max_size:
            entries.popitem(last=False)
            self.evictions += 1

    def pop(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[1]

    def clear(self) -> None:
        self._entries.clear()

    def stats(self) -> dict[str, int]:
        """Counters for metrics, prefixed with the cache's name."""
        prefix = self.name
        return {
            f"{prefix}_hits": self.hits,
            f"{prefix}_misses": self.misses,
            f"{prefix}_evictions": self.evictions,
            f"{prefix}_expirations": self.expirations,
            f"{prefix}_size": len(self._entries),
        }
