"""The Elasticsearch sink's spool when things go wrong around it. Found by an audit of the output
path: a spooled batch answered 413 was retried forever and blocked everything behind it (also
after a restart); a disk error while shrinking a spooled batch stranded it; workers sharing one
spool directory each took the whole cap."""

from __future__ import annotations

import asyncio
import errno
import logging
from pathlib import Path
from typing import Any

import orjson

from flowd.config import ElasticsearchSettings
from flowd.output.bulk import RetryPolicy
from flowd.output.elasticsearch import build_elasticsearch_sink
from flowd.output.spool import Spool
from tests.test_es_shutdown import Cluster, documents, replay_into, sink_for


def spool_and_stop(tmp_path: Path, batches: int) -> None:
    """A run that spooled `batches` batches of 1,000 documents during an outage."""

    async def main() -> None:
        sink = sink_for(tmp_path, Cluster("down"), close_timeout_s=2.0)
        await sink.start()
        for batch in documents(batches):
            await sink.write(batch)
        await sink.close()
        assert sink.stats["spool_docs"] == batches * 1000

    asyncio.run(main())


def test_a_spooled_batch_too_large_for_the_cluster_is_split_until_it_fits(tmp_path: Path) -> None:
    spool_and_stop(tmp_path, 2)  # batches of about 70 KB
    cluster = Cluster(max_body=20_000)  # a proxy in front of the cluster takes 20 KB at most

    stats = asyncio.run(replay_into(tmp_path, cluster))
    assert len(cluster.ids) == 2000 and stats["docs_dead_lettered"] == 0
    assert not list((tmp_path / "spool").glob("*.ndjson"))


def test_a_split_spooled_batch_whose_file_cannot_be_deleted_stays_spooled_only(
    tmp_path: Path, monkeypatch: Any, caplog: Any
) -> None:
    """Found by an audit: a replayed batch answered 413 was split into memory, then its file could
    not be deleted (a permission or I/O error) and the entry went back to the spool queue too:
    its documents were held, sent and counted twice. Now the batch stays spooled, whole, and
    the split is tried again from the file once the disk's back-off is over; the sink does not
    back off from the cluster, which is fine."""
    spool_and_stop(tmp_path, 1)  # one batch of about 70 KB
    cluster = Cluster(max_body=50_000)  # answered 413; either half fits
    refused: list[str] = []

    def undeletable(self: Spool, entry: Any) -> None:
        refused.append(entry.name)
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Spool, "delete", undeletable)

    async def main() -> None:
        sink = sink_for(tmp_path, cluster, RetryPolicy(initial_s=60.0, cap_s=60.0, jitter=0.0))
        await sink.start()
        async with sink._cond:  # the worker ends its attempt: the entry is back, a retry a minute away
            await sink._cond.wait_for(lambda: bool(refused) and sink.stats["in_flight"] == 0)
        stats = sink.stats
        assert len(cluster.ids) + stats["buffered_docs"] + stats["spool_docs"] == 1000  # each document once
        assert (stats["spool_docs"], stats["spool_batches"], stats["buffered_docs"]) == (1000, 1, 0)
        assert stats["docs_replayed"] == 0 and len(list((tmp_path / "spool").glob("*.ndjson"))) == 1
        assert stats["retries"] == stats["outages"] == 0  # the disk's error, not the cluster's
        assert not [line for line in caplog.messages if "split in two" in line]  # it was not
        await sink.close(timeout_s=1.0)
        assert sink.stats["docs_spooled"] == 0  # the close had nothing of it in memory to spool again

    with caplog.at_level(logging.WARNING, logger="flowd.output"):
        asyncio.run(main())
    monkeypatch.undo()
    stats = asyncio.run(replay_into(tmp_path, cluster))
    assert len(cluster.ids) == 1000 and stats["docs_duplicate"] == 0 and stats["docs_replayed"] == 1000
    assert not list((tmp_path / "spool").glob("*.ndjson"))


def test_a_single_document_larger_than_any_request_goes_to_the_dead_letter_file(tmp_path: Path) -> None:
    cluster = Cluster(max_body=2_000)

    async def main() -> dict[str, Any]:
        sink = sink_for(tmp_path, cluster)
        await sink.start()
        await sink.write([{"n": 1, "pad": "x" * 5_000}, {"n": 2, "pad": "small"}])
        await sink.flush()
        assert await sink.wait_idle(5.0)
        await sink.close()
        return sink.stats

    stats = asyncio.run(main())
    assert len(cluster.ids) == 1 and stats["docs_dead_lettered"] == 1
    (line,) = (tmp_path / "dead.ndjson").read_bytes().splitlines()
    dead = orjson.loads(line)
    assert dead["status"] == 413 and dead["document"]["n"] == 1


def test_a_spooled_batch_that_cannot_be_shrunk_stays_whole_and_is_sent_again(tmp_path: Path, monkeypatch: Any) -> None:
    """Ten documents of a replayed batch are answered 429; writing the file of the other ninety
    fails (disk full). The original stays, is sent again, and every document is indexed."""
    spool_and_stop(tmp_path, 1)
    cluster = Cluster()
    cluster.retry_once = set(range(0, 1000, 100))
    real_write = Spool.write
    failures = [1]

    def full_once(self: Spool, entry: Any, body: Any) -> None:
        if failures[0]:
            failures[0] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, entry, body)

    monkeypatch.setattr(Spool, "write", full_once)

    stats = asyncio.run(replay_into(tmp_path, cluster))
    assert len(cluster.ids) == 1000 and stats["spool_bytes"] == 0
    assert not [p for p in (tmp_path / "spool").iterdir() if p.suffix in (".ndjson", ".tmp")]


def test_workers_spool_apart_within_their_share_and_worker_0_takes_over_orphans(tmp_path: Path) -> None:
    base = tmp_path / "spool"
    settings = ElasticsearchSettings(hosts=["http://cluster"], spool_dir=str(base), spool_max_bytes=1_000_000)
    (base / "worker-3").mkdir(parents=True)  # a run with four workers left a batch behind
    body = b"".join(
        orjson.dumps({"create": {"_id": f"o{n}"}}) + b"\n" + orjson.dumps({"n": n}) + b"\n" for n in range(3)
    )
    (base / "worker-3" / "00000000000000000001-000000000-3.ndjson").write_bytes(body)
    (base / "00000000000000000002-000000000-3.ndjson").write_bytes(body)  # and an earlier version, here
    sinks = [build_elasticsearch_sink(settings, worker, 2) for worker in range(2)]
    assert [s._spool.directory for s in sinks] == [base / "worker-0", base / "worker-1"]
    assert [s._spool.max_bytes for s in sinks] == [500_000, 500_000]
    assert sorted(p.name for p in (base / "worker-0").iterdir()) == [
        "00000000000000000001-000000000-3.ndjson",
        "00000000000000000002-000000000-3.ndjson",
    ]
    assert not list((base / "worker-3").iterdir()) and not list(base.glob("*.ndjson"))

    async def replayed() -> Cluster:
        cluster = Cluster()
        sink = build_elasticsearch_sink(settings, 0, 2)
        sink._transport = cluster  # type: ignore[assignment]
        await sink.start()
        assert await sink.wait_idle(5.0)
        await sink.close()
        return cluster

    assert len(asyncio.run(replayed()).ids) == 3  # the same three ids in both files: once, then 409s


def test_replayed_counts_each_spooled_document_once_however_many_attempts_fail(tmp_path: Path) -> None:
    """Found by a conservation audit: every probe of a cluster still away counted its spooled
    batch as replayed again, so after an outage `flowd_es_docs_replayed` outgrew what was
    ever spooled. Replayed now means answered for (or, after a 413, split back into memory)."""
    spool_and_stop(tmp_path, 3)
    cluster = Cluster("down")

    async def main() -> dict[str, Any]:
        sink = sink_for(tmp_path, cluster)
        await sink.start()
        while cluster.requests < 4:  # several replay attempts fail
            await asyncio.sleep(0.02)
        assert sink.stats["docs_replayed"] == 0
        cluster.mode = "up"
        assert await sink.wait_idle(10.0)
        await sink.close()
        return sink.stats

    stats = asyncio.run(main())
    assert stats["docs_replayed"] == 3000 and stats["batches_replayed"] == 3
    assert stats["docs_indexed"] == 3000 and stats["spool_docs"] == 0


def test_a_partly_accepted_spooled_batch_counts_as_replayed_what_the_cluster_took(tmp_path: Path) -> None:
    spool_and_stop(tmp_path, 1)
    cluster = Cluster()
    cluster.retry_once = set(range(0, 1000, 2))  # half of the batch is answered 429 the first time
    stats = asyncio.run(replay_into(tmp_path, cluster))
    assert stats["docs_replayed"] == 1000 and stats["docs_indexed"] == 1000


def test_a_spool_file_gone_before_its_replay_is_counted_lost(tmp_path: Path) -> None:
    """Found by an accounting audit: a spool file removed from under the sink (by hand, or with its
    disk) was logged and skipped; its documents were counted nowhere."""
    spool_and_stop(tmp_path, 3)
    cluster = Cluster("down")

    async def main() -> dict[str, Any]:
        sink = sink_for(tmp_path, cluster)
        await sink.start()  # the spool is scanned: three files to replay
        await asyncio.sleep(0.1)
        (gone, *_) = sorted((tmp_path / "spool").glob("*.ndjson"))
        gone.unlink()
        cluster.mode = "up"
        assert await sink.wait_idle(10.0)
        await sink.close()
        return sink.stats

    stats = asyncio.run(main())
    assert len(cluster.ids) == 2000
    assert stats["docs_spool_lost"] == 1000


def test_the_spool_is_accounted_on_the_event_loop_only(tmp_path: Path, monkeypatch: Any) -> None:
    """Found by a soak audit: removing and shrinking spooled batches changed the spool's queue and
    byte count from a worker thread while the loop changed them too; a thread switch inside
    `_bytes += ...` loses an update. File work stays in threads; the bookkeeping must not."""
    import threading

    threads: dict[str, set[str]] = {}
    for name in ("reserve", "commit", "abandon", "claim", "release", "remove", "replace"):
        real = getattr(Spool, name)

        def recorded(self: Spool, *args: Any, _real: Any = real, _name: str = name) -> Any:
            threads.setdefault(_name, set()).add(threading.current_thread().name)
            return _real(self, *args)

        monkeypatch.setattr(Spool, name, recorded)
    spool_and_stop(tmp_path, 3)
    cluster = Cluster()  # batches taken whole (their files removed), and one partly refused:
    cluster.retry_once = set(range(1000, 2000, 2))  # its file shrunk to what is left
    stats = asyncio.run(replay_into(tmp_path, cluster))
    assert len(cluster.ids) == 3000 and stats["spool_bytes"] == 0
    assert {"remove", "replace", "claim", "reserve", "commit"} <= set(threads)
    assert set().union(*threads.values()) == {threading.main_thread().name}, threads


def test_the_sink_reports_the_documents_it_holds_in_memory(tmp_path: Path) -> None:
    """What a worker that dies takes with it (`flowd_worker_lost_documents`) is, from the sink,
    the documents in its memory: buffered, batched, and in requests not from the spool."""

    async def main() -> None:
        cluster = Cluster("hang")  # requests never answered: batches stay in flight
        sink = sink_for(tmp_path, cluster, close_timeout_s=0.5)
        await sink.start()
        for batch in documents(3):
            await sink.write(batch)
        await sink.write([{"n": 10_000, "pad": "x"}])  # not yet a whole batch
        await asyncio.sleep(0.2)
        assert sink.stats["buffered_docs"] == 3001 and sink.stats["spool_docs"] == 0
        await sink.close(timeout_s=0.5)
        stats = sink.stats
        assert stats["buffered_docs"] == 0 and stats["spool_docs"] + stats["docs_dropped"] == 3001

    asyncio.run(main())


def test_a_batch_from_memory_that_meets_file_not_found_is_retried_not_dropped(tmp_path: Path) -> None:
    """Found by a review: any FileNotFoundError while a batch was sent was taken for a vanished
    spool file, so a batch from memory (no file at all) was dropped, uncounted, logged as
    "spool file ? vanished: 0 documents lost". It is now an unexpected error like any other:
    the batch goes back and is sent again."""
    cluster = Cluster()
    failures = [FileNotFoundError(2, "No such file or directory", "/etc/flowd/ca.pem")]
    real = cluster.perform_request

    async def once_missing(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(*args, **kwargs)

    cluster.perform_request = once_missing  # type: ignore[method-assign]

    async def main() -> dict[str, Any]:
        sink = sink_for(tmp_path, cluster)
        await sink.start()
        await sink.write(documents(1)[0])
        await sink.flush()
        for _ in range(200):  # the retry comes after a back-off
            if sink.stats["docs_indexed"] or sink.stats["docs_spool_lost"]:
                break
            await asyncio.sleep(0.05)
        await sink.close(timeout_s=2.0)
        return sink.stats

    stats = asyncio.run(main())
    assert not failures and stats["docs_spool_lost"] == 0
    assert len(cluster.ids) == stats["docs_indexed"] == 1000
