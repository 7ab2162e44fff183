"""`enrich.endpoint_applications`: the operator's application names for server endpoints.

The flows are NetFlow v5 built with struct (decoded into the worker's tables) and the same flows
as dicts; the expected names are written out by hand: the destination's configured name, else
the source's, else what flowd names without the table (service names, the exporter's own).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest

from flowd.config import EnrichSettings, load_settings
from flowd.decode import TemplateCache
from flowd.enrich.chain import EnrichmentChain
from flowd.errors import ConfigError
from flowd.output.table import DocumentTable
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.metrics import WorkerStats

EXPORTER = ("192.0.2.1", 2055)
_HEADER = struct.Struct("!HHIIIIBBH")
_RECORD = struct.Struct("!4s4s4sHHIIIIHHBBBBHHBBH")
FLOWS = [
    # source, destination, source port, destination port, expected network.application
    ("10.0.0.5", "10.1.1.5", 40_001, 8443, "intranet-portal"),  # to the listed server
    ("10.1.1.5", "10.0.0.5", 8443, 40_001, "intranet-portal"),  # its replies
    ("10.1.1.5", "10.2.2.2", 8443, 5432, "billing-db"),  # both ends listed: the destination's
    ("10.0.0.5", "10.1.1.5", 40_002, 443, "https"),  # the same server, another port: not listed
    ("10.0.0.5", "10.9.9.9", 40_003, 8443, None),  # the port elsewhere: no service name for 8443
    ("10.0.0.6", "10.3.3.3", 40_004, 53, "dns-anycast"),  # over the service name
]
APPLICATIONS = {
    "10.1.1.5:8443": "intranet-portal",
    "10.2.2.2:5432": "billing-db",
    "[10.3.3.3]:53": "dns-anycast",
    "[2001:db8::10]:443": "v6-portal",
}


def v5_datagram() -> bytes:
    records = [
        _RECORD.pack(
            socket.inet_aton(source), socket.inet_aton(destination), bytes(4), 1, 2, 5, 700,
            1_000, 2_000, source_port, destination_port, 0, 0x18, 6, 0, 0, 0, 24, 24, 0,
        )
        for source, destination, source_port, destination_port, _ in FLOWS
    ]  # fmt: skip
    return _HEADER.pack(5, len(records), 5_000, 1_764_000_000, 0, 1, 0, 0, 0) + b"".join(records)


def chain(applications: dict[str, str]) -> EnrichmentChain:
    return EnrichmentChain(EnrichSettings(oui_lookup=False, endpoint_applications=applications))


def applications_both_ways(enricher: EnrichmentChain) -> tuple[list[Any], list[Any]]:
    """(from the worker's tables, from the same documents as dicts), in flow order."""
    parts = BatchDecoder(TemplateCache(), WorkerStats()).decode_parts([(v5_datagram(), EXPORTER, 1.0)] * 8)
    tables = [p for p in parts if isinstance(p, DocumentTable)]
    assert tables
    dicts = [d for t in tables for d in t.to_dicts()]
    for table in tables:
        asyncio.run(enricher.enrich_table(table))
    asyncio.run(enricher.enrich(dicts))
    from_tables = [d.get("network.application") for t in tables for d in t.to_dicts()]
    return from_tables, [d.get("network.application") for d in dicts]


def test_configured_endpoints_name_their_flows_in_tables_and_dicts() -> None:
    expected = [flow[4] for flow in FLOWS] * 8
    from_tables, from_dicts = applications_both_ways(chain(APPLICATIONS))
    assert from_tables == expected
    assert from_dicts == expected
    # Without the table, the same flows get the service names the configured ones replace.
    assert applications_both_ways(chain({}))[0][: len(FLOWS)] == [None, None, "postgresql", "https", None, "domain"]


def test_names_the_exporter_sent_give_way_to_the_configured_ones() -> None:
    enricher = chain(APPLICATIONS)
    documents: list[dict[str, Any]] = [
        {"source.ip": "10.0.0.5", "source.port": 40_001, "destination.ip": "10.1.1.5", "destination.port": 8443,
         "network.transport": "tcp", "netflow.application_name": "ssl", "observer.ip": "192.0.2.1"},
        {"source.ip": "10.0.0.5", "source.port": 40_001, "destination.ip": "10.7.7.7", "destination.port": 8443,
         "network.transport": "tcp", "netflow.application_name": "ssl", "observer.ip": "192.0.2.1"},
        {"source.ip": "2001:db8::99", "source.port": 50_000, "destination.ip": "2001:db8::10", "destination.port": 443,
         "network.transport": "tcp", "observer.ip": "192.0.2.1"},
    ]  # fmt: skip
    asyncio.run(enricher.enrich(documents))
    assert [d.get("network.application") for d in documents] == ["intranet-portal", "ssl", "v6-portal"]


def test_sighup_takes_a_new_table() -> None:
    enricher = chain(APPLICATIONS)
    changed = enricher.reload_tables(
        EnrichSettings(oui_lookup=False, endpoint_applications={"10.1.1.5:8443": "portal-v2"})
    )
    assert changed == ["endpoint_applications"]
    assert applications_both_ways(enricher)[0][:4] == ["portal-v2", "portal-v2", "portal-v2", "https"]


@pytest.mark.parametrize("key", ["10.1.1.5", "10.1.1.5:65536", "portal:80", "10.1.1.5:http", "[10.1.1.5:80"])
def test_keys_that_are_not_address_and_port_stop_start_up(key: str) -> None:
    with pytest.raises(ConfigError, match=r"enrich\.endpoint_applications: key .* is not server_ip:port"):
        load_settings(None, {"FLOWD_ENRICH_ENDPOINT_APPLICATIONS": f'{{"{key}": "x"}}'})


def test_an_empty_name_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"enrich\.endpoint_applications: the name of"):
        chain({"10.1.1.5:80": "\x00\x01"})
