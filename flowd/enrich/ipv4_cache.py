"""`TtlLruCache`'s bounds and counters for IPv4 addresses (and IPv6 ones, `Ipv6Cache`), looked up a
whole batch at a time.

The enrichment chain looks up every distinct address of a table. With a dict, each costs a Python
lookup, a move to the end of the LRU order and a few list comprehensions over what it finds: about
a third of a second per million addresses, a tenth of a worker's time. Here the addresses are
uint32 keys in a sorted numpy array searched for all of a table's addresses at once, and what the
chain needs per address (validity, internal or not, its field groups) is a row of small integers
read for all of them with one gather; the Python value is kept for the rare reader that needs it
(reverse DNS).

New keys wait in a dict and are merged into the sorted array once enough have gathered, so a batch
of first-seen addresses does not rewrite the array. Least recently used means least recently used
batch: every lookup stamps its keys with a batch counter, and when the size bound is passed the
oldest stamps go, a sixteenth of the cache at once so eviction is not paid per insert. Expired
entries are misses when read and are swept out at each merge.
"""

from __future__ import annotations

import time
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from flowd.enrich.cache import BoundedCache, Clock
from flowd.output.distinct import sixteen_byte_keys
from flowd.output.render import IPV6_DTYPE

V = TypeVar("V")
G = TypeVar("G", bound=np.generic)
Slots = npt.NDArray[np.int64]
"""Per key looked up: its slot in the cache, -1 when not cached."""

_MIN_MERGE = 64


class Ipv4Cache(BoundedCache, Generic[V]):
    """At most `max_size` IPv4 addresses (uint32), each with a value and `width` integers, valid
    for `ttl_s` seconds after it was stored. A `max_size` of 0 disables the cache."""

    KEY: type[np.unsignedinteger[Any]] = np.uint32
    """The keys' type."""

    __slots__ = (
        "_expires",
        "_free",
        "_keys",
        "_keys_slots",
        "_pending",
        "_slot_keys",
        "_tick",
        "_used",
        "_values",
        "attributes",
    )

    def __init__(
        self, max_size: int, ttl_s: float, width: int, clock: Clock = time.monotonic, name: str = "ipv4_cache"
    ) -> None:
        super().__init__(max_size, ttl_s, clock, name)
        self._keys = np.empty(0, dtype=self.KEY)
        """Merged keys, sorted."""
        self._keys_slots = np.empty(0, dtype=np.int64)
        """The slot of each merged key; -1 once the entry is gone (swept at the next merge)."""
        self._pending: dict[int, int] = {}
        """Keys not merged yet -> slot."""
        self._values: list[V | None] = []
        self.attributes = np.zeros((0, width), dtype=np.int64)
        """Per slot: the integers stored with the value."""
        self._expires = np.empty(0, dtype=np.float64)
        self._used = np.empty(0, dtype=np.int64)
        self._slot_keys = np.empty(0, dtype=self.KEY)
        self._free: list[int] = []
        self._tick = 0

    def __len__(self) -> int:
        return len(self._values) - len(self._free)

    def value(self, slot: int) -> V:
        value = self._values[slot]
        assert value is not None, "a slot returned by lookup or put_many holds a value"
        return value

    def rows(self, slots: Slots) -> npt.NDArray[np.int64]:
        """The attribute rows of `slots` (a new array; zeros where a slot is -1)."""
        if not len(self.attributes):
            return np.zeros((len(slots), self.attributes.shape[1]), dtype=np.int64)
        rows = self.attributes[np.maximum(slots, 0)]
        rows[slots < 0] = 0
        return rows

    def lookup(self, keys: npt.NDArray[Any], now: float) -> Slots:
        """The slot of each key (-1: not cached or expired); refreshes the keys found."""
        self._tick += 1
        count = len(keys)
        slots = np.full(count, -1, dtype=np.int64)
        if len(self._keys):
            positions = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
            slots = np.where(self._keys[positions] == keys, self._keys_slots[positions], -1)
        if self._pending:
            unmerged = np.flatnonzero(slots < 0)
            if len(unmerged):
                get = self._pending.get
                slots[unmerged] = [get(key, -1) for key in keys[unmerged].tolist()]
        found = slots >= 0
        if found.any():
            expired = found & (self._expires[np.where(found, slots, 0)] <= now)
            if expired.any():
                self._remove(slots[expired])
                self.expirations += int(expired.sum())
                slots[expired] = -1
                found &= ~expired
            self._used[slots[found]] = self._tick
        hits = int(found.sum())
        self.hits += hits
        self.misses += count - hits
        return slots

    def put_many(self, keys: npt.NDArray[Any], values: list[V], attributes: npt.NDArray[np.int64], now: float) -> None:
        """Store keys that `lookup` did not find, with their values and attribute rows."""
        if not self.max_size or not len(keys):
            return
        expires = now + self.ttl_s
        merged = self._merged_slots(keys).tolist()
        for position, (key, value, row) in enumerate(zip(keys.tolist(), values, attributes, strict=True)):
            slot = self._pending.get(key)
            if slot is None:
                slot = merged[position]  # a key stored already (two IPv6 addresses sharing one): it keeps its slot
            if slot < 0:
                slot = self._free.pop() if self._free else self._grow()
                self._pending[key] = slot
            self._stored(slot, position)
            self._values[slot] = value
            self.attributes[slot] = row
            self._expires[slot] = expires
            self._used[slot] = self._tick
            self._slot_keys[slot] = key
        if len(self) > self.max_size:
            self._evict(len(self) - self.max_size + self.max_size // 16)
        if len(self._pending) >= max(_MIN_MERGE, len(self._keys) // 16):
            self._merge(now)

    def clear(self) -> None:
        width = self.attributes.shape[1]
        self._keys = np.empty(0, dtype=self.KEY)
        self._keys_slots = np.empty(0, dtype=np.int64)
        self._pending.clear()
        self._values = []
        self.attributes = np.zeros((0, width), dtype=np.int64)
        self._expires = np.empty(0, dtype=np.float64)
        self._used = np.empty(0, dtype=np.int64)
        self._slot_keys = np.empty(0, dtype=self.KEY)
        self._free = []

    # -- internals ------------------------------------------------------------------------

    def _grow(self) -> int:
        slot = len(self._values)
        self._values.append(None)
        if slot >= len(self._expires):
            capacity = max(64, 2 * len(self._expires))
            self.attributes = _resized(self.attributes, capacity)
            self._expires = _resized(self._expires, capacity)
            self._used = _resized(self._used, capacity)
            self._slot_keys = _resized(self._slot_keys, capacity)
            self._grew(capacity)
        return slot

    def _stored(self, slot: int, position: int) -> None:
        """`put_many` stored its key at `position` in `slot` (for a subclass keeping more per slot)."""

    def _grew(self, capacity: int) -> None:
        """The per-slot arrays grew to `capacity` slots."""

    def _live_slots(self) -> Slots:
        live = np.ones(len(self._values), dtype=np.bool_)
        live[self._free] = False
        return np.flatnonzero(live)

    def _evict(self, count: int) -> None:
        """Remove the `count` least recently used entries."""
        live = self._live_slots()
        count = min(count, len(live))
        if count <= 0:
            return
        oldest = live[np.argpartition(self._used[live], count - 1)[:count]]
        self._remove(oldest)
        self.evictions += count

    def _merged_slots(self, keys: npt.NDArray[Any]) -> Slots:
        """The live slot of each key in the merged array; -1 where it has none."""
        if not len(self._keys):
            return np.full(len(keys), -1, dtype=np.int64)
        positions = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return np.where(self._keys[positions] == keys, self._keys_slots[positions], -1)

    def _remove(self, slots: Slots) -> None:
        """Free `slots` (each once, however often given: two IPv6 addresses sharing a key share
        its slot in one lookup)."""
        values = self._values
        slots = np.unique(slots)
        slots = slots[[values[slot] is not None for slot in slots.tolist()]]
        keys = self._slot_keys[slots]
        if len(self._keys):
            positions = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
            merged = (self._keys[positions] == keys) & (self._keys_slots[positions] == slots)
            self._keys_slots[positions[merged]] = -1
        pending = self._pending
        for key, slot in zip(keys.tolist(), slots.tolist(), strict=True):
            if pending.get(key) == slot:
                del pending[key]
        for slot in slots.tolist():
            values[slot] = None
        self._free.extend(slots.tolist())

    def _merge(self, now: float) -> None:
        """Fold the pending keys into the sorted array, dropping removed and expired entries."""
        live = self._keys_slots >= 0
        keys = np.concatenate([self._keys[live], np.fromiter(self._pending, dtype=self.KEY, count=len(self._pending))])
        slots = np.concatenate(
            [self._keys_slots[live], np.fromiter(self._pending.values(), dtype=np.int64, count=len(self._pending))]
        )
        self._pending = {}
        expired = self._expires[slots] <= now
        if expired.any():
            self._remove(slots[expired])  # only marks them: the arrays are rebuilt below
            self.expirations += int(expired.sum())
            keys, slots = keys[~expired], slots[~expired]
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._keys_slots = slots[order]


def _resized(array: npt.NDArray[G], capacity: int) -> npt.NDArray[G]:
    grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown


class Ipv6Cache(Ipv4Cache[V]):
    """The same for IPv6 addresses (16-byte values): keyed by a 64-bit key made of their two
    words, with the address itself kept per slot and compared at each lookup, so two addresses
    that share a key are never taken for each other (the one stored last keeps the slot)."""

    KEY = np.uint64

    __slots__ = ("_putting", "_slot_addresses")

    def __init__(
        self, max_size: int, ttl_s: float, width: int, clock: Clock = time.monotonic, name: str = "ipv6_cache"
    ) -> None:
        super().__init__(max_size, ttl_s, width, clock, name)
        self._slot_addresses = np.zeros(0, dtype=IPV6_DTYPE)
        self._putting = np.zeros(0, dtype=IPV6_DTYPE)

    def lookup(self, keys: npt.NDArray[Any], now: float) -> Slots:
        """The slot of each address (a `V16` array; -1: not cached, expired or another address)."""
        addresses = keys
        slots = super().lookup(sixteen_byte_keys(addresses), now)
        found = slots >= 0
        if found.any():
            other = found & (self._slot_addresses[np.where(found, slots, 0)] != addresses)
            if other.any():
                count = int(other.sum())
                slots[other] = -1
                self.hits -= count
                self.misses += count
        return slots

    def put_many(self, keys: npt.NDArray[Any], values: list[V], attributes: npt.NDArray[np.int64], now: float) -> None:
        """Store addresses (a `V16` array) that `lookup` did not find."""
        self._putting = keys
        try:
            super().put_many(sixteen_byte_keys(keys), values, attributes, now)
        finally:
            self._putting = np.zeros(0, dtype=IPV6_DTYPE)

    def clear(self) -> None:
        super().clear()
        self._slot_addresses = np.zeros(0, dtype=IPV6_DTYPE)

    def _stored(self, slot: int, position: int) -> None:
        self._slot_addresses[slot] = self._putting[position]

    def _grew(self, capacity: int) -> None:
        self._slot_addresses = _resized(self._slot_addresses, capacity)
