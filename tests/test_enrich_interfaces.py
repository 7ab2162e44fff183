"""Interface names from options data and configuration."""

from __future__ import annotations

import asyncio

import pytest

from flowd.config import EnrichSettings
from flowd.enrich.chain import EnrichmentChain
from flowd.enrich.interfaces import InterfaceNames, parse_interface_key
from flowd.errors import ConfigError


def test_parse_interface_key() -> None:
    assert parse_interface_key("192.0.2.1:7") == ("192.0.2.1", 7)
    assert parse_interface_key("[2001:db8::1]:7") == ("2001:db8::1", 7)
    assert parse_interface_key("2001:db8::1:7") == ("2001:db8::1", 7)
    # as exporters' addresses are written in documents (RFC 5952 text), however configured
    assert parse_interface_key("[2001:DB8:0::1]:7") == ("2001:db8::1", 7)
    assert parse_interface_key("2001:0db8:0:0:0:0:0:1:7") == ("2001:db8::1", 7)
    for bad in ("192.0.2.1", "192.0.2.1:x", ":7", "router1:7", "192.0.2.300:7"):
        with pytest.raises(ConfigError):
            parse_interface_key(bad)


def test_learned_from_options_and_configured_names_win() -> None:
    names = InterfaceNames({"192.0.2.1:2": "uplink-configured"})
    assert names.learn_from_options(
        {"observer.ip": "192.0.2.1", "netflow.ingress_interface": 1,
         "netflow.interface_name": "Gi0/0/1", "netflow.interface_description": "to core\x1b"}
    )  # fmt: skip
    assert names.learn_from_options(
        {"observer.ip": "192.0.2.1", "netflow.scope_interface": 2, "netflow.interface_name": "Gi0/0/2"}
    )
    assert not names.learn_from_options({"observer.ip": "192.0.2.1", "netflow.ingress_interface": 3})
    assert not names.learn_from_options({"observer.ip": "192.0.2.1", "netflow.interface_name": "no index"})
    assert names.lookup("192.0.2.1", 1) == ("Gi0/0/1", "to core")
    assert names.lookup("192.0.2.1", 2) == ("uplink-configured", None)
    assert names.lookup("192.0.2.9", 1) is None


def test_table_is_bounded() -> None:
    names = InterfaceNames(max_size=3)
    for index in range(10):
        names.learn("192.0.2.1", index, f"if{index}")
    assert names.stats()["interface_names_size"] == 3
    assert names.stats()["interface_names_evictions"] == 7
    assert names.lookup("192.0.2.1", 9) == ("if9", None)
    assert names.lookup("192.0.2.1", 0) is None


def test_chain_names_ingress_and_egress() -> None:
    chain = EnrichmentChain(EnrichSettings(oui_lookup=False, interface_names={"192.0.2.1:20": "wan0"}))
    chain.learn_from_options(
        [{"event.action": "netflow_options", "observer.ip": "192.0.2.1", "netflow.ingress_interface": 10,
          "netflow.interface_name": "lan0", "netflow.interface_description": "office LAN"}]
    )  # fmt: skip
    documents = [
        {"observer.ip": "192.0.2.1", "observer.ingress.interface.id": 10, "observer.egress.interface.id": 20},
        {"observer.ip": "192.0.2.2", "observer.ingress.interface.id": 10},
    ]
    asyncio.run(chain.enrich(documents))
    first, second = documents
    assert first["observer.ingress.interface.name"] == "lan0"
    assert first["observer.ingress.interface.alias"] == "office LAN"
    assert first["observer.egress.interface.name"] == "wan0"
    assert "observer.egress.interface.alias" not in first
    assert "observer.ingress.interface.name" not in second


def test_the_learned_table_stays_within_a_workers_memory() -> None:
    """Found by a resource audit: 262,144 learned names of 128 characters took about 195 MB. The
    table is now bounded to what fits a worker's budget, least recently used first out, counted."""
    import tracemalloc

    from flowd.enrich.interfaces import INTERFACE_TABLE_SIZE, InterfaceNames

    names = InterfaceNames()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(INTERFACE_TABLE_SIZE + 1_000):
            names.learn("192.0.2.1", index, f"{index:0128d}", f"{index:0128x}")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert names.learned.stats()["interface_names_evictions"] == 1_000
    assert held < 64 * 1024 * 1024
