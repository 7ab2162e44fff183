"""Address classes against the IANA special-purpose registries (RFC 6890, RFC 8190), on both
document paths: an IPFIX IPv6 data set enriched as a table (the numpy IPv6 cache) and as dicts.

Only `public` addresses reach the GeoIP databases, so a block the registries mark not globally
reachable must not be `public`; one they mark globally reachable must be.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

from flowd.config import EnrichSettings
from flowd.enrich.addresses import classify_address, embedded_ipv4
from flowd.enrich.chain import EnrichmentChain
from tests.shared_data import GEOIP
from tests.test_enrich_sampling import enriched_both_ways
from tests.test_ipfix_features import ipfix_message, ipfix_set, template

IETF_ASSIGNMENTS = {
    "2001:2::1": "reserved",  # benchmarking (RFC 5180)
    "2001:5::1": "reserved",  # unassigned in 2001::/23
    "2001:1::4": "reserved",
    "2001:10::1": "reserved",  # deprecated ORCHID (RFC 4843)
    "2001:1ff:ffff::1": "reserved",  # the block's last /32
    "2001:1::1": "public",  # PCP anycast (RFC 7723)
    "2001:1::2": "public",  # TURN anycast (RFC 8155)
    "2001:1::3": "public",  # DNS-SD service registration anycast (RFC 9665)
    "2001:3::1": "public",  # AMT (RFC 7450)
    "2001:4:112::1": "public",  # AS112-v6 (RFC 7535)
    "2001:4:113::1": "reserved",
    "2001:20::1": "public",  # ORCHIDv2 (RFC 7343)
    "2001:30::1": "public",  # drone remote ID entity tags (RFC 9374)
    "2001:200::1": "public",  # past 2001::/23: ordinary global unicast
    "2620:4f:8000::1": "public",  # AS112 direct delegation (RFC 7534)
}
"""2001::/23, IETF protocol assignments: not globally reachable except where the registry says so."""


def make_chain(**settings: Any) -> EnrichmentChain:
    enrich = EnrichSettings(oui_lookup=False, **settings)
    if GEOIP.is_dir():
        enrich.geoip_city_db = str(GEOIP / "GeoIP2-City-Test.mmdb")
        enrich.geoip_asn_db = str(GEOIP / "GeoLite2-ASN-Test.mmdb")
    return EnrichmentChain(enrich)


def ipv6_flows(pairs: list[tuple[str, str]]) -> bytes:
    """An IPFIX message with one TCP flow per (source, destination) pair."""
    fields = ((27, 16), (28, 16), (7, 2), (11, 2), (4, 1), (1, 8), (2, 8))
    records = b"".join(
        socket.inet_pton(socket.AF_INET6, source)
        + socket.inet_pton(socket.AF_INET6, destination)
        + struct.pack("!HHBQQ", 40000, 443, 6, 900, 3)
        for source, destination in pairs
    )
    return ipfix_message(ipfix_set(2, template(256, *fields)), ipfix_set(256, records))


def enriched(chain: EnrichmentChain, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The flows of `pairs` enriched as a table and as dicts (which must agree), in order."""
    documents = enriched_both_ways(chain, [(ipv6_flows(pairs), ("192.0.2.1", 4739))])
    assert [(d["source.ip"], d["destination.ip"]) for d in documents] == pairs
    return documents


def test_ietf_protocol_assignments_are_reserved_but_for_the_globally_reachable_ones() -> None:
    chain = make_chain()
    addresses = list(IETF_ASSIGNMENTS)
    documents = enriched(chain, list(zip(addresses, reversed(addresses), strict=True)))
    for document in documents:
        assert document["flowd.source_address_class"] == IETF_ASSIGNMENTS[document["source.ip"]], document
        assert document["flowd.destination_address_class"] == IETF_ASSIGNMENTS[document["destination.ip"]], document
    if GEOIP.is_dir():  # each public address once per path, none of the reserved ones
        public = sum(label == "public" for label in IETF_ASSIGNMENTS.values())
        assert chain.geoip.lookups == 2 * public


def teredo(server: str, client: str) -> str:
    """A Teredo client's address (RFC 4380 section 4): server, flags, port and the client's
    outside address, the last two inverted."""
    number = (0x2001_0000 << 96) | (int(ipaddress.IPv4Address(server)) << 64) | (0x8000 << 48) | (0x63BF << 32)
    return str(ipaddress.IPv6Address(number | (~int(ipaddress.IPv4Address(client)) & 0xFFFF_FFFF)))


def test_teredo_addresses_take_the_class_and_geography_of_their_clients_address() -> None:
    """Teredo's reachability is its embedded address's (RFC 8190: "N/A"), and MaxMind's alias of
    2001::/32 finds the server (here London), not the client."""
    server = "81.2.69.142"
    assert teredo(server, "192.0.2.45") == "2001:0:5102:458e:8000:63bf:3fff:fdd2"  # RFC 4380's example client
    cases = {"89.160.20.112": "public", "10.1.2.3": "private", "192.0.2.45": "documentation", "127.0.0.1": "loopback"}
    pairs = [(teredo(server, client), "2a00:1450::1") for client in cases]
    documents = enriched(make_chain(), pairs)
    for document, (client, label) in zip(documents, cases.items(), strict=True):
        assert document["flowd.source_address_class"] == label, client
        if label != "public":
            assert not any(key.startswith(("source.geo", "source.as")) for key in document), client
        elif GEOIP.is_dir():  # Linköping, Bredband2 in the test databases
            assert document["source.geo.city_name"] == "Linköping", document
            assert document["source.as.number"] == 29518


def test_embedded_ipv4_addresses_match_the_internal_networks_and_names_of_their_ipv4_address() -> None:
    """A NAT64 address (64:ff9b::/96) or a Teredo client's stands for its IPv4 address: an
    IPv6-only host reaching the campus's IPv4 server through NAT64 stays inside the campus, as
    an IPv4-mapped address already did. The IPv6 form's networks still count (a name for the
    translator's prefix). The local-use prefix 64:ff9b:1::/48 is not unwrapped: where the IPv4
    address sits in it depends on the prefix length the operator chose (RFC 8215 section 3,
    RFC 6052 section 2.2), so it matches only as IPv6."""
    chain = make_chain(
        internal_networks=["2001:db8:1::/48", "81.2.69.0/24", "10.0.0.0/8", "64:ff9b:1::/48"],
        network_names={
            "2001:db8:1::/48": "campus-v6",
            "81.2.69.0/24": "campus-dmz",
            "10.0.0.0/8": "campus-private",
            "64:ff9b::/96": "nat64",
            "64:ff9b:1::/48": "local-nat64",
        },
    )
    pairs = [
        ("2001:db8:1::5", "64:ff9b::5102:458e"),  # to 81.2.69.142, the campus's, through NAT64
        ("2001:db8:1::5", "64:ff9b::808:808"),  # to 8.8.8.8
        ("64:ff9b::5102:4501", "2a00:1450::1"),  # from 81.2.69.1
        (teredo("65.54.227.120", "81.2.69.7"), "2001:db8:1::9"),  # a campus host behind Teredo
        ("::ffff:10.1.2.3", "2a00:1450::1"),
        ("64:ff9b:1::a01:203", "2001:db8:1::5"),  # local-use: internal and named as IPv6 only
    ]
    expected = [
        ("internal", "campus-v6", "campus-dmz"),
        ("outbound", "campus-v6", "nat64"),
        ("outbound", "campus-dmz", None),
        ("internal", "campus-dmz", "campus-v6"),
        ("outbound", "campus-private", None),
        ("internal", "local-nat64", "campus-v6"),
    ]
    documents = enriched(chain, pairs)
    found = [(d["network.direction"], d.get("source.geo.name"), d.get("destination.geo.name")) for d in documents]
    assert found == expected
    localities = ["internal", "external", "external", "internal", "external", "internal"]
    assert [d["flow.locality"] for d in documents] == localities
    assert documents[-1]["flowd.source_address_class"] == "private"  # not globally reachable (RFC 8215)
    if GEOIP.is_dir():  # the NAT64 address is looked up as the IPv4 address it carries
        assert documents[0]["destination.geo.city_name"] == "London"


def test_junk_in_2001_32_is_no_teredo_address() -> None:
    """Found by a review: any address in 2001::/32 was read as Teredo, so 2001:: (server 0.0.0.0,
    client 255.255.255.255 inverted) was `broadcast`, and the junk's low bits could match an
    internal network. A real Teredo address names a public server; the rest is reserved."""
    for junk in ("2001::", "2001::1", teredo("10.0.0.1", "81.2.69.7"), teredo("192.0.2.1", "81.2.69.7")):
        address = ipaddress.IPv6Address(junk)
        assert embedded_ipv4(address) is None, junk
        assert classify_address(address) == "reserved", junk
    assert embedded_ipv4(ipaddress.IPv6Address(teredo("65.54.227.120", "81.2.69.7"))) == ipaddress.IPv4Address(
        "81.2.69.7"
    )
