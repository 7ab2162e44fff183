"""The Elasticsearch sink against a real server process (osmem-server, or FLOWD_TEST_ES_URL).

Every check reads the cluster back with its own plain HTTP requests (`_count`, aggregations) and
compares with sums computed from the documents themselves. Outages and 429s come from FaultProxy.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from flowd.config import ElasticsearchSettings
from flowd.offline import DecodeSummary, decode_documents
from flowd.output.bulk import RetryPolicy
from flowd.output.elasticsearch import ElasticsearchSink, build_elasticsearch_sink
from flowd.output.index_template import setup_cluster
from tests.es_server import (
    OUTAGE_S,
    REAL_CLUSTER_URL,
    FaultProxy,
    delete_target,
    es_auth,
    es_request,
    es_url,  # noqa: F401  (fixture)
)
from tests.shared_data import CORPUS as SHARED_CORPUS

pytestmark = [pytest.mark.integration]

CORPUS = SHARED_CORPUS
CAPTURES = [CORPUS / "akvorado/netflow/nfv5.pcap", CORPUS / "pmacct/100-IPFIXv10-CISCO/traffic-00.pcap"]
FAST_RETRY = RetryPolicy(initial_s=0.05, cap_s=0.5)


def corpus_documents() -> list[dict[str, Any]]:
    return list(decode_documents([str(p) for p in CAPTURES if p.exists()], DecodeSummary()))


def numbered(count: int) -> list[dict[str, Any]]:
    """`count` corpus documents, each marked with its own `labels.seq` so every one is countable."""
    base = corpus_documents()
    assert base, "no corpus documents decoded"
    return [{**doc, "labels.seq": seq} for seq, doc in zip(range(count), itertools.cycle(base), strict=False)]


def make_settings(tmp_path: Path, url: str, **changes: Any) -> ElasticsearchSettings:
    user, password = es_auth()
    settings = ElasticsearchSettings(
        hosts=[url],
        user=user,
        password=password,
        data_stream="flows-flowdtest",
        namespace=uuid.uuid4().hex[:12],
        spool_dir=str(tmp_path / "spool"),
        dead_letter_path=str(tmp_path / "dead-letter.ndjson"),
        batch_docs=200,
        flush_interval_s=0.2,
        max_in_flight=4,
        retry_max_s=0.5,
    )
    for key, value in changes.items():
        setattr(settings, key, value)
    return settings


async def prepare(url: str, settings: ElasticsearchSettings) -> str:
    direct = ElasticsearchSettings(**{**_fields(settings), "hosts": [url]})
    lines: list[str] = []
    assert await setup_cluster(direct, lines.append) == 0, lines
    return f"{settings.data_stream}-{settings.namespace}"


def _fields(settings: ElasticsearchSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__slots__}


def count(url: str, target: str) -> int:
    es_request(url, "POST", f"/{target}/_refresh")
    return int(es_request(url, "GET", f"/{target}/_count")["count"])


def seq_counts(url: str, target: str, size: int) -> Counter[int]:
    es_request(url, "POST", f"/{target}/_refresh")
    answer = es_request(
        url,
        "POST",
        f"/{target}/_search",
        {"size": 0, "aggs": {"seq": {"terms": {"field": "labels.seq", "size": size}}}},
    )
    return Counter({int(b["key"]): int(b["doc_count"]) for b in answer["aggregations"]["seq"]["buckets"]})


async def test_index_corpus_documents_count_terms_and_sum(es_url: str, tmp_path: Path) -> None:  # noqa: F811
    """(1) N corpus documents through gzip, several hosts' worth of requests in flight: all there."""
    proxy = FaultProxy(es_url)
    await proxy.start()
    settings = make_settings(tmp_path, proxy.url, gzip=True, batch_docs=7)
    if not REAL_CLUSTER_URL:
        settings.user, settings.password = "flowd", "secret"  # osmem ignores it; the proxy sees the header
    target = await prepare(es_url, settings)
    documents = corpus_documents()
    sink = build_elasticsearch_sink(settings)
    try:
        await sink.start()
        for start in range(0, len(documents), 10):
            await sink.write(documents[start : start + 10])
        await sink.flush()
        stats = sink.stats
        await sink.close()

        assert count(es_url, target) == len(documents)
        expected_ips = Counter(d["source.ip"] for d in documents if "source.ip" in d)
        answer = es_request(
            es_url,
            "POST",
            f"/{target}/_search",
            {
                "size": 0,
                "aggs": {
                    "ips": {"terms": {"field": "source.ip", "size": 1000}},
                    "bytes": {"sum": {"field": "network.bytes"}},
                },
            },
        )
        got_ips = Counter({b["key"]: b["doc_count"] for b in answer["aggregations"]["ips"]["buckets"]})
        assert got_ips == expected_ips
        assert answer["aggregations"]["bytes"]["value"] == sum(d.get("network.bytes", 0) for d in documents)
        assert stats["docs_indexed"] == len(documents)
        assert stats["bulk_requests"] >= len(documents) // 7
        assert stats["docs_dead_lettered"] == stats["docs_dropped"] == stats["retries"] == 0
        assert stats["bulk_latency_seconds_count"] == stats["bulk_requests"]
        assert proxy.gzip_requests == stats["bulk_requests"]
        assert any(a.startswith("Basic ") for a in proxy.authorization)
    finally:
        await proxy.close()
        delete_target(es_url, target)


async def test_outage_and_restart_index_every_flow_exactly_once(es_url: str, tmp_path: Path) -> None:  # noqa: F811
    """(2) The cluster goes away mid-stream; the sink is closed and re-created during the outage."""
    proxy = FaultProxy(es_url)
    await proxy.start()
    settings = make_settings(tmp_path, proxy.url, batch_docs=100)
    target = await prepare(es_url, settings)
    documents = numbered(3000)
    chunks = [documents[i : i + 50] for i in range(0, len(documents), 50)]
    options = {"policy": FAST_RETRY, "memory_buffer_bytes": 400_000, "request_timeout_s": 5.0, "close_timeout_s": 5.0}
    try:
        first = ElasticsearchSink(settings, **options)
        await first.start()
        for chunk in chunks[:20]:  # 1,000 documents while the cluster is there
            await first.write(chunk)
        await first.flush()
        await proxy.down()
        pause = OUTAGE_S / 2 / 20
        for chunk in chunks[20:40]:  # 1,000 during the outage: memory fills, then the spool
            await first.write(chunk)
            await asyncio.sleep(pause)
        await first.close()  # restart during the outage: whatever is in memory goes to the spool
        first_stats = first.stats
        spooled = sorted(Path(settings.spool_dir).glob("*.ndjson"))
        backup = {p.name: p.read_bytes() for p in spooled}

        second = ElasticsearchSink(settings, **options)
        await second.start()
        for chunk in chunks[40:]:  # 1,000 more while still away
            await second.write(chunk)
            await asyncio.sleep(pause)
        await proxy.up()
        await second.flush()
        assert await second.wait_idle(30.0)
        second_stats = second.stats
        await second.close()

        seqs = seq_counts(es_url, target, len(documents) + 10)
        assert count(es_url, target) == len(documents)
        assert set(seqs) == set(range(len(documents)))
        assert set(seqs.values()) == {1}
        assert first_stats["batches_spooled"] > 0 and first_stats["bulk_request_failures"] > 0
        assert first_stats["docs_dropped"] == second_stats["docs_dropped"] == 0
        assert second_stats["batches_replayed"] >= len(spooled) > 0
        assert second_stats["spool_batches"] == 0 and second_stats["spool_bytes"] == 0
        assert first_stats["retries"] + second_stats["retries"] > 0
        assert first_stats["docs_dead_lettered"] == second_stats["docs_dead_lettered"] == 0
        assert not list(Path(settings.spool_dir).iterdir())

        # A crash after the cluster took a batch but before its spool file was removed: the replay
        # carries the same `_id`s, is answered 409, and nothing is indexed twice.
        for name, body in backup.items():
            (Path(settings.spool_dir) / name).write_bytes(body)
        third = ElasticsearchSink(settings, **options)
        await third.start()
        assert await third.wait_idle(30.0)
        third_stats = third.stats
        await third.close()
        replayed_docs = sum(body.count(b"\n") // 2 for body in backup.values())
        assert third_stats["docs_duplicate"] == replayed_docs and third_stats["docs_indexed"] == 0
        assert count(es_url, target) == len(documents)
    finally:
        await proxy.close()
        delete_target(es_url, target)


async def test_throttling_retries_and_mapping_errors_go_to_dead_letter(es_url: str, tmp_path: Path) -> None:  # noqa: F811
    """(3) 429 for a while, then per-item 429s; documents that fail mapping are dead-lettered."""
    proxy = FaultProxy(es_url)
    await proxy.start()
    settings = make_settings(tmp_path, proxy.url, batch_docs=100)
    target = await prepare(es_url, settings)
    good = numbered(600)
    bad = [{**good[i], "labels.seq": 10_000 + i, "network.bytes": "not-a-number"} for i in range(3)]
    sink = ElasticsearchSink(settings, policy=FAST_RETRY, request_timeout_s=5.0)
    try:
        await sink.start()
        proxy.throttle()
        await sink.write(good[:300] + bad)
        await asyncio.sleep(min(2.0, OUTAGE_S))
        await proxy.up()
        proxy.item_throttle_responses = 2  # then two responses that report half their items as 429
        await sink.write(good[300:])
        await sink.flush()
        assert await sink.wait_idle(30.0)
        stats = sink.stats
        await sink.close()

        assert count(es_url, target) == len(good)
        seqs = seq_counts(es_url, target, 1000)
        assert set(seqs) == set(range(len(good))) and set(seqs.values()) == {1}
        lines = [orjson.loads(line) for line in Path(settings.dead_letter_path).read_bytes().splitlines()]
        assert sorted(line["document"]["labels.seq"] for line in lines) == [10_000, 10_001, 10_002]
        for line in lines:
            assert line["status"] == 400
            assert "network.bytes" in orjson.dumps(line["error"]).decode()
        assert stats["docs_dead_lettered"] == 3
        assert proxy.statuses[429] > 0 and stats["bulk_request_failures"] >= proxy.statuses[429]
        assert stats["retries"] > 0 and stats["docs_retried"] >= proxy.items_reported_429
        # Items reported 429 had in fact been indexed: their retry is answered 409, counted as done.
        assert stats["docs_duplicate"] == proxy.items_reported_429 > 0
        assert stats["docs_indexed"] + stats["docs_duplicate"] == len(good)
        assert stats["docs_dropped"] == 0
    finally:
        await proxy.close()
        delete_target(es_url, target)


async def test_raw_values_that_do_not_fit_their_mapping_keep_their_document(es_url: str, tmp_path: Path) -> None:  # noqa: F811
    """An unsigned64 identifier past 2^63, an address element sent with an odd length (kept as hex)
    and an IE named like an address that is a count (distinctCountOfSourceIPv4Address): the
    documents are indexed, the misfit raw values left out of the index, none dead-lettered."""
    settings = make_settings(tmp_path, es_url, batch_docs=1)
    target = await prepare(es_url, settings)
    base = numbered(3)
    fitting = {"netflow.flow_id": 5, "netflow.post_nat_source_ipv4_address": "10.0.0.1"}
    misfits = [
        {"netflow.flow_id": 2**64 - 1, "netflow.post_nat_source_ipv4_address": "0a0000"},
        {"netflow.distinct_count_of_source_ipv4_address": 12},
    ]
    sink = ElasticsearchSink(settings, policy=FAST_RETRY, request_timeout_s=5.0)
    try:
        await sink.start()
        for document, raw in zip(base, [fitting, *misfits], strict=True):
            await sink.write([{**document, **raw}])
            await sink.flush()
            assert await sink.wait_idle(30.0)
        stats = sink.stats
        await sink.close()
        assert stats["docs_dead_lettered"] == 0 and not Path(settings.dead_letter_path).exists()
        assert count(es_url, target) == 3
        found = es_request(es_url, "POST", f"/{target}/_search", {"query": {"term": {"netflow.flow_id": 5}}})
        assert [hit["_source"]["labels.seq"] for hit in found["hits"]["hits"]] == [0]
    finally:
        delete_target(es_url, target)


async def test_the_dead_letter_file_stops_at_its_cap_and_counts_the_rest(es_url: str, tmp_path: Path) -> None:  # noqa: F811
    """Found by an audit: a mapping conflict dead-letters every flow, and the file grew until the
    disk it shares with the spool was full. Past `dead_letter_max_bytes` documents are counted,
    not written; once the operator moves the file away, writing starts again."""
    settings = make_settings(tmp_path, es_url, batch_docs=1, dead_letter_max_bytes=3_000)
    target = await prepare(es_url, settings)
    bad = [{**document, "network.bytes": "not-a-number"} for document in numbered(40)]
    sink = ElasticsearchSink(settings, policy=FAST_RETRY, request_timeout_s=5.0)
    path = Path(settings.dead_letter_path)
    try:
        await sink.start()
        for document in bad[:30]:
            await sink.write([document])
            await sink.flush()
            assert await sink.wait_idle(30.0)
        lines = path.read_bytes().splitlines()
        longest = max(len(line) + 1 for line in lines)
        assert 3_000 <= path.stat().st_size < 3_000 + longest
        stats = sink.stats
        assert stats["docs_dead_lettered"] == 30
        assert stats["dead_letters_unwritten"] == 30 - len(lines) > 0
        path.rename(tmp_path / "looked-at.ndjson")
        await sink.write(bad[30:31])
        await sink.flush()
        assert await sink.wait_idle(30.0)
        assert len(path.read_bytes().splitlines()) == 1
        await sink.close()
    finally:
        delete_target(es_url, target)
