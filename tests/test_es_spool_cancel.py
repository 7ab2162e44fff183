"""The spool under cancellation. Found by an audit: a deadline that cancelled the task awaiting a
spool write, delete or shrink left the spool's count to the cancel, while the thread doing the
file work ran on (a thread cannot be cancelled). A cancelled write kept its reservation (spool
bytes high for the rest of the run) and its batch went back to memory too, spooled a second time;
a cancelled delete or shrink put back an entry whose file was gone.

Each test holds the file work in its thread, cancels the task awaiting it, then lets the thread
finish, and compares what the sink reports with the files on disk."""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from flowd.output.bulk import RetryPolicy
from flowd.output.dead_letters import DeadLetterFile
from flowd.output.elasticsearch import ElasticsearchSink
from flowd.output.spool import Spool
from tests.test_es_disk_errors import Rejecting
from tests.test_es_shutdown import Cluster, documents, replay_into, sink_for
from tests.test_es_spool_faults import spool_and_stop


class Gate:
    """Holds the first call of a blocking method of `owner` (the spool's, or the dead-letter
    file's) in its thread until `cancel_inside` lets it go."""

    def __init__(self, monkeypatch: Any, name: str, owner: type = Spool) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        real = getattr(owner, name)

        def held(self_: Any, *args: Any) -> Any:
            if self.entered.is_set():
                return real(self_, *args)
            self.entered.set()
            self.release.wait(10.0)
            try:
                return real(self_, *args)
            finally:
                self.finished.set()

        monkeypatch.setattr(owner, name, held)

    async def cancel_inside(self, *tasks: asyncio.Task[Any]) -> None:
        """Cancel `tasks` while the file work is held, then let it finish; returns once they and
        the file work have ended."""
        try:
            assert await asyncio.to_thread(self.entered.wait, 10.0)
            for task in tasks:
                task.cancel()
            await asyncio.sleep(0)  # one turn of the loop: the cancel reaches the tasks
        finally:
            self.release.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert await asyncio.to_thread(self.finished.wait, 10.0)


class Refusing(Cluster):
    """Connection refused, and `refused` set once a request was."""

    def __init__(self) -> None:
        super().__init__("down")
        self.refused = asyncio.Event()

    async def perform_request(self, method: str, target: str, **kwargs: Any) -> Any:
        try:
            return await super().perform_request(method, target, **kwargs)
        finally:
            self.refused.set()


def on_disk(tmp_path: Path) -> tuple[int, int, int]:
    """(batches, bytes, documents) in the spool directory, documents counted by their lines."""
    files = sorted((tmp_path / "spool").glob("*.ndjson"))
    docs = sum(len(f.read_bytes().splitlines()) // 2 for f in files)
    return len(files), sum(f.stat().st_size for f in files), docs


def reported(sink: ElasticsearchSink) -> tuple[int, int, int]:
    stats = sink.stats
    return stats["spool_batches"], stats["spool_bytes"], stats["spool_docs"]


async def outage(tmp_path: Path, **kwargs: Any) -> tuple[ElasticsearchSink, Refusing]:
    """A sink whose first batch (1,000 documents) the cluster refused: it waits in memory, for
    a retry a minute away."""
    cluster = Refusing()
    sink = sink_for(tmp_path, cluster, RetryPolicy(initial_s=60.0, cap_s=60.0, jitter=0.0), **kwargs)
    await sink.start()
    await sink.write(documents(1)[0])
    await cluster.refused.wait()
    return sink, cluster


def test_a_flush_cancelled_while_its_batch_is_written_leaves_it_spooled_once(tmp_path: Path, monkeypatch: Any) -> None:
    gate = Gate(monkeypatch, "write")

    async def main() -> None:
        sink, _cluster = await outage(tmp_path)
        await gate.cancel_inside(asyncio.create_task(sink.flush()))
        assert reported(sink) == on_disk(tmp_path) == (1, on_disk(tmp_path)[1], 1000)
        assert sink.stats["buffered_docs"] == 0  # spooled, so not in memory as well
        await sink.close(timeout_s=1.0)
        assert reported(sink) == on_disk(tmp_path)
        assert sink.stats["docs_spooled"] == 1000 and sink.stats["docs_dropped"] == 0

    asyncio.run(main())
    cluster = Cluster()
    stats = asyncio.run(replay_into(tmp_path, cluster))
    assert len(cluster.ids) == 1000 and stats["docs_duplicate"] == 0


def test_a_write_cancelled_while_memory_overflows_to_the_spool_keeps_each_batch_once(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The pipeline's drain deadline cancels `write` while it spools the oldest batch to make room."""
    gate = Gate(monkeypatch, "write")

    async def main() -> None:
        sink, _cluster = await outage(tmp_path, memory_buffer_bytes=1)  # the next batch spools it
        second = [{"n": 1000 + n, "pad": "y"} for n in range(1000)]
        await gate.cancel_inside(asyncio.create_task(sink.write(second)))
        assert reported(sink) == on_disk(tmp_path) == (1, on_disk(tmp_path)[1], 1000)
        assert sink.stats["buffered_docs"] == 1000  # the second batch, in memory
        await sink.close(timeout_s=1.0)
        assert reported(sink) == on_disk(tmp_path) == (2, on_disk(tmp_path)[1], 2000)

    asyncio.run(main())
    cluster = Cluster()
    stats = asyncio.run(replay_into(tmp_path, cluster))
    assert len(cluster.ids) == 2000 and stats["docs_duplicate"] == 0


def test_a_replay_cancelled_while_its_file_is_deleted_leaves_nothing_spooled(tmp_path: Path, monkeypatch: Any) -> None:
    spool_and_stop(tmp_path, 1)
    gate = Gate(monkeypatch, "delete")
    cluster = Cluster()

    async def main() -> None:
        sink = sink_for(tmp_path, cluster)
        await sink.start()  # a worker replays the batch; the cluster takes it; its file goes
        await gate.cancel_inside(*sink._tasks)  # as the close's deadline does
        assert reported(sink) == on_disk(tmp_path) == (0, 0, 0)
        assert sink.stats["docs_replayed"] == 1000
        await sink.close(timeout_s=1.0)

    asyncio.run(main())
    stats = asyncio.run(replay_into(tmp_path, cluster))
    assert len(cluster.ids) == 1000 and stats["docs_duplicate"] == 0 and stats["docs_spool_lost"] == 0


def test_a_replay_cancelled_while_its_file_is_shrunk_keeps_what_is_left(tmp_path: Path, monkeypatch: Any) -> None:
    spool_and_stop(tmp_path, 1)
    gate = Gate(monkeypatch, "shrink")
    cluster = Cluster()
    cluster.retry_once = set(range(0, 1000, 100))  # ten documents answered 429: the file keeps them

    async def main() -> None:
        sink = sink_for(tmp_path, cluster)
        await sink.start()
        await gate.cancel_inside(*sink._tasks)
        assert reported(sink) == on_disk(tmp_path) == (1, on_disk(tmp_path)[1], 10)
        assert sink.stats["docs_replayed"] == 990
        await sink.close(timeout_s=1.0)
        assert reported(sink) == on_disk(tmp_path)

    asyncio.run(main())
    stats = asyncio.run(replay_into(tmp_path, cluster))
    assert len(cluster.ids) == 1000 and stats["docs_replayed"] == 10
    assert stats["docs_duplicate"] == 0 and stats["docs_spool_lost"] == 0


@pytest.mark.parametrize("write_fails", [False, True], ids=["written", "disk-full"])
def test_a_close_cancelled_while_it_spools_counts_what_it_had_not_spooled_as_dropped(
    tmp_path: Path, monkeypatch: Any, caplog: Any, write_fails: bool
) -> None:
    """Found by an audit: a caller's deadline that cancelled `close` while it spooled the batches
    its workers gave back lost the batches after the one being written, counted nowhere. The one
    being written ends spooled, or (its write failed) dropped: once, never both, never neither."""
    if write_fails:

        def full(spool: Spool, entry: Any, body: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(Spool, "write", full)
    gate = Gate(monkeypatch, "write")
    spooled = 0 if write_fails else 1000

    async def main() -> None:
        sink = sink_for(tmp_path, Cluster("hang"))  # three requests in flight, never answered
        await sink.start()
        for batch in documents(3):
            await sink.write(batch)
        with caplog.at_level(logging.ERROR, logger="flowd.output.elasticsearch"):
            await gate.cancel_inside(asyncio.create_task(sink.close(timeout_s=1.0)))
        assert sink.stats["docs_dropped"] == 3000 - spooled
        assert reported(sink) == on_disk(tmp_path) == (spooled // 1000, on_disk(tmp_path)[1], spooled)
        assert sink.stats["buffered_docs"] == 0 and sink.stats["in_flight"] == 0
        assert [r.getMessage() for r in caplog.records if "close cancelled" in r.getMessage()] == [
            f"elasticsearch sink: close cancelled before it spooled {3000 - spooled} documents "
            f"({3 - spooled // 1000} batches): lost"
        ]

    asyncio.run(main())
    cluster = Cluster()
    asyncio.run(replay_into(tmp_path, cluster))
    assert len(cluster.ids) == spooled


def test_a_close_cancelled_before_it_spools_counts_what_memory_and_requests_held(tmp_path: Path) -> None:
    """Cancelled while it still waits for the cluster, the close stops its workers: the batches of
    their requests and of memory are counted dropped, and nothing is left held by a closed sink."""

    async def main() -> None:
        sink = sink_for(tmp_path, Cluster("hang"))
        await sink.start()
        for batch in documents(3):
            await sink.write(batch)
        await sink.write([{"n": 10_000, "pad": "x"}])  # not yet a whole batch
        close = asyncio.create_task(sink.close(timeout_s=30.0))
        await asyncio.sleep(0)  # the close starts: it waits for the cluster until 27 s from now
        close.cancel()
        await asyncio.gather(close, return_exceptions=True)
        stats = sink.stats
        assert stats["docs_dropped"] == 3001 and stats["buffered_docs"] == 0 and stats["in_flight"] == 0
        assert all(task.done() for task in sink._tasks)

    asyncio.run(main())
    assert on_disk(tmp_path) == (0, 0, 0)


def test_a_split_cancelled_while_its_file_is_deleted_leaves_the_halves_in_memory(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A replayed batch answered 413 goes to memory as two halves once its file is gone; a cancel
    that comes while the file is deleted must not leave the documents neither in memory nor spooled."""
    spool_and_stop(tmp_path, 1)  # one batch of about 70 KB
    gate = Gate(monkeypatch, "delete")

    async def main() -> None:
        sink = sink_for(tmp_path, Cluster(max_body=50_000))
        await sink.start()
        await gate.cancel_inside(*sink._tasks)
        assert reported(sink) == on_disk(tmp_path) == (0, 0, 0)
        assert sink.stats["buffered_docs"] == 1000 and sink.stats["buffered_batches"] == 2
        await sink.close(timeout_s=1.0)
        assert reported(sink) == on_disk(tmp_path) == (2, on_disk(tmp_path)[1], 1000)

    asyncio.run(main())
    cluster = Cluster()
    stats = asyncio.run(replay_into(tmp_path, cluster))
    assert len(cluster.ids) == 1000 and stats["docs_duplicate"] == 0


@pytest.mark.parametrize("spooled", [False, True], ids=["from-memory", "replayed"])
def test_a_worker_cancelled_while_it_settles_an_answer_is_done_with_the_batch(
    tmp_path: Path, monkeypatch: Any, spooled: bool
) -> None:
    """Found by an audit: the cluster answered a batch (998 created, 2 refused for their content)
    and the worker was cancelled (the close's deadline) while it appended the two to the
    dead-letter file. The 998 were counted indexed, then the cancel gave the batch back: spooled,
    replayed, the 998 counted again as 409 duplicates and the two dead-lettered a second time. Now
    the cancel waits for the answer to be settled, and the batch is done with."""
    if spooled:
        spool_and_stop(tmp_path, 1)
    gate = Gate(monkeypatch, "append", DeadLetterFile)
    cluster = Rejecting({3, 500})

    async def main() -> None:
        sink = sink_for(tmp_path, cluster)
        await sink.start()
        if not spooled:
            await sink.write(documents(1)[0])
        await gate.cancel_inside(*sink._tasks)
        stats = sink.stats
        assert (stats["docs_indexed"], stats["docs_dead_lettered"], stats["dead_letters_unwritten"]) == (998, 2, 0)
        assert stats["buffered_docs"] == 0 and stats["in_flight"] == 0
        assert reported(sink) == on_disk(tmp_path) == (0, 0, 0)
        assert stats["docs_replayed"] == (1000 if spooled else 0)
        await sink.close(timeout_s=1.0)
        assert on_disk(tmp_path) == (0, 0, 0) and sink.stats["docs_dropped"] == 0

    asyncio.run(main())
    stats = asyncio.run(replay_into(tmp_path, cluster))
    assert cluster.requests == 1 and stats["docs_duplicate"] == 0
    assert len((tmp_path / "dead.ndjson").read_bytes().splitlines()) == 2
