"""Networks the operator names (`enrich.network_names`) name their addresses in `source.geo.name`
and `destination.geo.name` (ECS: "user-defined description of a location"), the most specific
network first, beside what GeoIP finds; `enrich.exporter_names` names exporters in
`observer.name`. Flows are built here with struct; both document paths."""

from __future__ import annotations

import socket
import struct

import pytest

from flowd.config import EnrichSettings, load_settings
from flowd.enrich.chain import EnrichmentChain
from flowd.errors import ConfigError
from tests.shared_data import GEOIP
from tests.test_enrich_sampling import enriched_both_ways, v5_datagram
from tests.test_ipfix_features import ipfix_message, ipfix_set, template

NAMES = {
    "10.0.0.0/8": "campus",
    "10.1.0.0/16": "dorm-a",
    "10.1.2.3": "printer",
    "2001:db8:5::/48": "lab",
    "81.2.69.0/24": "partner",
}
V4_FLOWS = [
    ("10.1.2.3", "10.1.9.9"),  # a host route inside dorm-a inside campus
    ("10.200.0.1", "81.2.69.142"),  # campus to a named public network that GeoIP also knows
    ("172.16.0.1", "10.1.0.1"),  # unnamed to dorm-a
]
EXPECTED_V4 = [("printer", "dorm-a"), ("campus", "partner"), (None, "dorm-a")]


def chain(**settings: object) -> EnrichmentChain:
    enrich = EnrichSettings(oui_lookup=False, network_names=NAMES, **settings)  # type: ignore[arg-type]
    if GEOIP.is_dir():
        enrich.geoip_city_db = str(GEOIP / "GeoIP2-City-Test.mmdb")
    return EnrichmentChain(enrich)


def names(document: dict[str, object]) -> tuple[object, object]:
    return document.get("source.geo.name"), document.get("destination.geo.name")


def test_ipv4_addresses_take_their_most_specific_network_name() -> None:
    documents = enriched_both_ways(chain(), [(v5_datagram(V4_FLOWS), ("192.0.2.1", 2055))])
    assert [names(d) for d in documents] == EXPECTED_V4
    named_public = documents[1]
    assert named_public["flowd.destination_address_class"] == "public"
    if GEOIP.is_dir():  # 81.2.69.142 is London in the MaxMind test database's source data
        assert named_public["destination.geo.city_name"] == "London"
        assert named_public["destination.geo.name"] == "partner"


def test_ipv6_and_ipv4_mapped_addresses() -> None:
    fields = ((27, 16), (28, 16), (7, 2), (11, 2), (4, 1), (1, 8), (2, 8))
    records = b"".join(
        socket.inet_pton(socket.AF_INET6, source)
        + socket.inet_pton(socket.AF_INET6, destination)
        + struct.pack("!HHBQQ", 40000, 443, 6, 900, 3)
        for source, destination in (("2001:db8:5::7", "2001:db8:6::1"), ("::ffff:10.1.7.7", "2001:db8:5:ff::1"))
    )
    message = ipfix_message(ipfix_set(2, template(256, *fields)), ipfix_set(256, records))
    documents = enriched_both_ways(chain(), [(message, ("192.0.2.1", 4739))])
    assert [names(d) for d in documents] == [("lab", None), ("dorm-a", "lab")]


def test_without_names_nothing_is_added() -> None:
    documents = enriched_both_ways(
        EnrichmentChain(EnrichSettings(oui_lookup=False)), [(v5_datagram(V4_FLOWS), ("192.0.2.1", 2055))]
    )
    assert [names(d) for d in documents] == [(None, None)] * 3


def test_exporters_take_the_name_of_their_address_or_network() -> None:
    enricher = EnrichmentChain(
        EnrichSettings(oui_lookup=False, exporter_names={"192.0.2.0/24": "edge", "192.0.2.7": "core-1"})
    )
    batch = [(v5_datagram(V4_FLOWS[:1]), (exporter, 2055)) for exporter in ("192.0.2.7", "192.0.2.8", "203.0.113.1")]
    documents = enriched_both_ways(enricher, batch)
    assert [(d["observer.ip"], d.get("observer.name")) for d in documents] == [
        ("192.0.2.7", "core-1"),
        ("192.0.2.8", "edge"),
        ("203.0.113.1", None),
    ]
    with pytest.raises(ConfigError, match=r"enrich\.exporter_names: 'edge' is not a network"):
        load_settings(None, environ={"FLOWD_ENRICH_EXPORTER_NAMES": '{"edge": "192.0.2.1"}'})


def test_configuration_and_its_errors() -> None:
    loaded = load_settings(None, environ={"FLOWD_ENRICH_NETWORK_NAMES": '{"10.1.0.0/16": " dorm-a "}'})
    assert loaded.settings.enrich.network_names == {"10.1.0.0/16": " dorm-a "}
    documents = enriched_both_ways(
        EnrichmentChain(loaded.settings.enrich), [(v5_datagram(V4_FLOWS[:1]), ("192.0.2.1", 2055))]
    )
    assert names(documents[0]) == ("dorm-a", "dorm-a")
    for value, message in (
        ('{"10.1.0.0/33": "x"}', "is not a network"),
        ('{"10.1.0.0/16": "  "}', "must be 1 to 256 characters"),
        ('{"10.1.0.0/16": 7}', "expected a table of strings"),
    ):
        with pytest.raises(ConfigError, match=message) as raised:
            load_settings(None, environ={"FLOWD_ENRICH_NETWORK_NAMES": value})
        assert "enrich.network_names" in str(raised.value)
    with pytest.raises(ConfigError, match=r"enrich\.internal_networks"):
        load_settings(None, environ={"FLOWD_ENRICH_INTERNAL_NETWORKS": "10.0.0.0/8,not-a-network"})


def test_reloading_tables_keeps_what_options_taught_and_the_counters() -> None:
    """SIGHUP's `reload_tables`: new names and rates apply to the next flows; interface names
    learned from options data and the counters stay; an invalid table changes nothing."""
    enricher = chain(sampling_rates={"192.0.2.1": 10})
    enricher.interfaces.learn("192.0.2.1", 1, "ge-0/0/1")
    batch = [(v5_datagram(V4_FLOWS[:1]), ("192.0.2.1", 2055))]
    before = enriched_both_ways(enricher, batch)[0]
    assert before["flowd.sampling_rate"] == 10 and names(before) == ("printer", "dorm-a")
    assert before["observer.ingress.interface.name"] == "ge-0/0/1"

    reloaded = EnrichSettings(network_names={"10.0.0.0/8": "campus"}, exporter_names={"192.0.2.1": "core-1"})
    assert enricher.reload_tables(reloaded) == ["network_names", "exporter_names", "sampling_rates"]
    after = enriched_both_ways(enricher, batch)[0]
    assert names(after) == ("campus", "campus") and after["observer.name"] == "core-1"
    assert after["flowd.sampling_rate"] == 1
    assert after["observer.ingress.interface.name"] == "ge-0/0/1"
    assert enricher.stats()["sampling_rates_configured"] == 2  # the two paths before the reload
    assert enricher.reload_tables(reloaded) == []

    broken = EnrichSettings(network_names={"10.0.0.0/8": "x"}, interface_names={"not-a-key": "x"})
    with pytest.raises(ConfigError, match="interface_names"):
        enricher.reload_tables(broken)
    assert names(enriched_both_ways(enricher, batch)[0]) == ("campus", "campus")
