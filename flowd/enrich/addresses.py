"""Facts about an address that need no database: its class, whether it is internal, its packed form.

Address classes follow the IANA special-purpose registries (RFC 6890 and its updates): private
(RFC 1918, ULA RFC 4193, local-use NAT64 RFC 8215), loopback, link-local (RFC 3927, RFC 4291),
CGNAT shared space (RFC 6598, 100.64.0.0/10), documentation (RFC 5737, RFC 3849 2001:db8::/32,
RFC 9637 3fff::/20), multicast, broadcast, unspecified, and `reserved` for the other blocks the
registries mark not globally reachable (192.0.0.0/24, benchmarking, 240.0.0.0/4, most of
2001::/23, IPv6 outside 2000::/3). Only `public` addresses are worth a GeoIP lookup.

`network.direction` and `flow.locality` compare both ends with the operator's internal networks,
as Filebeat's netflow input and ECS describe them. Networks the operator names (a site, a
building, a customer) give their addresses that name, longest prefix first.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from flowd.config_values import Network, parse_networks
from flowd.enrich.cache import Clock, TtlLruCache

PUBLIC = "public"
Value = TypeVar("Value")

_V4_CLASSES: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), label)
    for net, label in (
        ("0.0.0.0/8", "unspecified"),
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "cgnat"),
        ("169.254.0.0/16", "link_local"),
        ("192.0.2.0/24", "documentation"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
        ("192.0.0.9/32", PUBLIC),  # PCP and TURN anycast (RFC 7723, RFC 8155): globally reachable
        ("192.0.0.10/32", PUBLIC),
        ("192.0.0.0/24", "reserved"),
        ("198.18.0.0/15", "reserved"),
    )
)
_V6_CLASSES: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), label)
    for net, label in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link_local"),
        ("fc00::/7", "private"),
        ("64:ff9b:1::/48", "private"),  # local-use IPv4/IPv6 translation (RFC 8215), as ULA
        ("2001:db8::/32", "documentation"),
        # 2001::/23, IETF protocol assignments (RFC 2928), is not globally reachable but for
        # these assignments, which are (IANA IPv6 special-purpose registry):
        ("2001:1::1/128", PUBLIC),  # PCP anycast (RFC 7723)
        ("2001:1::2/128", PUBLIC),  # TURN anycast (RFC 8155)
        ("2001:1::3/128", PUBLIC),  # DNS-SD service registration anycast (RFC 9665)
        ("2001:3::/32", PUBLIC),  # AMT (RFC 7450)
        ("2001:4:112::/48", PUBLIC),  # AS112-v6 (RFC 7535)
        ("2001:20::/28", PUBLIC),  # ORCHIDv2 (RFC 7343)
        ("2001:30::/28", PUBLIC),  # drone remote ID entity tags (RFC 9374)
        ("2001::/23", "reserved"),  # benchmarking 2001:2::/48 (RFC 5180), old ORCHID, unassigned
        # (Teredo, 2001::/32, takes its client's class: `embedded_ipv4`.)
        ("3fff::/20", "documentation"),
        ("ff00::/8", "multicast"),
    )
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if any: an IPv4-mapped one (RFC 4291 section
    2.5.5.2), the well-known NAT64 prefix's (RFC 6052 section 2.1: the last 32 bits), a Teredo
    client's (RFC 4380 section 4: its NAT's outside address, inverted, in the last 32 bits;
    only when the address names a public Teredo server, as a real one does).
    Such an address is classed, geolocated, found internal and named as the IPv4 address.

    The local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215) is not read: the operator picks the
    prefix length within it (RFC 6052 section 2.2), and with it where the IPv4 address sits."""
    mapped = address.ipv4_mapped
    if mapped is not None:
        return mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    teredo = address.teredo
    if teredo is None:
        return None
    server, client = teredo  # a real one names a public Teredo server; else junk in 2001::/32, reserved
    return client if classify_address(server) == PUBLIC else None


def classify_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """`public`, or the special-purpose class the address belongs to."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded is not None:
            return classify_address(embedded)
        for network6, label in _V6_CLASSES:
            if address in network6:
                return label
        # Outside 2000::/3 nothing is allocated for global unicast (RFC 4291 section 2.4).
        return PUBLIC if address in _V6_GLOBAL_UNICAST else "reserved"
    for network4, label in _V4_CLASSES:
        if address in network4:
            return label
    return PUBLIC


@dataclass(frozen=True, slots=True)
class AddressFacts:
    packed: bytes
    """Network-order bytes (4 or 16), for the Community ID hash."""
    address_class: str
    internal: bool
    network_name: str | None = None
    """The name the operator gave the most specific network holding the address."""


INVALID = AddressFacts(b"", "invalid", False)


class PrefixMap(Generic[Value]):
    """Values of networks, found for an address by its most specific network: one dict lookup
    per prefix length configured, however many networks there are."""

    def __init__(self, entries: Iterable[tuple[Network, Value]]) -> None:
        self._by_length: dict[tuple[int, int], dict[int, Value]] = {}
        for network, value in entries:
            self._by_length.setdefault((network.version, network.prefixlen), {})[int(network.network_address)] = value
        self._lengths = sorted(self._by_length, key=lambda key: key[1], reverse=True)

    def __bool__(self) -> bool:
        return bool(self._lengths)

    def lookup(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Value | None:
        """The value of the most specific network holding `address`, if any."""
        number, bits = int(address), address.max_prefixlen
        for version, length in self._lengths:
            if version == address.version:
                value = self._by_length[version, length].get(number >> (bits - length) << (bits - length))
                if value is not None:
                    return value
        return None

    def lookup_text(self, text: object) -> Value | None:
        """`lookup` of an address as documents write it (`observer.ip`); None for anything else."""
        try:
            address = ipaddress.ip_address(text)  # type: ignore[arg-type]
        except ValueError:
            return None
        return self.lookup(address)


class AddressClassifier:
    """Cached `AddressFacts` per address string."""

    def __init__(
        self,
        internal_networks: list[str],
        cache_size: int = 65_536,
        clock: Clock = time.monotonic,
    ) -> None:
        self.internal_networks = parse_networks(internal_networks, "enrich.internal_networks")
        self.network_names: PrefixMap[str] = PrefixMap(())
        """Names the operator gave networks (`enrich.network_names`, set by the enrichment chain)."""
        self.cache: TtlLruCache[str, AddressFacts] = TtlLruCache(cache_size, 86_400.0, clock, "address_facts")
        self.invalid = 0

    def facts(self, address: str, now: float, *, cache: bool = True) -> AddressFacts:
        """What is known of an address without a lookup; `cache=False` for a caller that keeps it."""
        cached = self.cache.get(address, now) if cache else None
        if cached is not None:
            return cached
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            self.invalid += 1
            return INVALID
        # An address standing for an IPv4 one is internal, and named, as that address first.
        embedded = embedded_ipv4(parsed) if isinstance(parsed, ipaddress.IPv6Address) else None
        ends = (parsed,) if embedded is None else (embedded, parsed)
        internal = any(end in network for end in ends for network in self.internal_networks)
        name = None
        if self.network_names:
            name = next((n for n in map(self.network_names.lookup, ends) if n is not None), None)
        facts = AddressFacts(parsed.packed, classify_address(parsed), internal, name)
        if cache:
            self.cache.put(address, facts, now)
        return facts

    def stats(self) -> dict[str, int]:
        return {**self.cache.stats(), "address_invalid": self.invalid}


def network_direction(source_internal: bool | None, destination_internal: bool | None) -> str:
    """ECS `network.direction` from the internal/external status of both ends (None: unknown)."""
    if source_internal is None or destination_internal is None:
        return "unknown"
    if source_internal:
        return "internal" if destination_internal else "outbound"
    return "inbound" if destination_internal else "external"


def flow_locality(source_internal: bool, destination_internal: bool) -> str:
    """Filebeat's `flow.locality`: internal only when both ends are."""
    return "internal" if source_internal and destination_internal else "external"
