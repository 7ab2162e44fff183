"""Service and protocol names, and `network.application` from flows, options tables and ports."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flowd.config import EnrichSettings
from flowd.enrich.chain import EnrichmentChain
from flowd.enrich.services import ApplicationTable, ServiceNames, parse_protocols, parse_services

SERVICES = """\
# comment line
tcpmux          1/tcp                           # TCP port service multiplexer
ssh             22/tcp                          # SSH Remote Login Protocol
domain          53/tcp                          # Domain Name Server
domain          53/udp
http            80/tcp          www             # WorldWideWeb HTTP
https           443/tcp                         # http protocol over TLS/SSL
https           443/udp                         # HTTP/3
bogus           99999/tcp
broken          abc/tcp
alt-http        80/tcp
"""
PROTOCOLS = """\
ip      0       IP              # internet protocol, pseudo protocol number
icmp    1       ICMP            # internet control message protocol
ospf    89      OSPFIGP         # Open Shortest Path First IGP
vrrp    112     VRRP            # Virtual Router Redundancy Protocol
"""


def test_parse_services_and_protocols() -> None:
    services = parse_services(SERVICES.splitlines())
    assert services[("tcp", 80)] == "http"  # the first name wins
    assert services[("udp", 53)] == "domain"
    assert services[("udp", 443)] == "https"
    assert ("tcp", 99999) not in services
    assert len(services) == 7
    assert parse_protocols(PROTOCOLS.splitlines()) == {1: "icmp", 89: "ospf", 112: "vrrp"}  # `ip 0` is a pseudo entry


def test_protocol_0_is_hopopt_with_or_without_a_protocols_file(tmp_path: Path) -> None:
    """netbase's /etc/protocols opens with `ip 0`, a pseudo entry (IPPROTO_IP, for socket
    options) before the protocol numbered 0, `hopopt 0` (IANA's keyword HOPOPT, which ECS
    `network.transport` takes, lower-cased): flows carrying IPv6 hop-by-hop options (MLD, RSVP)
    were named `ip` where the file exists and `hopopt` where it does not."""
    path = tmp_path / "protocols"
    path.write_text(PROTOCOLS.replace("icmp ", "hopopt  0       HOPOPT          # IPv6 Hop-by-Hop Option\nicmp ", 1))
    for protocols in (path, tmp_path / "absent"):
        chain = EnrichmentChain(EnrichSettings(oui_lookup=False), protocols_path=str(protocols))
        documents = enrich(chain, [{"network.iana_number": "0", "network.transport": "0"}])
        assert documents[0]["network.transport"] == "hopopt"


def test_server_port_is_the_lower_known_port(tmp_path: Path) -> None:
    path = tmp_path / "services"
    path.write_text(SERVICES)
    names = ServiceNames(str(path), str(tmp_path / "absent"))
    assert names.server_service("tcp", 51000, 443) == "https"
    assert names.server_service("tcp", 443, 51000) == "https"
    assert names.server_service("tcp", 22, 80) == "ssh"
    assert names.server_service("udp", 5353, 5354) is None
    assert names.protocol(112) == "vrrp"  # bundled when the file is missing


def test_bundled_table_when_no_services_file(tmp_path: Path) -> None:
    names = ServiceNames(str(tmp_path / "absent"), str(tmp_path / "absent"))
    assert names.service("udp", 2055) == "netflow"
    assert names.service("tcp", 443) == "https"


def test_application_table_is_bounded_and_sanitised() -> None:
    table = ApplicationTable(max_size=2)
    assert table.learn("192.0.2.1", "0d000050", "http")
    assert table.learn("192.0.2.1", "0D0001BB", "secure-http\x00\x1b")
    assert not table.learn("192.0.2.1", "0d000035", "\x01\x02")
    assert table.name("192.0.2.1", "0d0001bb") == "secure-http"
    assert table.name("192.0.2.2", "0d0001bb") is None  # per exporter
    table.learn("192.0.2.1", "0d000035", "dns")
    assert table.name("192.0.2.1", "0d000050") is None  # evicted
    assert table.stats()["application_names_evictions"] == 1


def enrich(chain: EnrichmentChain, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    asyncio.run(chain.enrich(documents))
    return documents


def test_network_application_sources_in_order(tmp_path: Path) -> None:
    path = tmp_path / "services"
    path.write_text(SERVICES)
    chain = EnrichmentChain(EnrichSettings(services_path=str(path), oui_lookup=False))
    options = [
        {"event.action": "netflow_options", "observer.ip": "192.0.2.1",
         "netflow.application_id": "0d0001bb", "netflow.application_name": "ssl"},
        {"event.action": "netflow_flow", "observer.ip": "192.0.2.1",
         "netflow.application_id": "0d000050", "netflow.application_name": "ignored"},
    ]  # fmt: skip
    assert chain.learn_from_options(options) == 1
    base = {"observer.ip": "192.0.2.1", "network.transport": "tcp", "source.port": 51000, "destination.port": 443}
    documents = enrich(
        chain,
        [
            {**base, "netflow.panos_app_id": "web-browsing"},
            {**base, "netflow.application_name": "ms-teams"},
            {**base, "netflow.application_id": "0D0001BB"},
            {**base, "netflow.application_id": "0d999999"},
            {**base, "observer.ip": "192.0.2.2", "netflow.application_id": "0d0001bb"},
            {**base, "destination.port": 50000},
            {**base, "network.application": "set-upstream"},
        ],
    )
    assert [d.get("network.application") for d in documents] == [
        "web-browsing",
        "ms-teams",
        "ssl",
        "https",
        "https",
        None,
        "set-upstream",
    ]


PORTS = st.one_of(st.sampled_from([None, -1, 0, 1, 22, 53, 80, 443, 50000, 65535, 65536, 99999]), st.integers(0, 70000))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["tcp", "udp", "sctp", None]), PORTS, PORTS), min_size=1, max_size=40))
def test_service_names_of_whole_columns_match_the_per_flow_rule(flows: list[tuple[Any, Any, Any]]) -> None:
    """`network.application` from the port columns (a gather per column) is the name
    `server_service` gives each flow: the lower port's when both have one."""
    chain = EnrichmentChain(EnrichSettings(oui_lookup=False))
    documents = []
    for transport, source_port, destination_port in flows:
        document = {"network.transport": transport, "source.port": source_port, "destination.port": destination_port}
        documents.append({k: v for k, v in document.items() if v is not None})
    enrich(chain, documents)
    expected = [
        None
        if transport is None
        else chain.services.server_service(
            transport,
            source_port if isinstance(source_port, int) and source_port >= 0 else None,
            destination_port if isinstance(destination_port, int) and destination_port >= 0 else None,
        )
        for transport, source_port, destination_port in flows
    ]
    assert [d.get("network.application") for d in documents] == expected


def test_service_name_from_port_columns() -> None:
    chain = EnrichmentChain(EnrichSettings(oui_lookup=False))
    flows = [("tcp", 51000, 443), ("tcp", 22, 51000), ("udp", 53, 443), ("tcp", 50000, 50001), ("tcp", 70000, 443)]
    documents = [{"network.transport": t, "source.port": a, "destination.port": b} for t, a, b in flows]
    enrich(chain, documents)
    assert [d.get("network.application") for d in documents] == ["https", "ssh", "domain", None, "https"]


def test_protocol_name_replaces_a_bare_number() -> None:
    chain = EnrichmentChain(EnrichSettings(oui_lookup=False))
    documents = enrich(
        chain,
        [
            {"network.iana_number": "112", "network.transport": "112"},
            {"network.iana_number": "6", "network.transport": "tcp"},
            {"network.iana_number": "253", "network.transport": "253"},
            {"network.iana_number": "junk"},
        ],
    )
    assert [d.get("network.transport") for d in documents] == ["vrrp", "tcp", "253", None]
