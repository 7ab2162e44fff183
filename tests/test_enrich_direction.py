"""Address classes, network.direction, flow.locality, related.ip, and the TTL LRU cache."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from flowd.config import EnrichSettings
from flowd.enrich.addresses import AddressClassifier, classify_address, network_direction
from flowd.enrich.cache import TtlLruCache
from flowd.enrich.chain import EnrichmentChain
from flowd.errors import ConfigError


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("8.8.8.8", "public"),
        ("10.0.0.1", "private"),
        ("172.31.255.255", "private"),
        ("172.32.0.1", "public"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("169.254.1.1", "link_local"),
        ("100.64.0.1", "cgnat"),
        ("100.127.255.255", "cgnat"),
        ("100.128.0.1", "public"),
        ("192.0.2.1", "documentation"),
        ("198.51.100.1", "documentation"),
        ("203.0.113.1", "documentation"),
        ("224.0.0.5", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("0.0.0.0", "unspecified"),
        ("2001:db8::1", "documentation"),
        ("2001:db9::1", "public"),
        ("2a00:1450::1", "public"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link_local"),
        ("fd12:3456::1", "private"),
        ("ff05::2", "multicast"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:8.8.8.8", "public"),
        ("192.0.0.9", "public"),  # PCP anycast, globally reachable (IANA special-purpose registry)
        ("192.0.0.10", "public"),  # TURN anycast
        ("192.0.0.8", "reserved"),
        ("198.18.0.1", "reserved"),
        ("192.0.0.170", "reserved"),  # NAT64/DNS64 discovery (RFC 7050)
        ("192.31.196.1", "public"),  # AS112-v4 (RFC 7535), globally reachable
        ("192.52.193.1", "public"),  # AMT (RFC 7450)
        ("192.175.48.1", "public"),  # AS112 direct delegation (RFC 7534)
        ("2001:2::1", "reserved"),  # benchmarking, as 198.18.0.0/15
        ("2001:5::1", "reserved"),  # unassigned in 2001::/23, IETF protocol assignments
        ("2001:1::1", "public"),  # PCP anycast: globally reachable
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "documentation"),  # Teredo: its client's, 192.0.2.45
        ("2001:0:4136:e378:8000:63bf:f5fe:fdfc", "private"),  # client 10.1.2.3
        ("2001:3::1", "public"),
        ("64:ff9b::8.8.8.8", "public"),  # NAT64 well-known prefix: the embedded IPv4 address's class
        ("64:ff9b::10.0.0.1", "private"),
        ("64:ff9b:1::1", "private"),  # local-use NAT64 prefix (RFC 8215): not unwrapped, not global
    ],
)
def test_classify_address(address: str, expected: str) -> None:
    assert classify_address(ipaddress.ip_address(address)) == expected


def test_direction_matrix() -> None:
    assert network_direction(True, True) == "internal"
    assert network_direction(True, False) == "outbound"
    assert network_direction(False, True) == "inbound"
    assert network_direction(False, False) == "external"
    assert network_direction(None, True) == "unknown"


def test_bad_internal_network_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="internal_networks"):
        AddressClassifier(["10.0.0.0/8", "not-a-network"])


def test_chain_direction_locality_and_related() -> None:
    settings = EnrichSettings(internal_networks=["10.0.0.0/8", "2001:db8:1::/48"], oui_lookup=False)
    chain = EnrichmentChain(settings)
    documents: list[dict[str, object]] = [
        {"source.ip": "10.1.1.1", "destination.ip": "10.2.2.2"},
        {"source.ip": "10.1.1.1", "destination.ip": "8.8.8.8"},
        {"source.ip": "8.8.8.8", "destination.ip": "2001:db8:1::5"},
        {"source.ip": "8.8.8.8", "destination.ip": "192.168.1.1"},  # private, but not configured internal
        {"source.ip": "::ffff:10.9.9.9", "destination.ip": "10.1.1.1"},
        {"source.ip": "10.1.1.1"},
        {"source.ip": "10.1.1.1", "destination.ip": "10.1.1.1"},
    ]
    asyncio.run(chain.enrich(documents))  # type: ignore[arg-type]
    assert [(d.get("network.direction"), d.get("flow.locality")) for d in documents] == [
        ("internal", "internal"),
        ("outbound", "external"),
        ("inbound", "external"),
        ("external", "external"),
        ("internal", "internal"),
        (None, None),
        ("internal", "internal"),
    ]
    assert documents[1]["related.ip"] == ["10.1.1.1", "8.8.8.8"]
    assert documents[6]["related.ip"] == ["10.1.1.1"]
    # Each distinct address was classified once, and found in the cache from then on.
    assert chain.stats()["address_info_misses"] == 6
    asyncio.run(chain.enrich([dict(d) for d in documents]))  # type: ignore[arg-type]
    assert chain.stats()["address_info_misses"] == 6


def test_cache_lru_ttl_and_stats() -> None:
    now = [0.0]
    cache: TtlLruCache[str, int] = TtlLruCache(2, 10.0, lambda: now[0], "test")
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)  # evicts "b"
    assert cache.get("b") is None
    assert cache.get("c") == 3
    now[0] = 10.0
    assert cache.get("a") is None  # stored at 0 with TTL 10: expired at 10
    assert cache.stats() == {
        "test_hits": 2,
        "test_misses": 2,
        "test_evictions": 1,
        "test_expirations": 2,  # "c" expired with it: stale entries do not stay in the size
        "test_size": 0,
    }
    cache.put("e", 5, now=20.0)
    cache.put("e", 6, now=25.0)  # stored again: the new TTL counts, not the first
    assert cache.get_many(["e", "zz", "e"], 34.0) == [6, None, 6]
    assert cache.get_many(["e"], 35.0) == [None]
    cache.put("f", 7, now=40.0)
    cache.put("g", 8, now=40.0)
    assert cache.get_many(["f"], 41.0) == [7]  # "f" is now the most recent
    cache.put("h", 9, now=41.0)  # evicts "g"
    assert cache.get_many(["g", "f", "h"], 42.0) == [None, 7, 9]
    cache.put("d", 4, ttl_s=1.0)
    now[0] = 11.5
    assert cache.get("d") is None
    disabled: TtlLruCache[str, int] = TtlLruCache(0, 1.0)
    disabled.put("x", 1)
    assert disabled.get("x") is None
    with pytest.raises(ValueError):
        TtlLruCache(-1, 1.0)
