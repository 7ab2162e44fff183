"""GeoIP/ASN enrichment against MaxMind's test databases, with their JSON sources as the oracle.

The oracle is independent of geoip2/maxminddb: it parses the JSON the databases were generated
from and answers with the longest matching network.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from flowd.config import EnrichSettings
from flowd.enrich.addresses import PUBLIC, classify_address
from flowd.enrich.chain import EnrichmentChain
from flowd.enrich.geoip import GeoIpLookup, database_address
from tests.shared_data import GEOIP as SHARED_GEOIP

GEOIP_DIR = SHARED_GEOIP
pytestmark = pytest.mark.skipif(not GEOIP_DIR.is_dir(), reason=f"GeoIP test databases not found at {GEOIP_DIR}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class JsonOracle:
    """Longest-prefix match over a MaxMind source-data JSON file."""

    def __init__(self, name: str) -> None:
        self.entries: list[tuple[Network, dict[str, Any]]] = []
        for item in json.loads((GEOIP_DIR / name).read_text(encoding="utf-8")):
            for text, record in item.items():
                self.entries.append((self._network(text), record))

    @staticmethod
    def _network(text: str) -> Network:
        address, _, length = text.partition("/")
        if address.startswith("::") and "." in address:
            # "::81.2.69.142/127" is how the sources write IPv4 networks in an IPv6 tree.
            return ipaddress.IPv4Network(f"{address[2:]}/{int(length) - 96}", strict=False)
        return ipaddress.ip_network(text, strict=False)

    def record(self, address: str) -> dict[str, Any] | None:
        parsed = ipaddress.ip_address(address)
        best: tuple[int, dict[str, Any]] | None = None
        for network, record in self.entries:
            if (
                network.version == parsed.version
                and parsed in network
                and (best is None or network.prefixlen > best[0])
            ):
                best = (network.prefixlen, record)
        return None if best is None else best[1]

    def sample(self, version: int, count: int) -> list[str]:
        """Up to `count` public addresses (first, middle and last of networks) spread over the file."""
        networks = [n for n, _ in self.entries if n.version == version]
        step = max(1, len(networks) // count)
        addresses = []
        for network in networks[::step][:count]:
            for candidate in (network.network_address, network[network.num_addresses // 2], network[-1]):
                if classify_address(candidate) == PUBLIC:
                    addresses.append(str(candidate))
        return addresses


def _en(section: dict[str, Any] | None) -> str | None:
    if not section:
        return None
    names: dict[str, str] = section.get("names", {})
    return names.get("en")


def expected_geo(record: dict[str, Any] | None) -> dict[str, Any]:
    if record is None:
        return {}
    expected = {
        "geo.country_iso_code": (record.get("country") or {}).get("iso_code"),
        "geo.country_name": _en(record.get("country")),
        "geo.continent_name": _en(record.get("continent")),
        "geo.city_name": _en(record.get("city")),
        "geo.region_name": _en(record["subdivisions"][-1]) if record.get("subdivisions") else None,
    }
    location = record.get("location") or {}
    if "latitude" in location and "longitude" in location:
        expected["geo.location"] = {"lat": location["latitude"], "lon": location["longitude"]}
    return {key: value for key, value in expected.items() if value is not None}


def expected_as(record: dict[str, Any] | None) -> dict[str, Any]:
    if record is None or record.get("autonomous_system_number") is None:
        return {}
    expected: dict[str, Any] = {"as.number": record["autonomous_system_number"]}
    if record.get("autonomous_system_organization"):
        expected["as.organization.name"] = record["autonomous_system_organization"]
    return expected


def strip_prefix(fields: dict[str, Any], prefix: str) -> dict[str, Any]:
    assert all(key.startswith(prefix) for key in fields)
    return {key[len(prefix) :]: value for key, value in fields.items()}


def lookup_fields(lookup: GeoIpLookup, address: str) -> dict[str, Any]:
    source, destination = lookup.lookup(address, classify_address(ipaddress.ip_address(address)))
    assert strip_prefix(source, "source.") == strip_prefix(destination, "destination.")
    return strip_prefix(source, "source.")


@pytest.mark.parametrize("database", ["GeoIP2-City-Test", "GeoLite2-City-Test"])
@pytest.mark.parametrize("version", [4, 6])
def test_city_database_matches_its_source(database: str, version: int) -> None:
    oracle = JsonOracle(database + ".json")
    lookup = GeoIpLookup(EnrichSettings(geoip_city_db=str(GEOIP_DIR / (database + ".mmdb"))))
    addresses = oracle.sample(version, 40)
    assert len(addresses) >= 10
    with_city = with_country = 0
    for address in addresses:
        expected = expected_geo(oracle.record(address))
        assert lookup_fields(lookup, address) == expected, address
        with_city += "geo.city_name" in expected
        with_country += "geo.country_iso_code" in expected
    # The IPv6 networks of the test databases carry countries but no cities.
    assert with_country >= 10
    assert with_city >= 3 or version == 6


@pytest.mark.parametrize("database", ["GeoIP2-Country-Test", "GeoLite2-Country-Test"])
def test_country_database_matches_its_source(database: str) -> None:
    oracle = JsonOracle(database + ".json")
    lookup = GeoIpLookup(EnrichSettings(geoip_country_db=str(GEOIP_DIR / (database + ".mmdb"))))
    for version in (4, 6):
        addresses = oracle.sample(version, 30)
        assert addresses
        for address in addresses:
            assert lookup_fields(lookup, address) == expected_geo(oracle.record(address)), address


def test_named_examples() -> None:
    lookup = GeoIpLookup(
        EnrichSettings(
            geoip_city_db=str(GEOIP_DIR / "GeoIP2-City-Test.mmdb"),
            geoip_asn_db=str(GEOIP_DIR / "GeoLite2-ASN-Test.mmdb"),
        )
    )
    london = lookup_fields(lookup, "81.2.69.142")
    assert london["geo.country_iso_code"] == "GB"
    assert london["geo.city_name"] == "London"
    assert london["geo.region_name"] == "England"
    assert london["geo.continent_name"] == "Europe"
    assert london["geo.location"] == {"lat": 51.5142, "lon": -0.0931}
    telstra = lookup_fields(lookup, "1.128.0.1")
    assert telstra["as.number"] == 1221
    assert telstra["as.organization.name"] == "Telstra Pty Ltd"


def test_nat64_addresses_are_looked_up_as_the_ipv4_address_they_carry() -> None:
    """64:ff9b::/96 (RFC 6052): the geo and AS fields of the embedded IPv4 address, from the
    sources; the local-use prefix 64:ff9b:1::/48 and other IPv6 addresses are not translated."""
    city, asn = JsonOracle("GeoIP2-City-Test.json"), JsonOracle("GeoLite2-ASN-Test.json")
    lookup = GeoIpLookup(
        EnrichSettings(
            geoip_city_db=str(GEOIP_DIR / "GeoIP2-City-Test.mmdb"),
            geoip_asn_db=str(GEOIP_DIR / "GeoLite2-ASN-Test.mmdb"),
        )
    )
    for ipv4 in ("81.2.69.142", "1.128.0.1", "216.160.83.56"):
        nat64 = str(ipaddress.IPv6Address((0x64FF9B << 96) | int(ipaddress.IPv4Address(ipv4))))
        assert nat64.startswith("64:ff9b::")
        expected = {**expected_geo(city.record(ipv4)), **expected_as(asn.record(ipv4))}
        assert expected
        assert lookup_fields(lookup, nat64) == expected, nat64
    assert database_address("64:ff9b:1::5102:458e") == "64:ff9b:1::5102:458e"
    assert database_address("2001:0:5102:458e:8000:63bf:a65f:eb8f") == "89.160.20.112"  # a Teredo client's
    assert database_address("2001::ffff:ffff") == "2001::ffff:ffff"  # no Teredo server named: junk
    assert database_address("::ffff:81.2.69.142") == "81.2.69.142"
    assert database_address("2001:200::1") == "2001:200::1"
    assert database_address("2001:db8::1") == "2001:db8::1"


@pytest.mark.parametrize("version", [4, 6])
def test_asn_database_matches_its_source(version: int) -> None:
    oracle = JsonOracle("GeoLite2-ASN-Test.json")
    lookup = GeoIpLookup(EnrichSettings(geoip_asn_db=str(GEOIP_DIR / "GeoLite2-ASN-Test.mmdb")))
    addresses = oracle.sample(version, 40)
    assert len(addresses) >= 10
    for address in addresses:
        assert lookup_fields(lookup, address) == expected_as(oracle.record(address)), address


@pytest.mark.parametrize("version", [4, 6])
def test_isp_database_supplies_as_fields_when_there_is_no_asn_database(version: int) -> None:
    oracle = JsonOracle("GeoIP2-ISP-Test.json")
    lookup = GeoIpLookup(EnrichSettings(geoip_isp_db=str(GEOIP_DIR / "GeoIP2-ISP-Test.mmdb")))
    addresses = oracle.sample(version, 40)
    assert addresses
    found = 0
    for address in addresses:
        expected = expected_as(oracle.record(address))
        assert lookup_fields(lookup, address) == expected, address
        found += bool(expected)
    assert found >= 3


def test_special_addresses_are_classified_without_lookup() -> None:
    settings = EnrichSettings(
        geoip_city_db=str(GEOIP_DIR / "GeoIP2-City-Test.mmdb"),
        geoip_asn_db=str(GEOIP_DIR / "GeoLite2-ASN-Test.mmdb"),
    )
    chain = EnrichmentChain(settings, oui=None)
    cases = {
        "10.1.2.3": "private",
        "127.0.0.1": "loopback",
        "169.254.10.1": "link_local",
        "100.64.1.1": "cgnat",
        "198.51.100.7": "documentation",
        "2001:db8::1": "documentation",
        "fe80::1": "link_local",
        "fd00::1": "private",
        "ff02::1": "multicast",
        "239.1.1.1": "multicast",
    }

    async def run() -> list[dict[str, Any]]:
        documents = [
            {"source.ip": address, "destination.ip": "81.2.69.142", "source.as.number": 64512} for address in cases
        ]
        await chain.enrich(documents)
        return documents

    import asyncio

    documents = asyncio.run(run())
    for document, (address, address_class) in zip(documents, cases.items(), strict=True):
        assert document["flowd.source_address_class"] == address_class, address
        assert not any(key.startswith("source.geo") for key in document), address
        assert document["source.as.number"] == 64512  # the exporter's AS stays
        assert document["destination.geo.city_name"] == "London"
        assert document["flowd.destination_address_class"] == "public"
    assert chain.geoip.lookups == 1  # only the public address reached the database


def test_exporter_as_stays_without_asn_database_and_database_wins_with_one() -> None:
    import asyncio

    def enrich(settings: EnrichSettings) -> dict[str, Any]:
        document = {"source.ip": "1.128.0.1", "source.as.number": 65000, "destination.ip": "81.2.69.142"}
        asyncio.run(EnrichmentChain(settings, oui=None).enrich([document]))
        return document

    without = enrich(EnrichSettings(geoip_city_db=str(GEOIP_DIR / "GeoIP2-City-Test.mmdb")))
    assert without["source.as.number"] == 65000
    assert "source.as.organization.name" not in without
    with_asn = enrich(EnrichSettings(geoip_asn_db=str(GEOIP_DIR / "GeoLite2-ASN-Test.mmdb")))
    assert with_asn["source.as.number"] == 1221
    assert with_asn["source.as.organization.name"] == "Telstra Pty Ltd"


def test_replaced_database_is_reloaded_after_the_check_interval(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "city.mmdb"
    shutil.copy(GEOIP_DIR / "GeoIP2-City-Test.mmdb", path)
    lookup = GeoIpLookup(EnrichSettings(geoip_city_db=str(path)), reload_check_s=30.0)
    lookup.maybe_reload(now[0])
    assert lookup_fields(lookup, "81.2.69.142")["geo.city_name"] == "London"

    # Replace the file the way geoipupdate does: write aside, rename over.
    staged = tmp_path / "staged.mmdb"
    shutil.copy(GEOIP_DIR / "GeoIP2-Country-Test.mmdb", staged)
    os.replace(staged, path)

    now[0] += 10.0
    lookup.maybe_reload(now[0])  # within the interval: not even looked at
    assert lookup_fields(lookup, "81.2.69.142")["geo.city_name"] == "London"

    now[0] += 25.0
    lookup.maybe_reload(now[0])
    fields = lookup_fields(lookup, "81.2.69.142")
    assert "geo.city_name" not in fields
    assert fields["geo.country_iso_code"] == "GB"
    assert lookup.stats()["geoip_reloads"] == 1


def test_broken_replacement_keeps_the_old_database(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "city.mmdb"
    shutil.copy(GEOIP_DIR / "GeoIP2-City-Test.mmdb", path)
    lookup = GeoIpLookup(EnrichSettings(geoip_city_db=str(path)), reload_check_s=1.0)
    staged = tmp_path / "staged.mmdb"
    staged.write_bytes(b"not a maxmind database")
    os.replace(staged, path)
    now[0] += 5.0
    lookup.maybe_reload(now[0])
    assert lookup_fields(lookup, "81.2.69.142")["geo.city_name"] == "London"
    assert lookup.stats()["geoip_load_errors"] == 1


@pytest.mark.parametrize("damage", ["zeroed tree", "random data"])
def test_a_replacement_that_opens_but_is_damaged_keeps_the_old_database(tmp_path: Path, damage: str) -> None:
    """Found by an audit: a file whose metadata read but whose search tree or data was damaged
    replaced the good one, and every lookup then failed (a warning each)."""
    import random

    good = (GEOIP_DIR / "GeoIP2-City-Test.mmdb").read_bytes()
    metadata = good.rfind(b"\xab\xcd\xefMaxMind.com")
    if damage == "zeroed tree":
        bad = bytes(metadata) + good[metadata:]
    else:
        noise = random.Random(1).randbytes(metadata - 3000)
        bad = good[:3000] + noise + good[metadata:]
    path = tmp_path / "city.mmdb"
    path.write_bytes(good)
    lookup = GeoIpLookup(EnrichSettings(geoip_city_db=str(path)), reload_check_s=1.0)
    staged = tmp_path / "staged.mmdb"
    staged.write_bytes(bad)
    os.replace(staged, path)
    lookup.maybe_reload(5.0)
    assert lookup_fields(lookup, "81.2.69.142")["geo.city_name"] == "London"
    assert lookup.stats()["geoip_reloads"] == 0 and lookup.stats()["geoip_load_errors"] == 1
    lookup.maybe_reload(10.0)  # the same file is not tried again
    assert lookup.stats()["geoip_load_errors"] == 1


def test_a_database_of_another_kind_at_a_path_is_refused() -> None:
    """Found by an audit: the ASN database set as the City one made every table's enrichment
    fail (`'ASN' object has no attribute 'country'`), and `flowd decode --enrich` died."""
    settings = EnrichSettings(
        geoip_city_db=str(GEOIP_DIR / "GeoLite2-ASN-Test.mmdb"), geoip_asn_db=str(GEOIP_DIR / "GeoIP2-City-Test.mmdb")
    )
    lookup = GeoIpLookup(settings)
    assert lookup_fields(lookup, "81.2.69.142") == {}
    assert lookup.stats()["geoip_load_errors"] == 2


def test_missing_database_is_not_fatal(tmp_path: Path) -> None:
    lookup = GeoIpLookup(EnrichSettings(geoip_city_db=str(tmp_path / "absent.mmdb")))
    assert lookup_fields(lookup, "81.2.69.142") == {}
    assert lookup.stats()["geoip_load_errors"] == 1


def test_flow_addresses_are_held_once_in_the_address_caches() -> None:
    """The chain keeps what it makes of an address in its own caches; the classifier's and the
    classifier's cache (for other callers) stays empty, and a second pass looks nothing up."""
    import asyncio

    settings = EnrichSettings(
        geoip_city_db=str(GEOIP_DIR / "GeoIP2-City-Test.mmdb"), geoip_asn_db=str(GEOIP_DIR / "GeoLite2-ASN-Test.mmdb")
    )
    chain = EnrichmentChain(settings, oui=None)
    documents = [
        {"source.ip": "81.2.69.142", "destination.ip": "10.0.0.1"},
        {"source.ip": "2001:480::1", "destination.ip": "1.128.0.1"},
    ]
    asyncio.run(chain.enrich([dict(d) for d in documents]))
    lookups = chain.geoip.stats()["geoip_lookups"]
    assert lookups == 3  # the three public addresses, once each
    assert len(chain.addresses.cache) == 0
    enriched = [dict(d) for d in documents]
    asyncio.run(chain.enrich(enriched))
    assert chain.geoip.stats()["geoip_lookups"] == lookups
    assert enriched[0]["source.geo.city_name"] == "London" and enriched[1]["destination.as.number"] == 1221
