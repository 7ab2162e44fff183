"""`Ipv4Cache` and `Ipv6Cache` against a plain dict model: what it finds is what was stored and
has not expired, it never holds more than its bound, it forgets only by eviction or expiry (and,
for IPv6, when another address with the same 64-bit key is stored), and it evicts the least
recently used batches first."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowd.enrich.ipv4_cache import Ipv4Cache, Ipv6Cache
from flowd.output.distinct import sixteen_byte_keys

TTL_S = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


MASK = (1 << 64) - 1
ODD = 0x9E3779B97F4A7C15


def addresses(keys: list[int], colliding: bool) -> np.ndarray[Any, Any]:
    """16-byte addresses for model keys. Colliding: keys 2p and 2p + 1 get different addresses
    with the same 64-bit cache key (the second's high word is 1 and its low word makes up for it)."""
    raw = b""
    for key in keys:
        pair, member = (key >> 1, key & 1) if colliding else (key, 0)
        low = pair ^ (member * ODD & MASK)
        raw += low.to_bytes(8, "little") + member.to_bytes(8, "little")
    return np.frombuffer(raw, dtype="V16")


def as_keys(cache: Ipv4Cache[str], keys: list[int]) -> np.ndarray[Any, Any]:
    if isinstance(cache, Ipv6Cache):
        return addresses(keys, cache.name == "colliding")
    return np.array(keys, dtype=np.uint32)


def make_cache(variant: str, size: int, clock: Clock) -> Ipv4Cache[str]:
    if variant == "ipv4":
        return Ipv4Cache(size, TTL_S, 2, clock)
    return Ipv6Cache(size, TTL_S, 2, clock, "colliding" if variant == "ipv6-colliding" else "ipv6_cache")


def test_colliding_addresses_share_a_key() -> None:
    pair = addresses([6, 7], colliding=True)
    assert pair[0] != pair[1]
    assert sixteen_byte_keys(pair).tolist()[0] == sixteen_byte_keys(pair).tolist()[1]


def lookup(cache: Ipv4Cache[str], keys: list[int], now: float) -> dict[int, str | None]:
    slots = cache.lookup(as_keys(cache, keys), now)
    return {key: None if slot < 0 else cache.value(int(slot)) for key, slot in zip(keys, slots.tolist(), strict=True)}


def store(cache: Ipv4Cache[str], found: dict[int, str | None], now: float, tag: str) -> dict[int, str]:
    """Put every key `lookup` missed, as `tag:key` with the key in its attribute row."""
    new = {key: f"{tag}:{key}" for key, value in found.items() if value is None}
    keys = list(new)
    rows = np.array([[key, 2 * key] for key in keys], dtype=np.int64).reshape(-1, 2)
    cache.put_many(as_keys(cache, keys), list(new.values()), rows, now)
    return new


operations = st.lists(
    st.tuples(
        st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 40), min_size=0, max_size=60, unique=True),
        st.floats(0.0, 6.0),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(operations, st.sampled_from([0, 1, 5, 17, 100, 10_000]), st.sampled_from(["ipv4", "ipv6", "ipv6-colliding"]))
def test_the_cache_keeps_what_a_dict_would_within_its_bound(
    steps: list[tuple[list[int], float]], size: int, variant: str
) -> None:
    clock = Clock()
    cache = make_cache(variant, size, clock)
    stored: dict[int, tuple[str, float]] = {}  # the model: key -> (value, expiry)
    looked_up = 0
    for number, (keys, advance) in enumerate(steps):
        clock.now += advance
        now = clock.now
        found = lookup(cache, keys, now)
        looked_up += len(keys)
        for key, value in found.items():
            if value is not None:
                assert key in stored and stored[key][0] == value, "found a value never stored for it"
                assert stored[key][1] > now, "found an expired value"
        forgotten = [k for k, v in found.items() if v is None and k in stored and stored[k][1] > now]
        if size >= 10_000 and variant != "ipv6-colliding":
            assert not forgotten, "nothing is evicted below the bound"
        new = store(cache, found, now, str(number))
        for key, value in new.items():
            stored[key] = (value, now + TTL_S)
        assert len(cache) <= size
        slots = cache.lookup(as_keys(cache, list(new)), now)
        looked_up += len(new)
        for key, slot in zip(new, slots.tolist(), strict=True):
            if slot >= 0:
                assert cache.attributes[slot].tolist() == [key, 2 * key]
    assert cache.hits + cache.misses == looked_up
    assert cache.stats()[f"{cache.name}_size"] == len(cache)


def test_the_least_recently_used_batches_are_evicted_first() -> None:
    clock = Clock()
    cache: Ipv4Cache[str] = Ipv4Cache(160, TTL_S, 2, clock)
    # 70 more than the bound of 160 evict 70 + 160 // 16 = 80 entries: the second batch, exactly
    first, second, third = list(range(0, 80)), list(range(1000, 1080)), list(range(5000, 5070))
    store(cache, lookup(cache, first, 0.0), 0.0, "a")
    store(cache, lookup(cache, second, 0.0), 0.0, "b")
    assert all(v is not None for v in lookup(cache, first, 1.0).values())  # first is now the more recent
    store(cache, lookup(cache, third, 1.0), 1.0, "c")
    assert len(cache) <= 160
    kept = lookup(cache, first + third, 1.0)
    assert all(value is not None for value in kept.values()), "recently used and new entries stay"
    assert all(value is None for value in lookup(cache, second, 1.0).values()), "the oldest batch went"
    assert cache.evictions >= 80


def test_entries_expire_after_their_ttl_and_are_swept_at_merges() -> None:
    clock = Clock()
    cache: Ipv4Cache[str] = Ipv4Cache(10_000, TTL_S, 2, clock)
    old = list(range(200))
    store(cache, lookup(cache, old, 0.0), 0.0, "old")
    assert lookup(cache, [5], TTL_S - 0.001)[5] == "old:5"
    assert lookup(cache, [5], TTL_S)[5] is None
    assert cache.expirations == 1
    store(cache, lookup(cache, list(range(10_000, 10_300)), TTL_S), TTL_S, "new")  # enough to merge
    assert len(cache) == 300 + 0, "the other expired entries were swept by the merge"
    assert cache.expirations == 200


def test_a_disabled_cache_stores_nothing() -> None:
    cache: Ipv4Cache[str] = Ipv4Cache(0, TTL_S, 2, Clock())
    store(cache, lookup(cache, [1, 2, 3], 0.0), 0.0, "x")
    assert len(cache) == 0 and lookup(cache, [1, 2, 3], 0.0) == {1: None, 2: None, 3: None}
    assert cache.rows(np.array([-1, -1])).tolist() == [[0, 0], [0, 0]]


@pytest.mark.parametrize("arguments", [(-1, 1.0), (10, 0.0)])
def test_bounds_are_checked(arguments: Any) -> None:
    with pytest.raises(ValueError):
        Ipv4Cache(*arguments, 2, Clock())


def test_a_colliding_address_stored_after_the_merge_takes_the_slot_and_frees_nothing_twice() -> None:
    """Found by an audit: B stored while A (same 64-bit key) was already merged added a second
    entry for the key; removing one then marked the other's entry dead, lookups returned freed
    slots (the chain's `value` assertion failed and its table went out unenriched) and slots were
    freed twice."""
    clock = Clock()
    cache: Ipv6Cache[str] = Ipv6Cache(1000, TTL_S, 2, clock, "colliding")
    filler = list(range(100, 300, 2))  # even keys: no collisions among them
    first = [0, *filler]
    cache.put_many(addresses(first, True), [f"v{k}" for k in first], np.zeros((len(first), 2), np.int64), 0.0)
    assert not cache._pending  # A (key 0) is merged
    b = addresses([1], True)  # collides with A
    assert cache.lookup(b, 1.0).tolist() == [-1]
    cache.put_many(b, ["B"], np.zeros((1, 2), np.int64), 1.0)
    keys = sixteen_byte_keys(addresses([0], True))
    assert int((cache._keys == keys[0]).sum()) + sum(k == int(keys[0]) for k in cache._pending) == 1
    assert cache.lookup(addresses([0], True), 2.0).tolist() == [-1]  # the one stored last keeps the slot
    (slot,) = cache.lookup(b, 2.0).tolist()
    assert cache.value(slot) == "B"
    clock.now = 100.0  # everything expires; both addresses are looked up in one batch
    assert cache.lookup(addresses([0, 1], True), 100.0).tolist() == [-1, -1]
    assert len(cache._free) == len(set(cache._free))
    cache.lookup(addresses(filler, True), 100.0)
    assert len(cache) == 0 and len(cache._free) == len(set(cache._free)) == len(cache._values)
