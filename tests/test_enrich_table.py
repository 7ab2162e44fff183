"""Enrichment of a decoded data set as columns equals enrichment of the same documents as dicts.

`flowd run` enriches `DocumentTable`s (columns, NDJSON written straight from them); `flowd decode
--enrich` and the sFlow path enrich dicts through `DocumentsView`. Both run the same code, so
this holds the columnar bookkeeping (groups per distinct value, blanked keys, bulk Community ID)
to the dict results, with GeoIP/ASN databases, interface names, OUI vendors and reverse-DNS
names all on.
"""

from __future__ import annotations

import asyncio
import functools
import glob
import json
import socket
from collections.abc import Iterable
from typing import Any

import pytest

from benchmarks import traffic
from benchmarks.test_bench_enrich import build_datagrams
from flowd.bench.traffic import build_traffic
from flowd.capture import read_datagrams
from flowd.config import EnrichSettings
from flowd.decode import TemplateCache, decode_datagram
from flowd.decode.batch import RecordBatch, merge_batches
from flowd.decode.sflow import decode_flow_sample
from flowd.decode.sflow_walk import walk_sflow_datagrams
from flowd.enrich.chain import EnrichmentChain
from flowd.enrich.community_id import community_id, icmp_type_code
from flowd.enrich.oui import OuiRegistry, load_registry
from flowd.errors import DecodeError
from flowd.model import KIND_NETFLOW_FLOW, FlowList
from flowd.output.batch_documents import batch_table
from flowd.output.sflow_table import sample_batch_tables, sflow_tables
from flowd.output.table import DocumentTable, LazyColumn, split_lines
from tests.shared_data import CORPUS, GEOIP

CAPTURES = sorted(glob.glob(str(CORPUS / "**" / "*.pcap"), recursive=True))


class NamesFromTable:
    """A resolver answering from a fixed table (real DNS is tested with dnsmasq elsewhere)."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    async def resolve_many(self, addresses: Iterable[str]) -> dict[str, str]:
        return {a: self.names[a] for a in addresses if a in self.names}

    async def close(self) -> None:
        return None

    def stats(self) -> dict[str, int]:
        return {}


def make_chain(names: dict[str, str], cache_size: int = 65_536) -> EnrichmentChain:
    """`names` answer reverse DNS (an empty table: resolving off)."""
    settings = EnrichSettings(
        internal_networks=["10.0.0.0/8", "192.168.0.0/16"],
        interface_names={"192.0.2.1:1": "ge-0/0/1", "192.0.2.1:2": "ge-0/0/2", "127.0.0.1:3": "xe-1/0/3"},
        resolve_ip2host="true" if names else "false",
        geoip_cache_size=cache_size,
    )
    if GEOIP.is_dir():
        settings.geoip_city_db = str(GEOIP / "GeoIP2-City-Test.mmdb")
        settings.geoip_asn_db = str(GEOIP / "GeoLite2-ASN-Test.mmdb")
    return EnrichmentChain(settings, oui=registry(), resolver=NamesFromTable(names))  # type: ignore[arg-type]


@functools.cache
def registry() -> OuiRegistry:
    return load_registry()  # the IEEE files of Debian's ieee-data


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    assert len({k for k, _ in pairs}) == len(pairs), [k for k, _ in pairs]
    return dict(pairs)


def check_batches(batches: list[RecordBatch], names: dict[str, str], cache_size: int = 65_536) -> int:
    """Columnar enrichment (NDJSON and dicts) equals dict enrichment; returns documents checked."""
    return check_tables([batch_table(batch) for batch in batches], names, cache_size)


def check_tables(tables: list[DocumentTable], names: dict[str, str], cache_size: int = 65_536) -> int:
    columnar, by_dict = make_chain(names, cache_size), make_chain(names)
    return sum(len(enriched_alike(columnar, by_dict, table)) for table in tables)


def enriched_alike(columnar: EnrichmentChain, by_dict: EnrichmentChain, table: DocumentTable) -> list[dict[str, Any]]:
    """`table` enriched by `columnar` as columns equals its dicts enriched by `by_dict`, as NDJSON
    and as dicts; returns the documents."""
    documents = table.to_dicts()
    asyncio.run(columnar.enrich_table(table))
    asyncio.run(by_dict.enrich(documents))
    written = [json.loads(line, object_pairs_hook=no_duplicate_keys) for line in split_lines(table.to_ndjson())]
    assert written == documents
    assert table.to_dicts() == documents
    return documents


def joined_batches(datagrams: Iterable[tuple[bytes, tuple[str, int]]]) -> list[RecordBatch]:
    templates = TemplateCache()
    flows = FlowList()
    for payload, source in datagrams:
        try:
            result = decode_datagram(payload, source, templates, 1_700_000_000.0)
        except DecodeError:
            continue
        for part in result.flows.parts:
            flows.add_batch(part)
    return [
        p for p in merge_batches(flows.parts) if isinstance(p, RecordBatch) and p.kind == KIND_NETFLOW_FLOW and len(p)
    ]


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.split("corpus/")[-1])
def test_corpus_enriched_as_columns_equals_enriched_as_dicts(capture: str) -> None:
    batches = joined_batches((d.payload, d.source) for d in read_datagrams(capture))
    addresses = {a for b in batches for d in batch_table(b).to_dicts() for a in d.get("related.ip", [])}
    names = {a: f"host-{i}.example.test" for i, a in enumerate(sorted(addresses)) if i % 3}
    check_batches(batches, names)


def test_generated_traffic_with_geoip_and_names() -> None:
    datagrams = [(d, ("192.0.2.1", 2055)) for d in build_datagrams()]
    for builder in (traffic.netflow_v9, traffic.ipfix):
        templates, data = builder()
        datagrams += [(d, ("192.0.2.7", 4739)) for d in [*templates, *data]]
    batches = joined_batches(datagrams)
    addresses = sorted({a for b in batches for d in batch_table(b).to_dicts() for a in d.get("related.ip", [])})
    names = {a: f"n{i}.example.test" for i, a in enumerate(addresses[:500])}
    names["192.0.2.1"] = "edge-1.example.test"
    assert check_batches(batches, names) > 10_000


@pytest.mark.parametrize("cache_size", [0, 7, 300, 65_536])
def test_address_caches_of_any_size_enrich_alike(cache_size: int) -> None:
    """Without reverse DNS (the IPv4 and IPv6 caches then keep no Python values per lookup),
    through misses, hits, evictions and merges of those caches, the same documents as the dict path
    with a cache large enough for everything; the traffic goes through twice."""
    datagrams = [(d, ("192.0.2.1", 2055)) for d in build_datagrams()[:120]]
    templates, data = traffic.netflow_v9()
    datagrams += [(d, ("192.0.2.7", 4739)) for d in [*templates, *data]]
    ipv6 = build_traffic("v9", exporters=2, datagrams_per_exporter=20, ipv6_share=1.0)  # the IPv6 cache
    datagrams += [(d.payload, ("192.0.2.8", 2055)) for s in ipv6.streams for d in s.datagrams]
    batches = joined_batches(datagrams)
    assert any("source_ipv6_address" in b.template.names for b in batches)
    tables = [batch_table(b) for b in batches] + [batch_table(b) for b in batches]
    assert check_tables(tables, {}, cache_size) > 5_000


def test_sflow_tables_enriched_as_columns_equal_enriched_as_dicts() -> None:
    """sFlow samples tabled by layout (IPv4 ends as integer columns, MACs for OUI vendors)."""
    traffic_ = build_traffic("sflow", exporters=4, datagrams_per_exporter=16)
    templates = TemplateCache()
    records = [
        r
        for stream in traffic_.streams
        for d in stream.datagrams
        for r in decode_datagram(d.payload, ("192.0.2.1", 6343), templates, 1_700_000_000.0).flows
    ]
    tables, _ = sflow_tables(records)
    addresses = sorted({a for t in tables for d in t.to_dicts() for a in d.get("related.ip", [])})
    names = {a: f"s{i}.example.test" for i, a in enumerate(addresses) if i % 2}
    assert check_tables(tables, names) > len(records) // 2


def test_sflow_samples_read_in_numpy_enriched_as_columns_equal_enriched_as_dicts() -> None:
    """The walked samples' tables (`sample_batch_tables`: MACs as 48-bit numbers rendered in
    numpy, whose OUI vendors the chain looks up per distinct address)."""
    traffic_ = build_traffic("sflow", exporters=4, datagrams_per_exporter=16)
    items = [(d.payload, ("192.0.2.1", 6343), 1_700_000_000.0) for s in traffic_.streams for d in s.datagrams]
    batch, _ = walk_sflow_datagrams(items, decode_flow_sample)
    assert batch is not None
    tables, _ = sample_batch_tables(batch)
    assert any(isinstance(t.fields.get("source.mac"), LazyColumn) for t in tables)
    addresses = sorted({a for t in tables for d in t.to_dicts() for a in d.get("related.ip", [])})
    names = {a: f"s{i}.example.test" for i, a in enumerate(addresses) if i % 2}
    assert check_tables(tables, names) > len(batch) // 2


def test_bulk_community_ids_equal_the_one_flow_function() -> None:
    """Against `community_id` with `icmp_type_code`, the spec-vector-tested one-flow functions:
    TCP, UDP, ICMP echo and one-way types, and a protocol without ports."""
    batches = joined_batches((d, ("192.0.2.1", 2055)) for d in build_datagrams(protocols=(6, 17, 1, 47, 1)))
    chain = make_chain({})
    seen = set()
    for batch in batches:
        table = batch_table(batch)
        asyncio.run(chain.enrich_table(table))
        for document in table.to_dicts():
            protocol = int(document["network.iana_number"])
            if protocol == 1:
                source_port, destination_port = icmp_type_code(document.get, ipv6=False)
            else:
                source_port, destination_port = document["source.port"], document["destination.port"]
            expected = community_id(
                _packed(document["source.ip"]),
                _packed(document["destination.ip"]),
                protocol,
                source_port,
                destination_port,
                b"\0\0",
            )
            assert document["network.community_id"] == expected
            seen.add((protocol, source_port if protocol == 1 else None))
    assert {(6, None), (17, None), (47, None), (1, 8), (1, 3)} <= seen


def _packed(address: str) -> bytes:
    import ipaddress

    return ipaddress.ip_address(address).packed


@pytest.mark.parametrize("protocol", ["v5", "v9", "ipfix", "sflow", "v9-ipv6", "sflow-router"])
def test_tables_are_freed_without_the_cycle_collector(protocol: str) -> None:
    """A table, its columns and their closures form no reference cycle, so each batch's arrays
    (megabytes) go when the batch does: garbage left to the cycle collector piled up to hundreds
    of MB in a worker between full collections (a closure held the object holding the table)."""
    import gc

    protocol, _, variant = protocol.partition("-")  # every flow IPv6; sFlow with router records
    traffic_ = build_traffic(
        protocol,
        exporters=4,
        datagrams_per_exporter=8,
        ipv6_share=1.0 if variant == "ipv6" else 0.1,
        router_records=variant == "router",
    )
    port = 6343 if protocol == "sflow" else 2055
    batch = [
        (d.payload, (f"192.0.2.{1 + s.index}", port), 1.0)
        for number in range(8)
        for s in traffic_.streams
        for d in s.datagrams[number : number + 1]
    ]  # exporters interleaved as they arrive, so batches join data sets of several
    chain = make_chain({}, cache_size=1024)
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        assert write_batch(batch, chain) > 0  # everything it made is unreferenced once it returns
        gc.collect()
        left = {type(o).__name__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()
    assert not left & {"DocumentTable", "LazyColumn", "_Runs", "RowHeaders", "ndarray"}, left


def write_batch(batch: list[tuple[bytes, tuple[str, int], float]], chain: EnrichmentChain) -> int:
    """What a worker does with an ingress batch, without a sink; returns the bytes written."""
    from flowd.server.batch_decoder import BatchDecoder
    from flowd.server.metrics import WorkerStats

    written = 0
    for part in BatchDecoder(TemplateCache(), WorkerStats()).decode_parts(batch):
        if isinstance(part, DocumentTable):
            asyncio.run(chain.enrich_table(part))
            written += len(part.to_ndjson())
    return written


@pytest.mark.parametrize("protocol", ["v9", "ipfix"])
def test_ipv6_sets_enriched_as_columns_equal_enriched_as_dicts(protocol: str) -> None:
    """All-IPv6 traffic: addresses as 16-byte arrays, looked up per distinct address, hashed for
    the Community ID from the array."""
    traffic_ = build_traffic(protocol, exporters=4, datagrams_per_exporter=12, ipv6_share=1.0)
    batches = joined_batches((d.payload, ("192.0.2.1", 2055)) for s in traffic_.streams for d in s.datagrams)
    assert batches and all("source_ipv6_address" in b.template.names for b in batches)
    addresses = sorted({a for b in batches for d in batch_table(b).to_dicts() for a in d.get("related.ip", [])})
    names = {a: f"v6-{i}.example.test" for i, a in enumerate(addresses) if i % 2}
    assert check_batches(batches, names) > 500


def test_ipv6_sets_with_mapped_and_special_addresses_enrich_alike() -> None:
    """IPv4-mapped addresses (classified and hashed as IPv6 by both paths), ::, loopback,
    link-local, documentation and private-range ends, each with TCP, UDP, ICMPv6 and GRE."""
    from tests.test_ipfix_features import ipfix_message, ipfix_set, template

    specials = ["::ffff:10.1.2.3", "::ffff:8.8.8.8", "::", "::1", "fe80::1", "2001:db8::7", "fd00::5", "2a00:1450::1"]
    records = b""
    count = 0
    for source in specials:
        for destination in specials:
            for protocol, source_port, destination_port in ((6, 443, 50000), (17, 53, 53), (58, 0x8000, 0), (47, 0, 0)):
                records += (
                    socket.inet_pton(socket.AF_INET6, source)
                    + socket.inet_pton(socket.AF_INET6, destination)
                    + bytes([protocol])
                    + source_port.to_bytes(2, "big")
                    + destination_port.to_bytes(2, "big")
                )
                count += 1
    message = ipfix_message(
        ipfix_set(2, template(400, (27, 16), (28, 16), (4, 1), (7, 2), (11, 2))), ipfix_set(400, records)
    )
    batches = joined_batches([(message, ("192.0.2.9", 4739))])
    assert sum(len(b) for b in batches) == count
    assert check_batches(batches, {"2001:db8::7": "doc.example.test", "::ffff:8.8.8.8": "dns.example.test"}) == count
