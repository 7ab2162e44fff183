"""The Elasticsearch sink when the worker stops and the cluster does not keep up: what memory and
requests in flight hold is spooled within the grace, and the next start indexes every document
once. Found by an audit: a cluster that accepted connections but did not answer (or answered in
20 s) kept every document in memory until the supervisor's kill; a drain deadline that cancelled
a flush lost the batches it held.

A stand-in transport plays the cluster: it answers `_bulk` as Elasticsearch does (201, or 409 for
an `_id` it has), hangs, answers late, or refuses connections."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from elastic_transport import ConnectionError as TransportConnectionError

from flowd.config import ElasticsearchSettings
from flowd.output.bulk import RetryPolicy
from flowd.output.elasticsearch import ElasticsearchSink
from flowd.output.spool import Spool


class Cluster:
    """`mode`: "up", "down" (connection refused), "hang" (never answers) or a delay in seconds."""

    def __init__(self, mode: str | float = "up", max_body: int | None = None) -> None:
        self.mode = mode
        self.max_body = max_body
        """Requests larger than this are answered 413 (a proxy's client_max_body_size)."""
        self.ids: set[str] = set()
        self.requests = 0
        self.retry_once: set[int] = set()
        """Document numbers whose first create is answered 429."""

    async def perform_request(self, method: str, target: str, *, body: Any = None, **_: Any) -> Any:
        self.requests += 1
        if self.mode == "down":
            raise TransportConnectionError("connection refused")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if isinstance(self.mode, float):
            await asyncio.sleep(self.mode)
        if self.max_body is not None and len(body) > self.max_body:
            return SimpleNamespace(meta=SimpleNamespace(status=413), body="413 Request Entity Too Large")
        lines = [line for line in bytes(body).split(b"\n") if line]
        items: list[dict[str, Any]] = []
        for action, document in zip(lines[0::2], lines[1::2], strict=True):
            number = orjson.loads(document)["n"]
            if number in self.retry_once:
                self.retry_once.discard(number)
                items.append({"create": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}})
                continue
            document_id = orjson.loads(action)["create"]["_id"]
            status = 409 if document_id in self.ids else 201
            self.ids.add(document_id)
            items.append({"create": {"status": status}})
        return SimpleNamespace(meta=SimpleNamespace(status=200), body={"errors": False, "items": items})

    async def close(self) -> None:
        return None


def sink_for(
    tmp_path: Path,
    cluster: Cluster,
    policy: RetryPolicy | None = None,
    spool_max_bytes: int | None = None,
    **kwargs: Any,
) -> ElasticsearchSink:
    settings = ElasticsearchSettings(
        hosts=["http://cluster"],
        batch_docs=1000,
        flush_interval_s=3600,
        spool_dir=str(tmp_path / "spool"),
        dead_letter_path=str(tmp_path / "dead.ndjson"),
    )
    if spool_max_bytes is not None:
        settings.spool_max_bytes = spool_max_bytes
    policy = policy or RetryPolicy(initial_s=0.05, cap_s=0.2)
    return ElasticsearchSink(settings, transport=cluster, policy=policy, **kwargs)  # type: ignore[arg-type]


def documents(batches: int) -> list[list[dict[str, Any]]]:
    return [[{"n": b * 1000 + i, "pad": "x" * 40} for i in range(1000)] for b in range(batches)]


async def replay_into(tmp_path: Path, cluster: Cluster) -> dict[str, Any]:
    """The next start, with `cluster` answering: it replays the spool; the sink's stats."""
    sink = sink_for(tmp_path, cluster)
    await sink.start()
    assert await sink.wait_idle(10.0)
    await sink.close()
    return sink.stats


async def replay(tmp_path: Path) -> Cluster:
    """The next start, with the cluster back."""
    cluster = Cluster()
    await replay_into(tmp_path, cluster)
    return cluster


def stop_as_a_worker_does(tmp_path: Path, cluster: Cluster, grace_s: float) -> tuple[float, dict[str, Any]]:
    """Writes 5,000 documents, then stops as `flowd run` does: begin_shutdown, the pipeline's
    final flush, close with what is left of the grace. Returns the seconds the stop took."""

    async def main() -> tuple[float, dict[str, Any]]:
        sink = sink_for(tmp_path, cluster)
        await sink.start()
        for batch in documents(5):
            await sink.write(batch)
        await asyncio.sleep(0.1)  # requests are in flight
        started = time.monotonic()
        ends_at = started + grace_s
        await sink.begin_shutdown(grace_s / 2)
        await asyncio.wait_for(sink.flush(), grace_s)
        await sink.close(timeout_s=ends_at - time.monotonic())
        return time.monotonic() - started, sink.stats

    return asyncio.run(main())


def test_a_cluster_that_never_answers_does_not_hold_documents_past_the_grace(tmp_path: Path) -> None:
    took, stats = stop_as_a_worker_does(tmp_path, Cluster("hang"), grace_s=2.0)
    assert took < 2.5
    assert stats["docs_dropped"] == 0 and stats["spool_docs"] == 5000
    assert len(asyncio.run(replay(tmp_path)).ids) == 5000


def test_a_slow_cluster_gets_what_it_answers_in_time_and_the_rest_is_spooled(tmp_path: Path) -> None:
    slow = Cluster(5.0)
    took, stats = stop_as_a_worker_does(tmp_path, slow, grace_s=2.0)
    assert took < 2.5 and stats["docs_dropped"] == 0
    assert len(asyncio.run(replay(tmp_path)).ids) == 5000


def test_a_flush_cancelled_by_the_drain_deadline_loses_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    """The cluster is down and the disk slow: the drain's deadline cancels the flush while it
    spools; the close spools the rest. The batch being written when the flush was cancelled is
    spooled once: its write ends in its thread, and the cancel waits for it."""
    real_write = Spool.write

    def slow_write(self: Spool, entry: Any, body: Any) -> None:
        time.sleep(0.1)
        real_write(self, entry, body)

    monkeypatch.setattr(Spool, "write", slow_write)

    async def main() -> dict[str, Any]:
        sink = sink_for(tmp_path, Cluster("down"))
        await sink.start()
        for batch in documents(8):
            await sink.write(batch)
        await asyncio.sleep(0.1)  # the first request failed: an outage
        flush = asyncio.create_task(sink.flush())
        await asyncio.sleep(0.25)
        flush.cancel()
        await asyncio.gather(flush, return_exceptions=True)
        await sink.close(timeout_s=5.0)
        return sink.stats

    stats = asyncio.run(main())
    assert stats["docs_dropped"] == 0 and stats["spool_docs"] == 8000
    assert stats["spool_bytes"] == sum(p.stat().st_size for p in (tmp_path / "spool").glob("*.ndjson"))
    monkeypatch.setattr(Spool, "write", real_write)
    cluster = Cluster()
    replayed = asyncio.run(replay_into(tmp_path, cluster))
    assert len(cluster.ids) == 8000 and replayed["docs_duplicate"] == 0


async def wait_for_outage(sink: ElasticsearchSink) -> None:
    """Until the sink has seen its first request fail (an outage begun), at most 5 s."""
    for _ in range(500):
        if sink.stats["outages"]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no outage seen")


def test_a_full_spool_does_not_hold_the_drain_past_the_shutdown_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a soak: the cluster down and the spool full, the pipeline's last flush waited for
    room until the drain's deadline (exit 1, the drain's queue lost). Past the shutdown deadline
    the flush returns, and the close counts what neither the cluster nor the spool took, in one
    log line (the soak's close wrote one per batch, 40 a stop)."""

    async def main() -> tuple[float, dict[str, Any]]:
        sink = sink_for(tmp_path, Cluster("down"), spool_max_bytes=250_000)  # two batches of the five
        await sink.start()
        for batch in documents(5):
            await sink.write(batch)
        await wait_for_outage(sink)
        started = time.monotonic()
        await sink.begin_shutdown(0.5)
        await asyncio.wait_for(sink.flush(), 2.0)  # the drain's deadline
        await sink.close(timeout_s=1.0)
        return time.monotonic() - started, sink.stats

    with caplog.at_level(logging.ERROR, logger="flowd.output"):
        took, stats = asyncio.run(main())
    assert took < 3.0  # not the drain's whole deadline: a hang fails wait_for above
    assert stats["spool_docs"] == 2000 and stats["docs_dropped"] == 3000
    lost = [line for line in caplog.messages if "lost at close" in line]
    assert lost == [
        "elasticsearch sink: 3000 documents (3 batches) lost at close: neither the cluster nor the spool took "
        "them (spool full, or refused by the disk)"
    ]
    assert len(asyncio.run(replay(tmp_path)).ids) == 2000


def test_a_write_past_the_shutdown_deadline_with_memory_and_spool_full_is_held_for_the_close(
    tmp_path: Path,
) -> None:
    """The same with memory full too (a long outage): the drain's writes waited for room in
    memory that only the cluster could make. Past the deadline memory takes them, and the close
    counts them as dropped."""

    async def main() -> tuple[float, dict[str, Any]]:
        sink = sink_for(tmp_path, Cluster("down"), spool_max_bytes=250_000, memory_buffer_bytes=250_000)  # two each
        await sink.start()
        batches = documents(6)
        for batch in batches[:4]:  # two in memory, two spooled
            await sink.write(batch)
        await wait_for_outage(sink)
        started = time.monotonic()
        await sink.begin_shutdown(0.3)
        for batch in batches[4:]:  # the drain's last documents
            await asyncio.wait_for(sink.write(batch), 2.0)
        await asyncio.wait_for(sink.flush(), 2.0)
        await sink.close(timeout_s=1.0)
        return time.monotonic() - started, sink.stats

    took, stats = asyncio.run(main())
    assert took < 3.0  # not the drain's whole deadline: a hang fails wait_for above
    assert stats["spool_docs"] == 2000 and stats["docs_dropped"] == 4000
    assert len(asyncio.run(replay(tmp_path)).ids) == 2000
