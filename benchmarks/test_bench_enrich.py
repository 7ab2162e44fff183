"""Enrichment cost against decode + serialise of the same flows, measured in the same run.

Synthetic NetFlow v5 datagrams (30 records each, built with struct) carry flows between 10,000
distinct addresses: public sources drawn from the GeoIP test databases' networks (so lookups find
cities and ASNs) and destinations in 10.0.0.0/8 (internal). The chain runs with warm caches and
GeoIP City + ASN, Community ID, direction, services, interface names; reverse DNS is off (with
warm caches it is one dict lookup per distinct address per batch, measured in the tests).

Measured on what a `flowd run` worker does at its limit, where the figure matters: receive
batches queue up and the decoder joins them (`COALESCED_BATCHES` of `listen.batch_size`
datagrams) before decoding them into `DocumentTable`s, which are written as NDJSON straight from
their columns (the stage costs per flow fall with the table's size: a batch of 64 datagrams
costs more per flow in every stage; the Community ID's SHA-1 runs in numpy only from some
thousands of flows on). Reported in `benchmark.extra_info`: flows/s
per core of decode + serialise, of the enrichment chain alone, and `enrich_fraction` = (enrichment
time + the extra serialisation of the fields it adds) / (decode + serialise time), goal < 0.30.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import struct
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from flowd.config import EnrichSettings, ListenSettings
from flowd.decode import TemplateCache
from flowd.enrich.addresses import PUBLIC, classify_address
from flowd.enrich.chain import EnrichmentChain
from flowd.output.table import DocumentTable, split_lines
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.ingress import COALESCED_BATCHES
from flowd.server.metrics import WorkerStats
from tests.shared_data import GEOIP as SHARED_GEOIP

GEOIP_DIR = SHARED_GEOIP
DISTINCT_ADDRESSES = 10_000
RECORDS_PER_DATAGRAM = 30
DATAGRAMS_PER_BATCH = COALESCED_BATCHES * ListenSettings().batch_size
ROUNDS = 5
EXPORTER = ("192.0.2.1", 2055)

_HEADER = struct.Struct("!HHIIIIBBH")
_RECORD = struct.Struct("!4s4s4sHHIIIIHHBBBBHHBBH")


def public_sources(count: int) -> list[str]:
    """Public addresses spread over the City test database's IPv4 networks, padded with 1.x.x.x."""
    addresses: list[str] = []
    city = GEOIP_DIR / "GeoIP2-City-Test.json"
    if city.exists():
        for item in json.loads(city.read_text()):
            for text in item:
                if text.startswith("::") and "." in text:
                    base, _, length = text[2:].partition("/")
                    network = ipaddress.IPv4Network(f"{base}/{int(length) - 96}", strict=False)
                    for host in (network.network_address, network[-1]):
                        if classify_address(host) == PUBLIC:
                            addresses.append(str(host))
    seen = dict.fromkeys(addresses)
    counter = 0
    while len(seen) < count:
        seen.setdefault(str(ipaddress.IPv4Address(0x01000000 + counter * 7919)))
        counter += 1
    return list(seen)[:count]


def build_datagrams(protocols: tuple[int, ...] = (6, 6, 6, 17, 17, 1)) -> list[bytes]:
    """NetFlow v5 between 10,000 addresses; ICMP flows are echo requests and, every other one,
    port unreachables (a one-way type for the Community ID)."""
    half = DISTINCT_ADDRESSES // 2
    sources = [ipaddress.IPv4Address(a).packed for a in public_sources(half)]
    destinations = [ipaddress.IPv4Address(0x0A000000 + 1 + i * 13).packed for i in range(half)]
    ports = (443, 80, 53, 22, 123, 3389, 8080, 51234)
    records = []
    for i in range(half * 2):
        protocol = protocols[i % len(protocols)]
        icmp = (8 << 8) if i % 2 else (3 << 8 | 3)
        server = ports[i % len(ports)] if protocol != 1 else icmp
        source_port = 0 if protocol == 1 else 1024 + (i * 31) % 60000
        records.append(
            _RECORD.pack(
                sources[i % half], destinations[(i * 7) % half], b"\0\0\0\0", 1 + i % 4, 5 + i % 3,
                10 + i % 50, 1500 * (1 + i % 50), 1_000, 90_000, source_port, server,
                0, 0x18, protocol, 0, 64_500 + i % 20, 0, 24, 24, 0,
            )
        )  # fmt: skip
    now = int(time.time())
    datagrams = []
    for start in range(0, len(records), RECORDS_PER_DATAGRAM):
        chunk = records[start : start + RECORDS_PER_DATAGRAM]
        header = _HEADER.pack(5, len(chunk), 100_000, now, 0, start, 0, 0, 0)
        datagrams.append(header + b"".join(chunk))
    return datagrams


def make_chain() -> EnrichmentChain:
    settings = EnrichSettings(oui_lookup=False, interface_names={f"{EXPORTER[0]}:{i}": f"ge-0/0/{i}" for i in range(8)})
    if GEOIP_DIR.is_dir():
        settings.geoip_city_db = str(GEOIP_DIR / "GeoIP2-City-Test.mmdb")
        settings.geoip_asn_db = str(GEOIP_DIR / "GeoLite2-ASN-Test.mmdb")
    return EnrichmentChain(settings)


def decode_tables(datagrams: list[bytes]) -> list[DocumentTable]:
    """What a `flowd run` worker makes of joined receive batches (`BatchDecoder`, which decodes a
    batch's v5 datagrams at once): one table per template layout."""
    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    received = time.time()
    tables = []
    for start in range(0, len(datagrams), DATAGRAMS_PER_BATCH):
        batch = [(datagram, EXPORTER, received) for datagram in datagrams[start : start + DATAGRAMS_PER_BATCH]]
        tables.extend(part for part in decoder.decode_parts(batch) if isinstance(part, DocumentTable))
    return tables


def serialise(tables: list[DocumentTable]) -> int:
    return sum(len(table.to_ndjson()) for table in tables)


def timed(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def test_enrichment_cost_against_decode_and_serialise(benchmark: Any) -> None:
    datagrams = build_datagrams()
    flows = len(datagrams) * RECORDS_PER_DATAGRAM
    chain = make_chain()
    loop = asyncio.new_event_loop()

    def enrich(tables: list[DocumentTable]) -> None:
        for table in tables:
            loop.run_until_complete(chain.enrich_table(table))

    def enriched_tables() -> list[DocumentTable]:
        tables = decode_tables(datagrams)
        enrich(tables)
        return tables

    try:
        enrich(decode_tables(datagrams))  # warm every cache: the measured rounds see only known addresses
        misses_before = chain.stats()["address_info_misses"]
        # Columns render once and are memoised, so every round starts from freshly decoded tables.
        # The four parts are timed in turn within each round, so a machine that slows down or
        # speeds up during the run moves them together; each part's best round is kept.
        rounds = [
            (
                timed(lambda: decode_tables(datagrams)),
                timed(functools.partial(serialise, decode_tables(datagrams))),
                timed(functools.partial(enrich, decode_tables(datagrams))),
                timed(functools.partial(serialise, enriched_tables())),
            )
            for _ in range(ROUNDS)
        ]
        base_decode, base_serialise, enrich_only, enriched_serialise = (min(part) for part in zip(*rounds, strict=True))
        assert chain.stats()["address_info_misses"] == misses_before, "caches were not warm"

        def full_pipeline() -> int:
            return serialise(enriched_tables())

        benchmark.pedantic(full_pipeline, rounds=3, iterations=1)
        sample_tables = enriched_tables()
    finally:
        loop.close()

    base = base_decode + base_serialise
    enrichment = enrich_only + max(0.0, enriched_serialise - base_serialise)
    fraction = enrichment / base
    documents = [orjson.loads(line) for line in split_lines(sample_tables[0].to_ndjson())]
    assert documents[0]["network.community_id"].startswith("1:")
    assert documents[0]["network.direction"] == "inbound"
    assert any("source.geo.city_name" in d for t in sample_tables for d in t.to_dicts())
    benchmark.extra_info.update(
        {
            "flows": flows,
            "distinct_addresses": DISTINCT_ADDRESSES,
            "decode_table_flows_per_s": round(flows / base_decode),
            "serialise_flows_per_s": round(flows / base_serialise),
            "decode_serialise_flows_per_s": round(flows / base),
            "enrich_flows_per_s": round(flows / enrich_only),
            "serialise_enriched_over_plain": round(enriched_serialise / base_serialise, 3),
            "enrich_fraction": round(fraction, 3),
            "enrich_fraction_without_serialise": round(enrich_only / base, 3),
        }
    )
    # The goal is < 0.30; the fraction is reported, not asserted: on a shared 2-core CI machine
    # the same code measured 0.45 to 1.6 in quick mode (timings are benchmarks, not unit checks).
    print(f"\nenrichment benchmark: {benchmark.extra_info}")


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-s", "--benchmark-enable"])
