"""`flowd run` indexing into a real server process (osmem-server, or FLOWD_TEST_ES_URL).

Corpus captures are replayed over UDP to a running collector whose sink is Elasticsearch; the
server's own `_count` and aggregations are compared with the flows tshark counts (the corpus
units' counts, which `test_corpus_netflow.py` holds against tshark) and with what `flowd decode`
makes of the same bytes. The outage test puts a proxy between flowd and the server, takes it
away mid-stream, restarts flowd during the outage, and checks every flow is indexed exactly once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from flowd.config import ElasticsearchSettings
from flowd.output.index_template import setup_cluster
from tests.corpus_units import UNITS_BY_NAME, unit_datagrams
from tests.es_server import OUTAGE_S, FaultProxy, es_request, es_url
from tests.test_server_e2e import Server, offline_documents, send_paced, sender

__all__ = ["es_url"]  # the session fixture, re-exported for pytest

pytestmark = pytest.mark.integration

UNITS = ("pmacct:100", "akv:nfv5", "lcn:nf9_paloalto_panos", "lcn:ipfix_barracuda", "pmacct:101")
INDEX_TIMEOUT_S = 60.0


class ProxyThread:
    """The fault proxy on an event loop of its own, driven from the (blocking) test."""

    def __init__(self, upstream: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxy = FaultProxy(upstream)
        self.run(self.proxy.start())

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def close(self) -> None:
        self.run(self.proxy.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def proxy(es_url: str) -> Iterator[ProxyThread]:
    thread = ProxyThread(es_url)
    yield thread
    thread.close()


def prepare_index(url: str, namespace: str) -> str:
    settings = ElasticsearchSettings(hosts=[url], namespace=namespace, data_stream="flows-flowd")
    lines: list[str] = []
    assert asyncio.run(setup_cluster(settings, lines.append)) == 0, lines
    return f"{settings.data_stream}-{namespace}"


def es_config(host: str, namespace: str, state: Path) -> str:
    return f"""[elasticsearch]
hosts = ["{host}"]
namespace = "{namespace}"
flush_interval_s = 0.2
batch_docs = 500
retry_max_s = 1.0
spool_dir = "{state / "spool"}"
dead_letter_path = "{state / "dead-letter.ndjson"}"
"""


def count(url: str, index: str) -> int:
    es_request(url, "POST", f"/{index}/_refresh")
    return int(es_request(url, "GET", f"/{index}/_count")["count"])


def wait_count(url: str, index: str, want: int, timeout_s: float = INDEX_TIMEOUT_S) -> int:
    deadline = time.monotonic() + timeout_s
    got = count(url, index)
    while got < want and time.monotonic() < deadline:
        time.sleep(0.25)
        got = count(url, index)
    time.sleep(0.5)  # a late duplicate would show now
    return count(url, index)


def replay(server: Server, unit_name: str, source: Any, sent: list[int]) -> list[bytes]:
    payloads = [d.payload for d in unit_datagrams(UNITS_BY_NAME[unit_name])]
    send_paced(source, payloads, ("127.0.0.1", server.ports["netflow"]), sent)
    return payloads


def terms_and_bytes(url: str, index: str) -> tuple[Counter[str], int]:
    body = {
        "size": 0,
        "aggs": {
            "sources": {"terms": {"field": "source.ip", "size": 1000}},
            "bytes": {"sum": {"field": "network.bytes"}},
        },
    }
    answer = es_request(url, "POST", f"/{index}/_search", body)
    buckets = answer["aggregations"]["sources"]["buckets"]
    return Counter({b["key"]: b["doc_count"] for b in buckets}), int(answer["aggregations"]["bytes"]["value"])


def test_corpus_indexed_through_flowd_run(es_url: str, tmp_path: Path) -> None:
    namespace = f"e2e{int(time.time() * 1000) % 10**8}"
    index = prepare_index(es_url, namespace)
    server = Server(tmp_path / "flowd", extra=es_config(es_url, namespace, tmp_path / "state"))
    server.start()
    try:
        sent = [0]
        expected: list[dict[str, Any]] = []
        for unit_name in UNITS:
            source = sender()
            payloads = replay(server, unit_name, source, sent)
            expected += offline_documents(payloads, source.getsockname(), time.time())
            source.close()
        tshark_flows = sum(UNITS_BY_NAME[name].data_records for name in UNITS)
        assert len(expected) == tshark_flows
        server.wait_received(sent[0])
        indexed = wait_count(es_url, index, tshark_flows)
        assert server.stop() == 0, server.log()
    finally:
        server.kill()
    assert indexed == tshark_flows
    sources, total_bytes = terms_and_bytes(es_url, index)
    assert sources == Counter(str(d["source.ip"]) for d in expected if "source.ip" in d)
    assert total_bytes == sum(int(d["network.bytes"]) for d in expected)


def test_outage_and_restart_index_every_flow_once(es_url: str, proxy: ProxyThread, tmp_path: Path) -> None:
    namespace = f"outage{int(time.time() * 1000) % 10**8}"
    index = prepare_index(es_url, namespace)
    config = es_config(proxy.proxy.url, namespace, tmp_path / "state")
    server = Server(tmp_path / "flowd", extra=config)
    expected_ids: Counter[str] = Counter()
    try:
        server.start()
        sent = [0]
        first = sender()
        expected_ids.update(str(d["flow.id"]) for d in offline_documents(
            replay(server, "pmacct:101", first, sent), first.getsockname(), time.time()
        ))  # fmt: skip
        assert wait_count(es_url, index, sum(expected_ids.values())) == sum(expected_ids.values())

        proxy.run(proxy.proxy.down())  # the cluster goes away mid-stream
        second = sender()
        expected_ids.update(str(d["flow.id"]) for d in offline_documents(
            replay(server, "akv:nfv5", second, sent), second.getsockname(), time.time()
        ))  # fmt: skip
        server.wait_received(sent[0])
        assert server.stop() == 0, server.log()  # flowd restarts during the outage: it must spool

        server.start()
        sent_again = [0]
        third = sender()
        expected_ids.update(str(d["flow.id"]) for d in offline_documents(
            replay(server, "pmacct:100", third, sent_again), third.getsockname(), time.time()
        ))  # fmt: skip
        server.wait_received(sent_again[0])
        time.sleep(OUTAGE_S)
        retries_during_outage = server.total("flowd_es_retries_total")
        proxy.run(proxy.proxy.up())
        want = sum(expected_ids.values())
        indexed = wait_count(es_url, index, want)
        # Replayed documents count once the cluster has answered for them, which the worker
        # reports within a second of the index holding them.
        deadline = time.monotonic() + 10
        while (replayed := server.total("flowd_es_docs_replayed_total")) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.stop() == 0, server.log()
    finally:
        server.kill()
    assert indexed == want  # nothing lost, nothing twice
    answer = es_request(
        es_url, "POST", f"/{index}/_search", {"size": 0, "aggs": {"ids": {"terms": {"field": "flow.id", "size": 5000}}}}
    )
    got = Counter({b["key"]: b["doc_count"] for b in answer["aggregations"]["ids"]["buckets"]})
    assert got == expected_ids
    assert replayed > 0  # the spool written by the first run went in after the restart
    assert retries_during_outage > 0
