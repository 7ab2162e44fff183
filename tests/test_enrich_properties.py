"""Enrichment of generated flows as columns equals enrichment of the same flows as dicts (a
bounded property from the differential enrichment fuzz campaign).

Hypothesis builds an IPFIX message (a template of its choosing: either address family or both,
ports or none, protocols of every number, ICMP type/code elements, MACs, interfaces,
application ids, sampling) whose values come from every address class (special-purpose ranges,
IPv4-mapped, NAT64, Teredo, 6to4, the GeoIP test databases' networks, equal ends). Its data set goes
through `batch_table` and `EnrichmentChain.enrich_table` with tiny address caches (so lookups
miss, hit and evict), twice; the same documents as dicts go through `enrich` of a second chain.
Both must write the same documents, the NDJSON the same as `to_dicts`, and every Community ID
must be the one-flow function's (held to the specification's vectors elsewhere).
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowd.config import EnrichSettings
from flowd.decode import TemplateCache, decode_datagram
from flowd.enrich.chain import EnrichmentChain
from flowd.enrich.community_id import community_id, icmp_type_code
from flowd.enrich.oui import OuiRegistry, load_registry
from flowd.output.batch_documents import batch_table
from flowd.output.documents import flow_document
from tests.shared_data import GEOIP
from tests.test_enrich_table import enriched_alike, joined_batches
from tests.test_ipfix_features import ipfix_message, ipfix_set, options_template, template

EXPORTER = ("192.0.2.1", 4739)
SEED = 4711
V4_SPECIAL = [
    "0.0.0.0", "0.1.2.3", "10.1.2.3", "127.0.0.1", "169.254.9.9", "100.64.0.1", "172.16.0.1", "192.168.1.1",
    "192.0.2.5", "198.51.100.7", "203.0.113.9", "224.0.0.5", "239.255.255.250", "255.255.255.255", "240.0.0.1",
    "192.0.0.9", "192.0.0.8", "198.18.0.1", "8.8.8.8",
    "81.2.69.142", "81.2.69.160", "2.125.160.216", "89.160.20.112", "175.16.199.0", "1.128.0.0", "1.159.255.255",
]  # fmt: skip
"""Every special-purpose class, and addresses in the GeoIP City/ASN test databases' networks."""
V6_SPECIAL = [
    "::", "::1", "fe80::1", "fd00::5", "2001:db8::7", "3fff::1", "ff02::1", "2001:2::1", "2001::1", "2001:5::1",
    "2001:1::3", "2001:20::1", "2001:4:112::1", "2001:0:5102:458e:8000:63bf:a65f:eb8f", "2001:0:4136:e378::f5fe:fdfc",
    "64:ff9b::808:808", "64:ff9b::a00:1", "64:ff9b::5102:4501", "64:ff9b:1::1", "64:ff9b:1::a01:203",
    "2002:5102:458e::1", "2002:a00:1::", "::51.2.69.142",
    "::ffff:10.1.2.3", "::ffff:81.2.69.142", "::ffff:1.128.0.1", "2001:218::1", "2a02:ff00::1", "2001:4860::1",
]  # fmt: skip
COLLIDING = [("2a02:ff00::1", "436e:8b7c:9f60:1502:500::"), ("2001:218::1", "496d:7664:9f60:1502:500::")]
"""IPv6 addresses whose 64-bit cache keys are equal (`distinct.sixteen_byte_keys`): one must
never be taken for the other (a GeoIP network's address and a reserved one)."""
PROTOCOLS = st.one_of(st.sampled_from([1, 6, 17, 58, 132, 47, 50, 0, 255]), st.integers(0, 255))
ICMP_TYPES = st.one_of(
    st.sampled_from([0, 3, 8, 9, 10, 13, 14, 17, 128, 129, 130, 133, 135, 136, 139, 144, 145]), st.integers(0, 255)
)
PORTS = st.one_of(st.sampled_from([0, 53, 80, 443, 8443, 65535]), st.integers(0, 65535))
MACS = st.one_of(
    st.sampled_from(["0050c2000000", "70b3d5f2f000", "001122334455", "ffffffffffff"]),
    st.binary(min_size=6, max_size=6).map(bytes.hex),
)


def addresses(version: int) -> st.SearchStrategy[str]:
    special = V4_SPECIAL if version == 4 else V6_SPECIAL
    return st.one_of(st.sampled_from(special), st.ip_addresses(v=version).map(str))  # type: ignore[arg-type]


def ends(version: int) -> st.SearchStrategy[tuple[str, str]]:
    """A flow's source and destination: independent, equal, or (IPv6) a colliding pair."""
    pairs = addresses(version).flatmap(lambda a: st.tuples(st.just(a), st.one_of(st.just(a), addresses(version))))
    return st.one_of(pairs, st.sampled_from(COLLIDING)) if version == 6 else pairs


LAYOUT_ELEMENTS = {
    "v4": [(8, 4), (12, 4)],
    "v6": [(27, 16), (28, 16)],
    "ports": [(7, 2), (11, 2)],
    "protocol": [(4, 1)],
    "icmp_types": [(176, 1), (177, 1)],
    "icmp_combined": [(32, 2), (139, 2)],
    "macs": [(56, 6), (80, 6)],
    "interfaces": [(10, 4), (14, 4)],
    "application": [(95, 4)],
    "sampling": [(34, 4)],
}


@st.composite
def flows(draw: st.DrawFn) -> tuple[list[str], list[dict[str, Any]]]:
    """A template's parts (`LAYOUT_ELEMENTS` keys) and its flows' values."""
    family = draw(st.sampled_from(["v4", "v6", "both"]))
    parts = ["v4", "v6"] if family == "both" else [family]
    parts += [p for p in LAYOUT_ELEMENTS if p not in ("v4", "v6") and draw(st.booleans())]
    count = draw(st.integers(1, 12))
    out = []
    for _ in range(count):
        version = 4 if family == "v4" else 6 if family == "v6" else draw(st.sampled_from([4, 6]))
        source, destination = draw(ends(version))
        flow = {
            "version": version,
            "source": source,
            "destination": destination,
            "protocol": draw(PROTOCOLS),
            "ports": (draw(PORTS), draw(PORTS)),
            "icmp": (draw(ICMP_TYPES), draw(st.integers(0, 255))),
            "macs": (draw(MACS), draw(MACS)),
            "interfaces": (draw(st.sampled_from([0, 1, 2, 7])), draw(st.sampled_from([0, 1, 3]))),
            "application": draw(st.sampled_from(["0d000050", "0d0001bb", "03000035", "00000000"])),
            "sampling": draw(st.sampled_from([0, 1, 100])),
        }
        if flow["protocol"] in (1, 58) and draw(st.booleans()):
            flow["ports"] = (0, flow["icmp"][0] << 8 | flow["icmp"][1])  # where v5 and most v9 exporters put them
        out.append(flow)
    return parts, out


def record(parts: list[str], flow: dict[str, Any]) -> bytes:
    packed = [ipaddress.ip_address(flow[end]).packed for end in ("source", "destination")]
    out = b""
    for part in parts:
        if part == "v4":
            out += b"".join(p if flow["version"] == 4 else bytes(4) for p in packed)
        elif part == "v6":
            out += b"".join(p if flow["version"] == 6 else bytes(16) for p in packed)
        elif part == "ports":
            out += struct.pack("!HH", *flow["ports"])
        elif part == "protocol":
            out += bytes([flow["protocol"]])
        elif part == "icmp_types":
            out += bytes(flow["icmp"])
        elif part == "icmp_combined":
            out += struct.pack("!HH", flow["icmp"][0] << 8 | flow["icmp"][1], flow["icmp"][0] << 8 | flow["icmp"][1])
        elif part == "macs":
            out += b"".join(bytes.fromhex(mac) for mac in flow["macs"])
        elif part == "interfaces":
            out += struct.pack("!II", *flow["interfaces"])
        elif part == "application":
            out += bytes.fromhex(flow["application"])
        elif part == "sampling":
            out += struct.pack("!I", flow["sampling"])
    return out


def interface_options() -> bytes:
    """Interface 2's name and application 0d000050's, announced in options data."""
    interfaces = options_template(500, 1, (10, 4), (82, 8))
    applications = options_template(501, 1, (95, 4), (96, 8))
    return (
        ipfix_set(3, interfaces + applications)
        + ipfix_set(500, struct.pack("!I", 2) + b"learned\0")
        + ipfix_set(501, bytes.fromhex("0d000050") + b"web\0\0\0\0\0")
    )


def make_chain(cache_size: int) -> EnrichmentChain:
    settings = EnrichSettings(
        internal_networks=["10.0.0.0/8", "192.168.0.0/16", "fd00::/8", "100.64.0.0/10", "64:ff9b:1::/48"],
        community_id_seed=SEED,
        network_names={"10.1.0.0/16": "site-a", "81.2.69.0/24": "peer", "fd00::/8": "ula", "64:ff9b::/96": "nat64"},
        exporter_names={"192.0.2.0/24": "lab"},
        interface_names={"192.0.2.1:1": "uplink"},
        endpoint_applications={"10.1.2.3:443": "intranet", "[2001:db8::7]:53": "dns6"},
        default_sampling_rates={"192.0.2.1": 10},
        geoip_cache_size=cache_size,
    )
    if GEOIP.is_dir():
        settings.geoip_city_db = str(GEOIP / "GeoIP2-City-Test.mmdb")
        settings.geoip_asn_db = str(GEOIP / "GeoLite2-ASN-Test.mmdb")
    return EnrichmentChain(settings, oui=registry())


@functools.cache
def registry() -> OuiRegistry:
    return load_registry()


def expected_community_id(document: dict[str, Any]) -> str | None:
    """The one-flow function's Community ID of a document, None where it has none."""
    try:
        ends = [ipaddress.ip_address(document[key]).packed for key in ("source.ip", "destination.ip")]
        protocol = int(document["network.iana_number"])
    except (KeyError, ValueError):
        return None
    if len(ends[0]) != len(ends[1]):
        return None
    if protocol in (1, 58):
        ports = icmp_type_code(document.get, ipv6=protocol == 58)
    else:
        ports = (document.get("source.port", 0), document.get("destination.port", 0))
    return community_id(ends[0], ends[1], protocol, *ports, SEED.to_bytes(2, "big"))


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(flows())
def test_generated_flows_enrich_alike_as_columns_and_as_dicts(
    generated: tuple[list[str], list[dict[str, Any]]],
) -> None:
    parts, generated_flows = generated
    elements = [element for part in parts for element in LAYOUT_ELEMENTS[part]]
    data = b"".join(record(parts, flow) for flow in generated_flows)
    message = ipfix_message(ipfix_set(2, template(400, *elements)), interface_options(), ipfix_set(400, data))
    options = [flow_document(r) for r in decode_datagram(message, EXPORTER, TemplateCache(), 1.0).options]
    batches = joined_batches([(message, EXPORTER)] * 2)  # the same flows twice: the second table hits the caches
    assert sum(len(batch) for batch in batches) == 2 * len(generated_flows)
    columnar, by_dict = make_chain(cache_size=3), make_chain(cache_size=65_536)
    for chain in (columnar, by_dict):
        chain.learn_from_options(options)
    for batch in batches:
        for document in enriched_alike(columnar, by_dict, batch_table(batch)):
            assert document.get("network.community_id") == expected_community_id(document), document
