"""The Elasticsearch sink when its own disk fails: the dead-letter file or a spool file cannot be
written, read or deleted (EIO, ENOSPC, EACCES). Found by an audit of the output path: such an
OSError went to the worker's "unexpected error" handler, which sent the batch again (counting its
dead letters twice), logged a traceback and backed off as if the cluster had failed; a shrunk
spooled batch whose original file could not be deleted stayed on disk twice."""

from __future__ import annotations

import asyncio
import errno
import logging
from pathlib import Path
from typing import Any

import orjson

from flowd.output.bulk import RetryPolicy
from flowd.output.elasticsearch import ElasticsearchSink
from tests.test_es_shutdown import Cluster, documents, sink_for

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

    def disk_full(self: ElasticsearchSink, lines: bytes) -> bool:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ElasticsearchSink, "_append_dead_letters", disk_full)

    async def main() -> dict[str, Any]:
        sink = sink_for(tmp_path, cluster, SLOW_RETRY)
        await sink.start()
        with caplog.at_level(logging.WARNING, logger="flowd.output.elasticsearch"):
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
