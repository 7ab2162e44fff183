"""A bounded LRU cache whose entries expire after a TTL, with hit/miss/eviction counters.

Every enrichment table keyed by what the network sends (addresses, MACs, names) goes through one
of these, so none can grow without bound (design.md section 7). Time is an argument or an injected
clock, never read behind the caller's back, so expiry is tested without sleeping.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from itertools import compress, repeat
from operator import is_not
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Clock = Callable[[], float]
"""Seconds on a monotonic scale; `time.monotonic` unless a test injects its own."""


class BoundedCache:
    """What every cache here shares: its bound, TTL and clock, checked once, and the counters
    reported as metrics."""

    __slots__ = ("_clock", "evictions", "expirations", "hits", "max_size", "misses", "name", "ttl_s")

    def __init__(self, max_size: int, ttl_s: float, clock: Clock, name: str) -> None:
        if max_size < 0:
            raise ValueError(f"{name}: max_size must be >= 0, got {max_size}")
        if ttl_s <= 0:
            raise ValueError(f"{name}: ttl_s must be > 0, got {ttl_s}")
        self.name = name
        self.max_size = max_size
        self.ttl_s = ttl_s
        self._clock = clock
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        """Entries pushed out by the size bound."""
        self.expirations = 0
        """Entries removed because their TTL ran out."""

    def __len__(self) -> int:
        raise NotImplementedError

    def stats(self) -> dict[str, int]:
        """Counters for metrics, prefixed with the cache's name."""
        prefix = self.name
        return {
            f"{prefix}_hits": self.hits,
            f"{prefix}_misses": self.misses,
            f"{prefix}_evictions": self.evictions,
            f"{prefix}_expirations": self.expirations,
            f"{prefix}_size": len(self),
        }


class TtlLruCache(BoundedCache, Generic[K, V]):
    """At most `max_size` entries, each valid for `ttl_s` seconds after it was stored.

    Values must not be None: `get` returns None for "not cached". A `max_size` of 0 disables the
    cache (every `get` misses and `put` stores nothing).

    Expiry is kept in a heap and applied before every read, so a read is a plain dict lookup
    and `get_many` looks up and refreshes a whole batch of keys in C loops (`map`): a batch's
    distinct addresses cost a few tens of nanoseconds each instead of a Python loop iteration.
    """

    __slots__ = ("_entries", "_expiry", "_heap", "_serial")

    def __init__(self, max_size: int, ttl_s: float, clock: Clock = time.monotonic, name: str = "cache") -> None:
        super().__init__(max_size, ttl_s, clock, name)
        self._entries: OrderedDict[K, V] = OrderedDict()
        """Values, least recently used first."""
        self._expiry: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        """(expiry, serial, key); an item whose expiry no longer matches `_expiry` is stale."""
        self._serial = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def now(self) -> float:
        return self._clock()

    def _expire(self, now: float) -> None:
        heap = self._heap
        expiry = self._expiry
        while heap and heap[0][0] <= now:
            when, _, key = heapq.heappop(heap)
            if expiry.get(key) == when:
                del expiry[key]
                del self._entries[key]
                self.expirations += 1

    def get(self, key: K, now: float | None = None) -> V | None:
        """The cached value, or None when absent or expired. Pass `now` to read the clock once per batch."""
        if self._heap:
            if now is None:
                now = self._clock()
            if self._heap[0][0] <= now:
                self._expire(now)
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def get_many(self, keys: list[K], now: float) -> list[V | None]:
        """`get` of every key at one time (a batch's distinct addresses)."""
        if self._heap and self._heap[0][0] <= now:
            self._expire(now)
        entries = self._entries
        found = list(map(entries.get, keys))
        misses = found.count(None)
        if misses < len(found):
            deque(map(entries.move_to_end, compress(keys, map(is_not, found, repeat(None)))), maxlen=0)
        self.hits += len(found) - misses
        self.misses += misses
        return found

    def put(self, key: K, value: V, now: float | None = None, ttl_s: float | None = None) -> None:
        if self.max_size == 0:
            return
        if now is None:
            now = self._clock()
        entries = self._entries
        when = now + (self.ttl_s if ttl_s is None else ttl_s)
        entries[key] = value
        entries.move_to_end(key)
        self._expiry[key] = when
        self._serial += 1
        heapq.heappush(self._heap, (when, self._serial, key))
        while len(entries) > self.max_size:
            old, _ = entries.popitem(last=False)
            del self._expiry[old]
            self.evictions += 1
        if len(self._heap) > 2 * len(entries) + 1024:  # replaced and evicted keys left stale items
            self._heap = [(when, serial, key) for when, serial, key in self._heap if self._expiry.get(key) == when]
            heapq.heapify(self._heap)

    def pop(self, key: K) -> V | None:
        self._expiry.pop(key, None)
        return self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
        self._expiry.clear()
        self._heap.clear()
