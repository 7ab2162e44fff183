"""The Elasticsearch sink when its own disk fails: the dead-letter file or a spool file cannot be
written, read or deleted (EIO, ENOSPC, EACCES). Found by an audit of the output path: such an
OSError went to the worker's "unexpected error" handler, which sent the batch again (counting its
dead letters twice), logged a traceback and backed off as if the cluster had failed; a shrunk
spooled batch whose original file could not be deleted stayed on disk twice."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from flowd.output.bulk import RetryPolicy, dead_letter_line
from flowd.output.dead_letters import DeadLetterFile
from flowd.output.elasticsearch import ElasticsearchSink
from flowd.output.es_stats import SinkStats
from flowd.output.spool import Spool
from tests.test_es_shutdown import Cluster, documents, replay_into, sink_for
from tests.test_es_spool_faults import spool_and_stop

SLOW_RETRY = RetryPolicy(initial_s=60.0, cap_s=60.0, jitter=0.0)
"""A retry a minute away: a test sees what the first attempt left."""


class Rejecting(Cluster):
    """Answers documents numbered in `reject` 400 (a mapping error), the rest as `Cluster` does."""

    def __init__(self, reject: set[int]) -> None:
        super().__init__()
        self.reject = reject

    async def perform_request(self, method: str, target: str, *, body: Any = None, **kwargs: Any) -> Any:
        response = await super().perform_request(method, target, body=body, **kwargs)
        numbers = [orjson.loads(line)["n"] for line in bytes(body).split(b"\n")[1::2] if line]
        for position, number in enumerate(numbers):
            if number in self.reject:
                error = {"type": "mapper_parsing_exception", "reason": "failed to parse field [n]"}
                response.body["items"][position] = {"create": {"status": 400, "error": error}}
                response.body["errors"] = True
        return response


async def settled(sink: ElasticsearchSink, cluster: Cluster, requests: int) -> None:
    """Returns once the cluster has answered `requests` requests and no worker holds a batch."""
    async with sink._cond:
        await sink._cond.wait_for(lambda: cluster.requests >= requests and sink.stats["in_flight"] == 0)


def test_a_dead_letter_file_that_cannot_be_written_counts_its_documents_once_as_unwritten(
    tmp_path: Path, monkeypatch: Any, caplog: Any
) -> None:
    """Two documents of a batch are refused for their content; appending them to the dead-letter
    file fails (disk full). They were counted dead-lettered, then the batch went back for another
    attempt: the 998 others were sent again, the two refused and counted again, and so on. The
    cluster's answer stands now: the two are dead-lettered once, as not written, and nothing is
    sent again."""
    cluster = Rejecting({3, 500})

    def disk_full(self: DeadLetterFile, lines: bytes) -> bool:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DeadLetterFile, "append", disk_full)

    async def main() -> dict[str, Any]:
        sink = sink_for(tmp_path, cluster, SLOW_RETRY)
        await sink.start()
        with caplog.at_level(logging.WARNING, logger="flowd.output"):
            await sink.write(documents(1)[0])
            await settled(sink, cluster, 1)
        stats = sink.stats
        assert (stats["docs_dead_lettered"], stats["dead_letters_unwritten"]) == (2, 2)
        assert (stats["docs_indexed"], stats["buffered_docs"], stats["retries"]) == (998, 0, 0)
        await sink.close(timeout_s=1.0)
        return sink.stats

    stats = asyncio.run(main())
    assert cluster.requests == 1 and stats["docs_spooled"] == 0 and stats["docs_dead_lettered"] == 2
    assert not [r for r in caplog.records if r.exc_info]  # no "unexpected error" traceback
    (line,) = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert "No space left on device" in line


def spool_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spool").glob("*.ndjson"))


def test_a_delivered_spooled_batch_whose_file_cannot_be_deleted_is_done_with_all_the_same(
    tmp_path: Path, monkeypatch: Any, caplog: Any
) -> None:
    """The cluster takes two replayed batches; their files cannot be deleted (a read-only disk).
    Each went back to the spool queue and was sent again, answered 409, forever, with a traceback
    each time, and the sink backed off as from an outage, spooling new batches instead of sending
    them. Now each is delivered once and kept as a leftover file, counted in the spool's bytes
    only, and deleted once the disk lets it be; new batches go to the cluster meanwhile."""
    spool_and_stop(tmp_path, 2)
    cluster = Cluster()
    threads: set[str] = set()
    for name in ("keep_leftover", "forget"):
        real = getattr(Spool, name)

        def recorded(self: Spool, *args: Any, _real: Any = real) -> Any:
            threads.add(threading.current_thread().name)
            return _real(self, *args)

        monkeypatch.setattr(Spool, name, recorded)
    real_delete = Spool.delete
    read_only = [True]

    def delete(self: Spool, entry: Any) -> None:
        if read_only[0]:
            raise OSError(errno.EROFS, "Read-only file system")
        real_delete(self, entry)

    monkeypatch.setattr(Spool, "delete", delete)

    async def main() -> dict[str, Any]:
        sink = sink_for(tmp_path, cluster)
        with caplog.at_level(logging.WARNING, logger="flowd.output"):
            await sink.start()
            await settled(sink, cluster, 2)
            stats = sink.stats
            assert (stats["docs_indexed"], stats["docs_duplicate"], stats["docs_replayed"]) == (2000, 0, 2000)
            assert (stats["retries"], stats["outages"], stats["spool_docs"], stats["spool_batches"]) == (0, 0, 0, 0)
            assert stats["spool_bytes"] == sum(f.stat().st_size for f in spool_files(tmp_path)) > 0
            await sink.write(documents(3)[2])  # a new batch: to the cluster, not the spool
            await sink.flush()
            assert (sink.stats["docs_indexed"], sink.stats["docs_spooled"]) == (3000, 0)
            read_only[0] = False  # the disk is writable again: the close deletes what was left
            await sink.close()
        return sink.stats

    stats = asyncio.run(main())
    assert cluster.requests == 3 and stats["docs_duplicate"] == 0
    assert stats["spool_bytes"] == 0 and not spool_files(tmp_path)
    assert threads == {threading.main_thread().name}
    assert not [r for r in caplog.records if r.exc_info]
    (line,) = [r.getMessage() for r in caplog.records if "cannot delete" in r.getMessage()]  # once, not per batch
    assert "Read-only file system" in line


def test_a_spooled_batch_that_cannot_be_read_waits_for_the_disk_not_for_the_cluster(
    tmp_path: Path, monkeypatch: Any, caplog: Any
) -> None:
    """Reading a spooled batch fails (EIO): it stays spooled, to be read again after the disk's
    back-off, and documents in memory are still sent; it used to set the sink backing off as
    if the cluster had failed, with a traceback."""
    spool_and_stop(tmp_path, 1)
    cluster = Cluster()
    real_read = Spool.read
    failing = [True]

    def read(self: Spool, entry: Any) -> bytes:
        if failing[0]:
            failing[0] = False
            raise OSError(errno.EIO, "Input/output error")
        return real_read(self, entry)

    monkeypatch.setattr(Spool, "read", read)

    async def main() -> None:
        sink = sink_for(tmp_path, cluster, SLOW_RETRY)  # the disk's back-off is a minute too
        with caplog.at_level(logging.WARNING, logger="flowd.output"):
            await sink.start()
            async with sink._cond:
                await sink._cond.wait_for(lambda: not failing[0] and sink.stats["in_flight"] == 0)
            assert (sink.stats["retries"], sink.stats["spool_docs"]) == (0, 1000)
            await sink.write(documents(2)[1])
            await sink.flush()
            assert (sink.stats["docs_indexed"], sink.stats["spool_docs"]) == (1000, 1000)
            await sink.close(timeout_s=1.0)
        assert sink.stats["spool_docs"] == 1000 and len(spool_files(tmp_path)) == 1

    asyncio.run(main())
    assert not [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()] != []
    stats = asyncio.run(replay_into(tmp_path, cluster))
    assert len(cluster.ids) == 2000 and stats["docs_replayed"] == 1000 and not spool_files(tmp_path)


@pytest.mark.parametrize("refusals", [1, 2])
def test_a_shrunk_spooled_batch_leaves_one_file_when_the_original_cannot_be_deleted(
    tmp_path: Path, monkeypatch: Any, refusals: int
) -> None:
    """A hundred documents of a replayed batch are answered 429: those hundred are written to a
    smaller file, and the original deleted. That delete failed, and
    both files stayed: the smaller one, unknown to the sink, was replayed at every start. Now the
    smaller file is deleted again and the original sent again, whole; when that delete fails too
    (`refusals` 2), the smaller file is kept as a leftover, deleted once the disk lets it."""
    spool_and_stop(tmp_path, 1)
    (original,) = spool_files(tmp_path)
    cluster = Cluster()
    cluster.retry_once = set(range(0, 1000, 10))
    real_unlink = Path.unlink
    refused: list[str] = []

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.suffix == ".ndjson" and len(refused) < refusals:
            refused.append(self.name)
            raise OSError(errno.EIO, "Input/output error")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    stats = asyncio.run(replay_into(tmp_path, cluster))
    assert refused[0] == original.name and len(refused) == refusals
    assert len(cluster.ids) == 1000 and stats["docs_indexed"] == 1000
    assert stats["spool_bytes"] == 0 and stats["docs_replayed"] == 1000
    assert not spool_files(tmp_path)  # nothing for the next start to send again


def dead_letters(first: int, count: int) -> bytes:
    error = {"type": "mapper_parsing_exception", "reason": "failed to parse field [n]"}
    return b"".join(
        dead_letter_line(orjson.dumps({"n": n}), 400, error, "2024-05-01T00:00:00Z")
        for n in range(first, first + count)
    )


def dead_lettered_numbers(path: Path) -> list[int]:
    """The documents in the dead-letter file, line by line (a line that is not JSON fails here)."""
    return [orjson.loads(line)["document"]["n"] for line in path.read_bytes().splitlines()]


def test_a_dead_letter_append_cut_short_by_a_full_disk_leaves_no_half_line(tmp_path: Path) -> None:
    """Found by an audit: the disk filled in the middle of an append (the kernel writes what fits,
    then fails the rest, as RLIMIT_FSIZE makes it here). The half line stayed, and the next append
    ran into it: two records lost to one unreadable line. Now the append is taken back whole."""
    path = tmp_path / "dead.ndjson"
    file = DeadLetterFile(path, 1 << 20, SinkStats(), lambda: 0.0)
    assert file.append(dead_letters(0, 10))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 100, hard))  # the disk fills mid-append
        with pytest.raises(OSError):
            file.append(dead_letters(10, 10))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert file.append(dead_letters(20, 10))
    assert dead_lettered_numbers(path) == [*range(10), *range(20, 30)]


def test_a_dead_letter_file_left_mid_line_keeps_the_next_record_whole(tmp_path: Path) -> None:
    """A run killed in the middle of an append (or a half line that could not be taken back)
    leaves the file mid-line: the next append starts on a line of its own."""
    path = tmp_path / "dead.ndjson"
    path.write_bytes(dead_letters(0, 2) + dead_letters(2, 1)[:30])
    assert DeadLetterFile(path, 1 << 20, SinkStats(), lambda: 0.0).append(dead_letters(3, 2))
    lines = path.read_bytes().splitlines()
    assert lines[2] == dead_letters(2, 1)[:30]
    del lines[2]
    assert [orjson.loads(line)["document"]["n"] for line in lines] == [0, 1, 3, 4]


def test_spool_writes_refused_through_an_outage_are_logged_once_a_minute(
    tmp_path: Path, monkeypatch: Any, caplog: Any
) -> None:
    """Found by an audit: with the disk full, every batch memory had to give up to the spool logged
    its failed write, one error line per batch for as long as the outage lasted. Now the lines go
    through the spool's `DiskErrors`, as its other file errors do: one a minute, saying how many
    it held back; each batch stays in memory (dropped at close, counted) and nothing is spooled."""

    def disk_full(self: Spool, entry: Any, body: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Spool, "write", disk_full)
    skew = [0.0]

    async def main() -> dict[str, Any]:
        sink = sink_for(tmp_path, Cluster("hang"), memory_buffer_bytes=1, clock=lambda: time.monotonic() + skew[0])
        await sink.start()
        batches = documents(16)
        for batch in batches[:4]:  # one request each for the four workers, never answered
            await sink.write(batch)
        async with sink._cond:
            await sink._cond.wait_for(lambda: sink.stats["in_flight"] == 4)
        await sink.begin_shutdown(0.0)  # from now on memory gives its oldest batch to the spool
        with caplog.at_level(logging.ERROR, logger="flowd.output"):
            for batch in batches[4:15]:  # each but the first tries to spool one batch: 10 refused
                await sink.write(batch)
            skew[0] = 61.0
            await sink.write(batches[15])  # the 11th, a minute later
            assert sink.stats["buffered_docs"] == 16_000
            await sink.close(timeout_s=1.0)  # the close's tries fall within that minute
        return sink.stats

    stats = asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if "spool: cannot write" in r.getMessage()]
    assert len(lines) == 2 and all("No space left on device" in line for line in lines)
    assert "more such errors" not in lines[0] and "(9 more such errors since the last line)" in lines[1]
    assert not [r for r in caplog.records if "spool write" in r.getMessage()]
    assert (stats["docs_dropped"], stats["docs_spooled"], stats["batches_spooled"]) == (16_000, 0, 0)
    assert (stats["spool_bytes"], stats["spool_batches"]) == (0, 0) and not spool_files(tmp_path)


def test_a_dead_letter_lock_held_elsewhere_fails_the_append_in_time(tmp_path: Path, monkeypatch: Any) -> None:
    """Found by a review: a worker's cancel waits for its settle, and the settle's dead-letter
    append waited for the file's lock without a limit; a program holding it held the stop. Past
    `LOCK_WAIT_S` the append fails (the documents then count as unwritten) and writes nothing."""
    import fcntl
    import os

    from flowd.output import dead_letters as dead_letter_module

    monkeypatch.setattr(dead_letter_module, "LOCK_WAIT_S", 0.2, raising=False)
    path = tmp_path / "dead.ndjson"
    file = DeadLetterFile(path, 1 << 20, SinkStats(), lambda: 0.0)
    first = dead_letters(0, 2)
    assert file.append(first)
    holder = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another open file description: it excludes ours
        outcome: list[Any] = []
        thread = threading.Thread(target=lambda: outcome.append(_append_or_error(file, dead_letters(2, 1))))
        thread.start()
        thread.join(timeout=5)
        assert not thread.is_alive(), "the append waited for the lock without a limit"
        assert isinstance(outcome[0], OSError)
    finally:
        os.close(holder)
    assert path.read_bytes() == first
    assert file.append(dead_letters(2, 1))  # the lock free again: appended


def _append_or_error(file: DeadLetterFile, lines: bytes) -> Any:
    try:
        return file.append(lines)
    except OSError as error:
        return error


def test_an_unexpected_error_after_the_answer_does_not_send_the_batch_again(
    tmp_path: Path, monkeypatch: Any, caplog: Any
) -> None:
    """Found by a review: a bug raising while the cluster's answer was handled (after the batch's
    documents were counted indexed) gave the batch back; it was sent again, answered 409, and
    counted a second time. Once answered, the batch is done with; the error is logged."""
    cluster = Cluster()
    raised: list[bool] = []
    real = ElasticsearchSink._succeeded

    async def once_broken(self: ElasticsearchSink, entry: Any) -> None:
        await real(self, entry)
        if not raised:
            raised.append(True)
            raise RuntimeError("a bug after the count")

    monkeypatch.setattr(ElasticsearchSink, "_succeeded", once_broken)

    async def main() -> dict[str, Any]:
        sink = sink_for(tmp_path, cluster)
        await sink.start()
        await sink.write(documents(1)[0])
        await sink.flush()
        await asyncio.sleep(0.5)  # a batch given back would be sent again within the back-off
        await sink.close(timeout_s=2.0)
        return sink.stats

    with caplog.at_level(logging.ERROR, logger="flowd.output"):
        stats = asyncio.run(main())
    assert raised and len(cluster.ids) == 1000
    assert (stats["docs_indexed"], stats["docs_duplicate"], stats["spool_docs"]) == (1000, 0, 0)
    assert any("handling the cluster's answer" in line for line in caplog.messages)
