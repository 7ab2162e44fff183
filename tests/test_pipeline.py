"""The worker's policies without sockets: batching, drop accounting, decode error accounting,
backpressure, drain, metrics aggregation, TCP framing, /proc parsing, file output, persistence."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from flowd.config import load_settings
from flowd.decode import TemplateCache
from flowd.errors import DecodeError
from flowd.output.bulk import BulkEncoder, document_of, split_pairs
from flowd.output.discard import DiscardSink
from flowd.output.files import NdjsonFileSink
from flowd.server import batch_decoder, udp
from flowd.server.app import build_sink, restore_templates, template_path, write_snapshot_atomically
from flowd.server.batch_decoder import BatchDecoder, protocol_of
from flowd.server.ingress import COALESCED_BATCHES, SFLOW_COALESCED_BATCHES, IngressQueue
from flowd.server.metrics import Aggregator, LabelCap, WorkerStats, build_registry
from flowd.server.pipeline import Pipeline
from flowd.server.rate_limited_log import RateLimitedLog
from flowd.server.tcp import IpfixStreamSplitter
from flowd.server.udp import ExporterAllowlist, open_udp_listener, parse_proc_net_udp
from tests.corpus_units import UNITS_BY_NAME, corpus_available, unit_datagrams

EXPORTER = ("192.0.2.7", 40000)


def netflow_v5(ident: int, records: int = 2, *, unix_secs: int = 1_700_000_000) -> bytes:
    """A NetFlow v5 datagram whose records carry `ident` in their ports (src = low 16 bits,
    dst = high 16 bits) and their index in the source address, so each record is findable."""
    header = struct.pack("!HHIIIIBBH", 5, records, 100_000, unix_secs, 0, ident, 0, 0, 0)
    body = b"".join(
        struct.pack(
            "!4s4s4sHHIIIIHHBBBBHHBBH",
            bytes([10, 0, 0, index + 1]),
            bytes([10, 1, 0, 1]),
            b"\0\0\0\0",
            1,
            2,
            3,
            300,
            90_000,
            99_000,
            ident & 0xFFFF,
            ident >> 16,
            0,
            0x10,
            6,
            0,
            0,
            0,
            24,
            24,
            0,
        )
        for index in range(records)
    )
    return header + body


def test_netflow_v5_helper_decodes() -> None:
    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    docs = decoder.decode([(netflow_v5(0x30004, 3), EXPORTER, 1.0)])
    assert [(d["source.port"], d["destination.port"], d["source.ip"]) for d in docs] == [
        (4, 3, "10.0.0.1"),
        (4, 3, "10.0.0.2"),
        (4, 3, "10.0.0.3"),
    ]


# --- ingress ------------------------------------------------------------------------------------


def test_ingress_batches_and_drops_when_full() -> None:
    wakes: list[int] = []
    queue = IngressQueue(batch_size=4, capacity=10, wake=lambda: wakes.append(1))
    results = [queue.append(b"x%d" % i, EXPORTER, float(i)) for i in range(15)]
    assert results == [True] * 10 + [False] * 5
    assert (queue.accepted, queue.dropped, len(queue), queue.full) == (10, 5, 10, True)
    assert wakes == [1]  # only the empty -> non-empty transition wakes the consumer
    sizes = []
    while (batch := queue.pop()) is not None:
        sizes.append(len(batch))
    assert sizes == [4, 4, 2]
    assert len(queue) == 0
    queue.append(b"again", EXPORTER, 99.0)
    assert wakes == [1, 1]
    assert queue.pop() == [(b"again", EXPORTER, 99.0)]


def test_ingress_joins_queued_full_batches_up_to_the_limit_in_order() -> None:
    queue = IngressQueue(batch_size=4, capacity=100)
    for i in range(18):
        queue.append(b"x%d" % i, EXPORTER, float(i))
    first = queue.pop(limit=12)
    assert first is not None and [item[0] for item in first] == [b"x%d" % i for i in range(12)]
    assert len(queue) == 6
    second = queue.pop(limit=12)  # the last full batch and the partial one after it
    assert second is not None and [item[0] for item in second] == [b"x%d" % i for i in range(12, 18)]
    assert queue.pop(limit=12) is None and len(queue) == 0
    for i in range(9):
        queue.append(b"y%d" % i, EXPORTER, float(i))
    third = queue.pop(limit=6)  # the partial one joins only within the limit
    assert third is not None and [item[0] for item in third] == [b"y%d" % i for i in range(4)]
    assert queue.pop(limit=6) == [(b"y%d" % i, EXPORTER, float(i)) for i in range(4, 9)]


def test_ingress_joins_more_sflow_batches_than_netflow_ones() -> None:
    """sFlow datagrams carry fewer records, so more of them join (by the oldest datagram)."""
    sflow = struct.pack("!II", 5, 1) + bytes(20)
    size, netflow_joined, sflow_joined = 4, COALESCED_BATCHES, SFLOW_COALESCED_BATCHES
    assert sflow_joined > netflow_joined
    queue = IngressQueue(batch_size=size, capacity=1000)
    assert queue.head() is None
    # Two joins' worth of NetFlow, one of sFlow and two batches more (the last is the open one).
    for payload in [netflow_v5(1)] * (2 * size * netflow_joined) + [sflow] * (size * sflow_joined + 2 * size):
        queue.append(payload, EXPORTER, 0.0)
    assert queue.joined_limit() == size * netflow_joined
    sizes = []
    while (batch := queue.pop(queue.joined_limit())) is not None:
        sizes.append((len(batch), protocol_of(batch[0][0])))
    netflow, joined_sflow = size * netflow_joined, size * sflow_joined
    assert sizes == [
        (netflow, "netflow_v5"),
        (netflow, "netflow_v5"),
        (joined_sflow, "sflow"),
        (2 * size, "sflow"),
    ]


def test_ingress_partial_batch_is_not_held_back() -> None:
    queue = IngressQueue(batch_size=256, capacity=1024)
    queue.append(b"one", EXPORTER, 1.0)
    assert queue.pop() == [(b"one", EXPORTER, 1.0)]
    assert queue.pop() is None


class CountingDecoder(BatchDecoder):
    """Records the number of datagrams in each batch it decodes."""

    def __init__(self) -> None:
        super().__init__(TemplateCache(), WorkerStats())
        self.batch_sizes: list[int] = []

    def decode_parts(self, batch: Any) -> Any:
        self.batch_sizes.append(len(batch))
        return super().decode_parts(batch)


def lingering_pipeline(delay_s: float, batch_size: int = 4) -> tuple[IngressQueue, CountingDecoder, Pipeline]:
    ingress = IngressQueue(batch_size=batch_size, capacity=1000)
    decoder = CountingDecoder()
    pipeline = Pipeline(ingress, decoder, MemorySink(), decoder.stats, batch_delay_s=delay_s)
    pipeline.start()
    return ingress, decoder, pipeline


async def test_a_partial_batch_waits_for_more_datagrams_up_to_the_batch_delay() -> None:
    ingress, decoder, pipeline = lingering_pipeline(0.3)
    started = time.time()
    for ident in range(3):
        ingress.append(netflow_v5(ident), EXPORTER, time.time())
        await asyncio.sleep(0.02)
    while pipeline.flows_out < 6:
        await asyncio.sleep(0.01)
    assert decoder.batch_sizes == [3]  # without the delay: a batch per datagram
    assert time.time() - started >= 0.3 - 0.01  # the first datagram waited the whole delay
    await pipeline.drain()


async def test_the_batch_delay_ends_when_a_joined_batch_waits_or_the_pipeline_drains() -> None:
    ingress, decoder, pipeline = lingering_pipeline(30.0)
    limit = ingress.joined_limit()
    for ident in range(limit + 1):
        ingress.append(netflow_v5(ident), EXPORTER, time.time())
    await asyncio.wait_for(_flows_out(pipeline, 2 * limit), timeout=5)
    assert decoder.batch_sizes == [limit]
    await asyncio.wait_for(pipeline.drain(), timeout=5)  # the one left does not wait 30 s
    assert decoder.batch_sizes == [limit, 1] and pipeline.flows_out == 2 * (limit + 1)


async def test_the_batch_delay_waits_for_no_more_than_half_a_small_queue() -> None:
    ingress = IngressQueue(batch_size=4, capacity=8)  # a joined batch (32) would never fit
    decoder = CountingDecoder()
    pipeline = Pipeline(ingress, decoder, MemorySink(), decoder.stats, batch_delay_s=30.0)
    pipeline.start()
    for ident in range(4):
        ingress.append(netflow_v5(ident), EXPORTER, time.time())
    await asyncio.wait_for(_flows_out(pipeline, 8), timeout=5)
    assert decoder.batch_sizes == [4] and ingress.dropped == 0
    await pipeline.drain()


async def _flows_out(pipeline: Pipeline, count: int) -> None:
    while pipeline.flows_out < count:
        await asyncio.sleep(0.01)


def test_ingress_force_exceeds_capacity_for_tcp() -> None:
    queue = IngressQueue(batch_size=2, capacity=2)
    assert queue.append(b"a", EXPORTER, 0.0) and queue.append(b"b", EXPORTER, 0.0)
    assert not queue.append(b"c", EXPORTER, 0.0)
    assert queue.append(b"d", EXPORTER, 0.0, force=True)
    assert (len(queue), queue.dropped) == (3, 1)


# --- decoding -----------------------------------------------------------------------------------


def test_protocol_labels() -> None:
    assert protocol_of(netflow_v5(1)) == "netflow_v5"
    assert protocol_of(b"\x00\x09abcd") == "netflow_v9"
    assert protocol_of(b"\x00\x0aabcd") == "ipfix"
    assert protocol_of(b"\x00\x00\x00\x05") == "sflow"
    assert protocol_of(b"\x12") == "unknown"


def test_decoder_counts_errors_by_exporter_protocol_reason() -> None:
    stats = WorkerStats()
    decoder = BatchDecoder(TemplateCache(), stats)
    batch = [
        (netflow_v5(1), EXPORTER, 1.0),
        (b"\x00", EXPORTER, 1.0),
        (b"\x00\x63garbage", EXPORTER, 1.0),
        (netflow_v5(2)[:30], ("192.0.2.8", 1), 1.0),
    ]
    docs = decoder.decode(batch)
    assert len(docs) == 2
    errors = stats.counters["flowd_decode_errors"]
    assert errors[("192.0.2.7", "unknown", "truncated")] == 1
    assert errors[("192.0.2.7", "unknown", "unsupported_version")] == 1
    assert sum(v for k, v in errors.items() if k[0] == "192.0.2.8") == 1
    assert stats.counter("flowd_flows_decoded", ("netflow_v5",)) == 2


def test_decoder_counts_datagrams_per_exporter_whatever_they_hold() -> None:
    """`flowd_exporter_datagrams`: every datagram an exporter sends, decodable or not, so an
    exporter that goes silent shows as a rate of 0; capped like every exporter label."""
    stats = WorkerStats()
    decoder = BatchDecoder(TemplateCache(), stats, exporter_label_limit=2)
    batch = [
        (netflow_v5(1), EXPORTER, 1.0),
        (netflow_v5(2), EXPORTER, 1.0),
        (b"\x00\x63garbage", EXPORTER, 1.0),
        (netflow_v5(3), ("192.0.2.8", 1), 1.0),
        (b"\x00\x00\x00\x05", ("192.0.2.8", 2), 1.0),
        (netflow_v5(4), ("192.0.2.9", 1), 1.0),
    ]
    decoder.decode(batch)
    decoder.decode(batch[:1])
    assert stats.counters["flowd_exporter_datagrams"] == {
        ("192.0.2.7", "netflow_v5"): 3,
        ("192.0.2.7", "unknown"): 1,
        ("192.0.2.8", "netflow_v5"): 1,
        ("192.0.2.8", "sflow"): 1,
        ("other", "netflow_v5"): 1,
    }


def test_decoder_survives_a_decoder_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(batch_decoder, "decode_datagram", broken)
    stats = WorkerStats()
    assert BatchDecoder(TemplateCache(), stats).decode([(netflow_v5(1), EXPORTER, 1.0)]) == []
    assert stats.counter("flowd_decode_errors", ("192.0.2.7", "netflow_v5", "internal_error")) == 1


def test_exporter_labels_are_capped() -> None:
    stats = WorkerStats()
    decoder = BatchDecoder(TemplateCache(), stats, exporter_label_limit=3)
    decoder.decode([(b"\x00", (f"192.0.2.{i}", 1), 1.0) for i in range(10)])
    labels = {k[0] for k in stats.counters["flowd_decode_errors"]}
    assert labels == {"192.0.2.0", "192.0.2.1", "192.0.2.2", "other"}
    assert stats.counter("flowd_decode_errors", ("other", "unknown", "truncated")) == 7


def test_rate_limited_log_counts_suppressed_lines(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    import logging

    limiter = RateLimitedLog(logging.getLogger("t"), interval_s=10.0, clock=lambda: now[0])
    assert limiter.warning("k", "first")
    assert not limiter.warning("k", "second")
    assert not limiter.warning("k", "third")
    assert limiter.warning("other", "different key")
    now[0] = 11.0
    assert limiter.warning("k", "fourth")
    assert "fourth (2 similar suppressed)" in caplog.text


def test_rate_limited_log_bounds_a_storm_from_many_sources(caplog: pytest.LogCaptureFixture) -> None:
    """Found by an audit: keys hold the source, so 3,000 sources of malformed datagrams wrote
    3,000 lines; now at most MAX_LINES_PER_INTERVAL an interval, the rest counted later."""
    import logging

    from flowd.server.rate_limited_log import MAX_LINES_PER_INTERVAL

    now = [0.0]
    limiter = RateLimitedLog(logging.getLogger("t"), interval_s=10.0, clock=lambda: now[0])
    logged = sum(limiter.warning(f"decode|192.0.2.{n}", f"bad from {n}") for n in range(200))
    assert logged == MAX_LINES_PER_INTERVAL
    now[0] = 11.0
    assert limiter.warning("decode|192.0.2.150", "again")
    assert "again (1 similar suppressed)" in caplog.text


def test_rate_limited_log_bounds_its_held_back_counts(caplog: pytest.LogCaptureFixture) -> None:
    """Found by an audit: every key held back got its own count, kept until that key logged
    again, so a storm from spoofed sources grew the table by one entry per source (200,000
    sources: 199,600 entries). Now `MAX_LOG_KEYS` keys keep their own count; the rest are summed
    and the next line reports them."""
    import logging

    from flowd.server.rate_limited_log import MAX_LINES_PER_INTERVAL, MAX_LOG_KEYS

    now = [0.0]
    limiter = RateLimitedLog(logging.getLogger("t"), interval_s=10.0, clock=lambda: now[0])
    sources = 3 * MAX_LOG_KEYS
    logged = sum(limiter.warning(f"10.0.{n >> 8}.{n & 255}|truncated", "bad") for n in range(sources))
    assert logged == MAX_LINES_PER_INTERVAL
    assert len(limiter._suppressed) <= MAX_LOG_KEYS
    now[0] = 11.0
    assert limiter.warning("10.0.0.0|truncated", "again")
    held_elsewhere = sources - MAX_LINES_PER_INTERVAL - MAX_LOG_KEYS
    assert f"{held_elsewhere} more suppressed from other sources" in caplog.text


# --- the async stages ---------------------------------------------------------------------------


class MemorySink:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.flushes = 0
        self.delay_s = delay_s

    async def start(self) -> None:
        return None

    async def write(self, documents: list[dict[str, Any]]) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.batches.append(documents)

    async def flush(self) -> None:
        self.flushes += 1

    async def close(self) -> None:
        return None


class TaggingEnricher:
    async def enrich(self, documents: list[dict[str, Any]]) -> None:
        for doc in documents:
            doc["tagged"] = True

    async def close(self) -> None:
        return None


async def test_pipeline_delivers_everything_with_backpressure_and_drains() -> None:
    stats = WorkerStats()
    ingress = IngressQueue(batch_size=8, capacity=10_000)
    sink = MemorySink(delay_s=0.001)
    pipeline = Pipeline(
        ingress,
        BatchDecoder(TemplateCache(), stats),
        sink,
        stats,
        enricher=TaggingEnricher(),
        document_queue_batches=1,  # the decoder must wait for the slow sink, never drop
        flush_interval_s=0.05,
    )
    pipeline.start()
    for ident in range(500):
        assert ingress.append(netflow_v5(ident), EXPORTER, 1.0)
        if ident % 50 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(pipeline.drain(), timeout=30)
    docs = [doc for batch in sink.batches for doc in batch]
    assert len(docs) == 1000
    assert {(d["source.port"], d["source.ip"]) for d in docs} == {
        (ident, f"10.0.0.{i}") for ident in range(500) for i in (1, 2)
    }
    assert all(d["tagged"] for d in docs)
    assert stats.counter("flowd_flows_out") == 1000 == pipeline.flows_out
    assert ingress.dropped == 0 and len(ingress) == 0
    assert sink.flushes >= 1
    assert sum(stats.histograms["flowd_sink_write_seconds"][:-1]) == len(sink.batches)
    stages = stats.counters["flowd_stage_seconds"]
    assert set(stages) == {("decode",), ("enrich",), ("sink",)}  # dicts: the sink serialises them
    assert all(seconds > 0 for seconds in stages.values())
    assert stages[("sink",)] >= 0.001 * len(sink.batches)  # the sink's time includes waiting for it


async def test_pipeline_survives_a_failing_enricher() -> None:
    class Broken:
        async def enrich(self, documents: list[dict[str, Any]]) -> None:
            raise RuntimeError("no database")

        async def close(self) -> None:
            return None

    stats = WorkerStats()
    ingress = IngressQueue(batch_size=4, capacity=100)
    sink = MemorySink()
    pipeline = Pipeline(ingress, BatchDecoder(TemplateCache(), stats), sink, stats, enricher=Broken())
    pipeline.start()
    ingress.append(netflow_v5(1), EXPORTER, 1.0)
    await asyncio.wait_for(pipeline.drain(), timeout=10)
    assert sum(len(b) for b in sink.batches) == 2
    assert stats.counter("flowd_enrich_errors") == 1


class EncodedMemorySink(MemorySink):
    """A sink that takes NDJSON written from columns, as the file and Elasticsearch sinks do."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[tuple[bytes, int]] = []

    async def write_encoded(self, body: bytes, count: int) -> None:
        self.bodies.append((bytes(body), count))


async def test_pipeline_writes_tables_as_ndjson_to_sinks_that_take_it() -> None:
    """Decoded data sets reach a sink with `write_encoded` as NDJSON (enriched by the chain
    `flowd run` builds) and are the documents the dict path makes of the same datagrams."""
    from flowd.config import EnrichSettings
    from flowd.enrich.chain import build_enricher

    datagrams = [netflow_v5(ident, records=5) for ident in range(40)]
    stats = WorkerStats()
    ingress = IngressQueue(batch_size=16, capacity=1000)
    sink = EncodedMemorySink()
    chain = build_enricher(EnrichSettings(oui_lookup=False))
    pipeline = Pipeline(ingress, BatchDecoder(TemplateCache(), stats), sink, stats, enricher=chain)
    pipeline.start()
    for payload in datagrams:
        ingress.append(payload, EXPORTER, 1.0)
    await asyncio.wait_for(pipeline.drain(), timeout=10)
    assert sink.batches == []  # nothing went the dict way
    written = [orjson.loads(line) for body, _ in sink.bodies for line in body.splitlines()]
    assert sum(count for _, count in sink.bodies) == len(written) == 200 == pipeline.flows_out

    expected = BatchDecoder(TemplateCache(), WorkerStats()).decode([(d, EXPORTER, 1.0) for d in datagrams])
    await build_enricher(EnrichSettings(oui_lookup=False)).enrich(expected)

    def key(document: dict[str, Any]) -> bytes:
        return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)

    assert sorted(map(key, written)) == sorted(map(key, expected))
    assert all(d["network.community_id"].startswith("1:") for d in written)


async def test_a_table_that_fails_to_render_goes_out_as_dicts_and_is_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the NDJSON writer costs throughput, not documents: the table goes the dict way,
    and `flowd_fast_path_fallbacks{path="ndjson"}` and a rate-limited line say so (it logged
    every table before, and counted none)."""
    from flowd.output.table import DocumentTable

    def broken(self: DocumentTable, action_lines: Any = None) -> Any:
        raise ZeroDivisionError("a rendering bug")

    monkeypatch.setattr(DocumentTable, "to_ndjson_buffer", broken)
    stats = WorkerStats()
    ingress = IngressQueue(batch_size=4, capacity=100)
    sink = EncodedMemorySink()
    pipeline = Pipeline(ingress, BatchDecoder(TemplateCache(), stats), sink, stats)
    pipeline.start()
    with caplog.at_level(logging.WARNING):
        for ident in range(12):  # three batches of four: three tables
            ingress.append(netflow_v5(ident, records=5), EXPORTER, 1.0)
            await asyncio.sleep(0.01)
        await asyncio.wait_for(pipeline.drain(), timeout=10)
    assert sink.bodies == []
    assert sum(len(b) for b in sink.batches) == 60 == pipeline.flows_out
    fallbacks = stats.counters["flowd_fast_path_fallbacks"][("ndjson",)]
    assert fallbacks == len(sink.batches) >= 1
    lines = [line for line in caplog.messages if "ZeroDivisionError: a rendering bug" in line]
    assert len(lines) == 1 and "ndjson" in lines[0]


class BulkMemorySink(EncodedMemorySink):
    """A sink that asks for `_bulk` action lines in front of each document, as Elasticsearch's does."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = BulkEncoder(id_prefix=b"w")

    def action_lines(self, count: int) -> Any:
        return self.encoder.action_lines(count)


async def test_pipeline_writes_bulk_pairs_to_sinks_that_give_action_lines() -> None:
    datagrams = [netflow_v5(ident, records=5) for ident in range(40)]
    stats = WorkerStats()
    ingress = IngressQueue(batch_size=16, capacity=1000)
    sink = BulkMemorySink()
    pipeline = Pipeline(ingress, BatchDecoder(TemplateCache(), stats), sink, stats)
    pipeline.start()
    for payload in datagrams:
        ingress.append(payload, EXPORTER, 1.0)
    await asyncio.wait_for(pipeline.drain(), timeout=10)
    pairs = [pair for body, _ in sink.bodies for pair in split_pairs(body)]
    assert len(pairs) == sum(count for _, count in sink.bodies) == 200 == pipeline.flows_out
    ids = [orjson.loads(pair.split(b"\n")[0])["create"]["_id"] for pair in pairs]
    assert ids == [f"w-{n:x}" for n in range(200)]
    expected = BatchDecoder(TemplateCache(), WorkerStats()).decode([(d, EXPORTER, 1.0) for d in datagrams])
    documents = [orjson.loads(document_of(pair)) for pair in pairs]
    assert sorted(orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in documents) == sorted(
        orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in expected
    )


async def test_discard_sink_cuts_bodies_as_elasticsearch_would_and_keeps_nothing() -> None:
    """`output.discard` (selected over files and Elasticsearch) builds the same `_bulk` bodies,
    cut at the configured limits, counts the documents and drops the bodies."""
    environ = {"FLOWD_OUTPUT_DISCARD": "true", "FLOWD_ELASTICSEARCH_BATCH_DOCS": "64"}
    settings = load_settings(environ=environ).settings
    sink = build_sink(settings, worker=0)
    assert isinstance(sink, DiscardSink)
    assert not isinstance(build_sink(load_settings(environ={}).settings, worker=0), DiscardSink)
    datagrams = [netflow_v5(ident, records=5) for ident in range(40)]
    stats = WorkerStats()
    ingress = IngressQueue(batch_size=16, capacity=1000)
    pipeline = Pipeline(ingress, BatchDecoder(TemplateCache(), stats), sink, stats)
    pipeline.start()
    for payload in datagrams:
        ingress.append(payload, EXPORTER, 1.0)
    await asyncio.wait_for(pipeline.drain(), timeout=10)
    await sink.close()
    assert sink.documents_written == pipeline.flows_out == 200
    assert sink.bodies == 4  # 200 documents, 64 to a body: three full, one cut at the end
    assert sink.body_bytes > 200 * 2 * 40  # two lines per document, neither empty


@pytest.mark.skipif(not corpus_available(), reason="shared corpus not found")
async def test_pipeline_decodes_templates_then_data_from_the_corpus() -> None:
    stats = WorkerStats()
    ingress = IngressQueue(batch_size=1, capacity=100)
    sink = MemorySink()
    pipeline = Pipeline(ingress, BatchDecoder(TemplateCache(), stats), sink, stats)
    pipeline.start()
    unit = UNITS_BY_NAME["lcn:nf9_cisco_asa_1"]
    for datagram in unit_datagrams(unit):
        ingress.append(datagram.payload, EXPORTER, 1.0)
    await asyncio.wait_for(pipeline.drain(), timeout=10)
    assert sum(len(b) for b in sink.batches) == unit.data_records


# --- metrics ------------------------------------------------------------------------------------


def test_aggregator_sums_workers_and_keeps_counters_of_dead_ones() -> None:
    aggregator = Aggregator(exporter_label_limit=2)
    first, second = WorkerStats(), WorkerStats()
    first.inc("flowd_flows_out", (), 10)
    second.inc("flowd_flows_out", (), 5)
    first.set("flowd_queue_depth", ("ingress",), 3)
    second.set("flowd_queue_depth", ("ingress",), 4)
    first.set("flowd_sink_lag_seconds", (), 0.5)
    second.set("flowd_sink_lag_seconds", (), 2.0)
    for name in ("a", "b", "c"):
        first.inc("flowd_decode_errors", (name, "ipfix", "truncated"), 1 if name != "a" else 9)
    first.observe("flowd_sink_write_seconds", 0.003)
    aggregator.update(0, first.snapshot())
    aggregator.update(1, second.snapshot())
    assert aggregator.counter_total("flowd_flows_out") == 15
    assert aggregator.gauge_total("flowd_queue_depth") == 7
    assert aggregator.gauge_total("flowd_sink_lag_seconds") == 2.0
    aggregator.retire(1)
    assert aggregator.counter_total("flowd_flows_out") == 15  # counters survive the worker
    assert aggregator.gauge_total("flowd_queue_depth") == 3  # gauges do not
    from prometheus_client import generate_latest

    text = generate_latest(build_registry(aggregator)).decode()
    assert "flowd_flows_out_total 15.0" in text
    assert 'flowd_decode_errors_total{exporter="a",protocol="ipfix",reason="truncated"} 9.0' in text
    named = set(re.findall(r'flowd_decode_errors_total\{exporter="([^"]+)"', text))
    assert len(named) == 3 and {"a", "other"} <= named  # the busiest exporter named, the cap holds
    assert 'flowd_sink_write_seconds_bucket{le="0.005"} 1.0' in text


def test_label_cap() -> None:
    cap = LabelCap(2)
    assert [cap(x) for x in "abacd"] == ["a", "b", "a", "other", "other"]


# --- adapters' pure parts -----------------------------------------------------------------------


def ipfix_message(body: bytes = b"", sequence: int = 0) -> bytes:
    return struct.pack("!HHIII", 10, 16 + len(body), 1_700_000_000, sequence, 1) + body


def test_ipfix_stream_splitter_handles_any_chunking() -> None:
    messages = [ipfix_message(bytes([n % 256]) * n, n) for n in (0, 5, 300, 17)]
    stream = b"".join(messages)
    for chunk in (1, 3, 16, 17, 1000):
        splitter = IpfixStreamSplitter()
        out: list[bytes] = []
        for start in range(0, len(stream), chunk):
            out.extend(splitter.feed(stream[start : start + chunk]))
        assert out == messages
        assert splitter.pending == 0


def test_ipfix_stream_splitter_rejects_lost_framing() -> None:
    with pytest.raises(DecodeError) as caught:
        IpfixStreamSplitter().feed(b"\x00\x09\x00\x20" + bytes(28))
    assert caught.value.reason == "bad_stream"
    with pytest.raises(DecodeError):
        IpfixStreamSplitter().feed(b"\x00\x0a\x00\x08" + bytes(12))


def test_messages_before_lost_framing_are_kept() -> None:
    """Found by an audit: the valid messages of a chunk that ends in a bad header were thrown
    away with it."""
    good = [ipfix_message(bytes([n]) * 4, n) for n in (1, 2, 3)]
    splitter = IpfixStreamSplitter()
    assert splitter.feed(b"".join(good) + b"\x00\x09\x00\x20" + bytes(28)) == good
    with pytest.raises(DecodeError) as caught:
        splitter.feed(b"")
    assert caught.value.reason == "bad_stream"


async def test_udp_receiver_drains_the_socket_per_wake_not_32_per_loop_turn() -> None:
    """Everything waiting is read in one wake, up to READS_PER_WAKE; the allowlist and a full
    ingress queue are counted; once closed, the socket is gone from the loop."""
    ingress = IngressQueue(batch_size=64, capacity=udp.READS_PER_WAKE + 40)
    receiver, stats = await open_udp_listener(
        "test", "127.0.0.1:0", ingress, receive_buffer_bytes=1 << 20, allowlist=ExporterAllowlist(["127.0.0.0/8"])
    )
    port = receiver.sock.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sent = udp.READS_PER_WAKE + 100
        for number in range(sent):
            sender.sendto(b"%d" % number, ("127.0.0.1", port))
        receiver._read()  # one wake, as the loop calls it
        assert stats.datagrams == len(ingress) == udp.READS_PER_WAKE
        receiver._read()
        assert stats.datagrams == sent and stats.ingress_drops == sent - ingress.capacity
        queued = [item for batch in iter(ingress.pop, None) for item in batch]
        assert [item[0] for item in queued] == [b"%d" % n for n in range(ingress.capacity)]
        assert queued[0][1] == ("127.0.0.1", sender.getsockname()[1])
        receiver._read()  # nothing waits: returns at once
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as outsider:
        blocked, blocked_stats = await open_udp_listener(
            "v6", "[::1]:0", ingress, receive_buffer_bytes=1 << 20, allowlist=ExporterAllowlist(["10.0.0.0/8"])
        )
        outsider.sendto(b"x", ("::1", blocked.sock.getsockname()[1]))
        await asyncio.sleep(0.05)  # the loop's own wake reads it
        assert (blocked_stats.allowlist_drops, blocked_stats.datagrams) == (1, 0)
        blocked.close()
    receiver.close()
    receiver.close()  # twice is harmless
    assert receiver.sock.fileno() == -1


def test_parse_proc_net_udp() -> None:
    text = (
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref"
        " pointer drops\n"
        "  123: 0100007F:0807 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 45678 2"
        " 0000000000000000 17\n"
        "  124: 00000000:18EB 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 45679 2"
        " 0000000000000000 0\n"
    )
    assert parse_proc_net_udp(text) == {45678: 17, 45679: 0}


def test_allowlist() -> None:
    allow = ExporterAllowlist(["10.0.0.0/8", "2001:db8::/32"])
    assert allow("10.1.2.3") and allow("2001:db8::1") and allow("::ffff:10.0.0.1")
    assert not allow("127.0.0.1") and not allow("::1") and not allow("not an address")


# --- file output and template persistence -------------------------------------------------------


async def test_ndjson_sink_rotates_by_size(tmp_path: Path) -> None:
    sink = NdjsonFileSink(tmp_path / "out", worker=3, rotate_bytes=200, clock=lambda: 1_700_000_000.0)
    await sink.start()
    for i in range(10):
        await sink.write([{"i": i, "pad": "x" * 60}])
    await sink.flush()
    await sink.close()
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) >= 4
    assert "flows-20231114-221320-3.ndjson" in {f.name for f in files}
    lines = [orjson.loads(line) for f in files for line in f.read_bytes().splitlines()]
    assert sorted(doc["i"] for doc in lines) == list(range(10))
    assert all(f.stat().st_size <= 200 for f in files)


@pytest.mark.skipif(not corpus_available(), reason="shared corpus not found")
def test_template_snapshot_round_trip(tmp_path: Path) -> None:
    unit = UNITS_BY_NAME["lcn:nf9_cisco_asa_1"]
    template_datagram, data_datagram = unit_datagrams(unit)
    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    decoder.decode([(template_datagram.payload, EXPORTER, 1.0)])
    base = tmp_path / "state" / "templates.json"
    write_snapshot_atomically(template_path(base, 2), decoder.templates.snapshot())
    assert template_path(base, 2).name == "templates-2.json"
    assert list(base.parent.iterdir()) == [template_path(base, 2)]  # no temporary file left
    fresh = TemplateCache()
    assert restore_templates(fresh, base) == len(decoder.templates) > 0
    docs = BatchDecoder(fresh, WorkerStats()).decode([(data_datagram.payload, EXPORTER, 2.0)])
    assert len(docs) == unit.data_records


def test_es_latency_buckets_in_step() -> None:
    from flowd.output import es_stats
    from flowd.server.metrics import ES_LATENCY_BUCKETS

    assert tuple(es_stats.LATENCY_BUCKETS_S) == ES_LATENCY_BUCKETS


async def test_sink_content_error_is_counted_not_retried_forever(tmp_path: Path) -> None:
    class Picky(MemorySink):
        async def write(self, documents: list[dict[str, Any]]) -> None:
            if any(d.get("source.port") == 13 for d in documents):
                raise TypeError("cannot serialise")
            await super().write(documents)

    stats = WorkerStats()
    ingress = IngressQueue(batch_size=1, capacity=100)
    sink = Picky()
    pipeline = Pipeline(ingress, BatchDecoder(TemplateCache(), stats), sink, stats)
    pipeline.start()
    for ident in (12, 13, 14):
        ingress.append(netflow_v5(ident), EXPORTER, 1.0)
        await asyncio.sleep(0.01)
    await asyncio.wait_for(pipeline.drain(), timeout=10)
    assert sorted(d["source.port"] for b in sink.batches for d in b) == [12, 12, 14, 14]
    assert stats.counter("flowd_sink_rejected_documents") == 2


async def test_ndjson_sink_writes_oversized_integers_as_strings(tmp_path: Path) -> None:
    sink = NdjsonFileSink(tmp_path)
    await sink.start()
    await sink.write([{"netflow.octet_delta_count": 2**100, "ok": 1}])
    await sink.close()
    (path,) = tmp_path.glob("flows-*.ndjson")
    assert orjson.loads(path.read_bytes()) == {"netflow.octet_delta_count": str(2**100), "ok": 1}


def test_at_the_tcp_connection_cap_an_idle_peer_makes_room_and_refusals_are_counted(monkeypatch: Any) -> None:
    """Found by an audit: peers that send nothing held every place, and a real exporter was
    refused with nothing counted."""
    from flowd.server import tcp

    class Peer:
        def __init__(self, name: str, last_message_at: float) -> None:
            self.peer = (name, 4739)
            self.last_message_at = last_message_at
            self.closed = False
            self.transport = self

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(tcp, "MAX_TCP_CONNECTIONS", 2)
    stats = WorkerStats()
    server = tcp.IpfixTcpServer("ipfix/tcp", None, stats, str)  # type: ignore[arg-type]
    server.allowlist = None
    now = time.monotonic()
    busy, idle = Peer("192.0.2.1", now), Peer("192.0.2.2", now - 120)
    assert server.admit(busy) and server.admit(idle)  # type: ignore[arg-type]
    newcomer = Peer("192.0.2.3", now)
    assert server.admit(newcomer)  # type: ignore[arg-type]
    assert idle.closed and not busy.closed and idle not in server.connections
    assert not server.admit(Peer("192.0.2.4", now))  # type: ignore[arg-type]  # all busy: refused
    assert stats.counters["flowd_tcp_connections_refused"] == {("idle_evicted",): 1, ("limit",): 1}


async def test_paused_tcp_peers_resume_one_at_a_time_so_the_queue_stays_near_its_capacity() -> None:
    """Found by an audit: every peer paused by a full queue resumed at the same poll, and each
    queued one read's messages past the capacity (TCP is paused, never dropped): 50 peers grew a
    queue of 16 to hundreds. Here each resumed peer delivers a read of 8 messages at once."""
    from flowd.server import tcp

    message = struct.pack("!HHIII", 10, 16, 0, 0, 0)
    read = message * 8
    loop = asyncio.get_running_loop()

    class Transport:
        def __init__(self) -> None:
            self.protocol: tcp.IpfixTcpReceiver | None = None

        def get_extra_info(self, name: str) -> Any:
            return ("192.0.2.1", 4739) if name == "peername" else None

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            assert self.protocol is not None
            loop.call_soon(self.protocol.data_received, read)

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            pass

    queue = IngressQueue(batch_size=4, capacity=16)
    server = tcp.IpfixTcpServer("ipfix/tcp", queue, WorkerStats(), str)
    server.allowlist = None
    for _ in range(16):
        queue.append(message, ("192.0.2.2", 2055), 0.0)
    peers = []
    for _ in range(50):
        transport = Transport()
        peer = tcp.IpfixTcpReceiver(server)
        transport.protocol = peer
        peer.connection_made(transport)  # type: ignore[arg-type]
        peer.data_received(read)  # all were reading when the queue filled: all pause
        peers.append(peer)
    assert queue.full
    longest, taken = 0, 0
    deadline = time.monotonic() + 10
    while taken < 16 + 50 * 8 * 2 and time.monotonic() < deadline:  # each peer's first read and one more
        while queue.pop() is not None:  # the decoder takes all that waits
            pass
        await asyncio.sleep(tcp.RESUME_POLL_S / 2)
        taken = queue.accepted
        longest = max(longest, len(queue))
    assert taken >= 16 + 50 * 8 * 2  # every peer was let read again
    assert longest <= 16 + 8, longest
    await server.stop_receiving()


def stuck_pipeline(ingress: IngressQueue, stats: WorkerStats) -> tuple[Pipeline, list[int]]:
    """A started pipeline whose sink never finishes a write (a cluster that never answers), and
    the sizes of the parts it was handed."""
    handed: list[int] = []

    class StuckSink(MemorySink):
        async def write(self, documents: list[dict[str, Any]]) -> None:
            handed.append(len(documents))
            await asyncio.Event().wait()

    pipeline = Pipeline(ingress, BatchDecoder(TemplateCache(), stats), StuckSink(), stats, batch_delay_s=0)
    pipeline.start()
    return pipeline, handed


async def test_an_aborted_drain_says_what_it_leaves_behind() -> None:
    """Found by an accounting audit: when the drain ran out of `shutdown_grace_s`, what was still
    queued went with the process and only a log line said how many datagrams (not documents)."""
    stats = WorkerStats()
    ingress = IngressQueue(batch_size=4, capacity=10_000)
    pipeline, handed = stuck_pipeline(ingress, stats)
    sent = 400
    for ident in range(sent):
        ingress.append(netflow_v5(ident, records=3), EXPORTER, 0.0)
    for _ in range(400):  # until the decoder waits for room in the full document queue
        await asyncio.sleep(0.005)
        if pipeline.documents.full() and handed:
            break
    left = len(ingress)
    assert left > 0 and handed == [handed[0]]
    waiting = pipeline.documents_waiting()  # what the worker reports as flowd_documents_waiting
    datagrams, documents = pipeline.abort()
    assert datagrams == left and documents == waiting
    # Every flow decoded is lost but the part the sink was handed (v5: a batch is one part).
    assert documents == 3 * (sent - left) - handed[0]
    await asyncio.sleep(0)


async def test_options_records_are_not_counted_as_documents_waiting_or_lost() -> None:
    """Found in review: options records only teach the enricher (`learn_from_options`), they never
    go to the sink, yet they were counted in flowd_documents_waiting and, at an aborted drain, in
    flowd_shutdown_lost{what="documents"}."""
    from tests.test_ipfix_features import ipfix_message, ipfix_set

    stats = WorkerStats()
    ingress = IngressQueue(batch_size=1, capacity=10_000)
    pipeline, handed = stuck_pipeline(ingress, stats)
    ingress.append(netflow_v5(1, records=3), EXPORTER, 0.0)
    for _ in range(200):
        await asyncio.sleep(0.005)
        if handed:
            break
    assert handed == [3]  # the sink holds that part: it is the sink's to count
    opt = struct.pack("!HHH", 401, 3, 1) + struct.pack("!HHHHHH", 302, 8, 305, 4, 306, 4)
    for ident in range(5):
        sampler = ipfix_set(3, opt) + ipfix_set(401, struct.pack("!QII", ident, 1, 99))
        ingress.append(ipfix_message(sampler), EXPORTER, 0.0)
    for _ in range(200):
        await asyncio.sleep(0.005)
        if not len(ingress) and pipeline.documents.qsize():
            break
    assert stats.snapshot()["counters"]["flowd_options_records_decoded"]
    assert pipeline.documents_waiting() == 0
    assert pipeline.abort() == (0, 0)
    await asyncio.sleep(0)
