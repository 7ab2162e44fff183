"""The whole worker pipeline in one process, no sockets: ingress batches -> BatchDecoder ->
enrichment (the chain `flowd run` builds from default settings: no GeoIP database, no DNS) ->
`_bulk` request bodies as the Elasticsearch sink cuts them (flowd.output.discard, which then
drops them).

The traffic is the pps harness's (flowd.bench.traffic: scapy-built, 16 exporters with their own
templates, realistic address/port mixes). Run with
`pytest --benchmark-enable benchmarks/test_bench_pipeline.py`; `extra_info["flows_per_s"]` is
flows per second on one core from datagram bytes to finished bulk bodies: the ceiling of one
worker before receive costs (goals: v9/IPFIX 300,000, v5 500,000, sFlow samples 150,000). The
traffic is 10% IPv6; the `-ipv6` cases carry only IPv6, and `sflow-router` samples carry a BGP
router's extended router and gateway records. `no-raw-fields` is `enriched` with
`output.raw_fields = []` (ElastiFlow's KEEP_ORIG_DATA=false): flow documents without their raw
`netflow.*`/`sflow.*` fields.
Under --benchmark-disable (the default addopts) each case runs once as a plain test.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import pytest

from flowd.bench.traffic import IPV6_SHARE, build_traffic
from flowd.config import EnrichSettings
from flowd.decode import TemplateCache
from flowd.enrich.chain import EnrichmentChain, build_enricher
from flowd.output.discard import DiscardSink
from flowd.output.raw_fields import RawFieldFilter
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.ingress import IngressQueue
from flowd.server.metrics import WorkerStats
from flowd.server.pipeline import Pipeline

EXPORTERS = 16
DATAGRAMS_PER_EXPORTER = 24
BATCH_SIZE = 256


@functools.cache
def _items(case: str) -> tuple[list[tuple[bytes, tuple[str, int]]], int]:
    """(datagram, exporter address) in exporter round-robin order, and the flows they carry.
    `case` is a protocol, or a protocol and "-ipv6" for all of its flows in IPv6, or "sflow-router"
    for sFlow samples with a BGP router's extended router and gateway records."""
    protocol, _, variant = case.partition("-")
    traffic = build_traffic(
        protocol,
        exporters=EXPORTERS,
        datagrams_per_exporter=DATAGRAMS_PER_EXPORTER,
        ipv6_share=1.0 if variant == "ipv6" else IPV6_SHARE,
        router_records=variant == "router",
    )
    items = []
    flows = 0
    longest = max(len(s.datagrams) for s in traffic.streams)
    for number in range(longest):
        for stream in traffic.streams:
            if number < len(stream.datagrams):
                datagram = stream.datagrams[number]
                items.append((datagram.payload, (f"127.0.0.{1 + stream.index}", 40_000 + stream.index)))
                flows += datagram.flows
    return items, flows


def run_pipeline(
    items: list[tuple[bytes, tuple[str, int]]],
    enricher: EnrichmentChain | None,
    raw_fields: RawFieldFilter | None = None,
) -> DiscardSink:
    async def main() -> DiscardSink:
        stats = WorkerStats()
        ingress = IngressQueue(BATCH_SIZE, len(items) + BATCH_SIZE)
        sink = DiscardSink()
        decoder = BatchDecoder(TemplateCache(), stats)
        pipeline = Pipeline(ingress, decoder, sink, stats, enricher=enricher, raw_fields=raw_fields)
        pipeline.start()
        now = time.time()
        for payload, exporter in items:
            ingress.append(payload, exporter, now)
        await pipeline.drain()
        return sink

    return asyncio.run(main())


@pytest.fixture(scope="module")
def enricher() -> EnrichmentChain:
    return build_enricher(EnrichSettings())


@pytest.mark.parametrize("mode", ["enriched", "plain", "no-raw-fields"])
@pytest.mark.parametrize("protocol", ["v5", "v9", "ipfix", "sflow", "v9-ipv6", "sflow-ipv6", "sflow-router"])
def test_bench_pipeline(benchmark: Any, protocol: str, mode: str, enricher: EnrichmentChain) -> None:
    items, flows = _items(protocol)
    chain = None if mode == "plain" else enricher
    raw_fields = RawFieldFilter.from_patterns([]) if mode == "no-raw-fields" else None
    sink = run_pipeline(items, chain, raw_fields)  # warm the enrichment caches; check the count
    assert sink.documents_written == flows
    sink = benchmark.pedantic(run_pipeline, args=(items, chain, raw_fields), rounds=3, iterations=1)
    assert sink.documents_written == flows
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["flows_per_s"] = round(flows / stats.stats.min)
        benchmark.extra_info["datagrams"] = len(items)
        benchmark.extra_info["bytes_per_document"] = round(sink.body_bytes / max(1, sink.documents_written))
