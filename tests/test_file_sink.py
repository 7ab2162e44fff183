"""The NDJSON file sink when the disk refuses: a body goes in whole or not at all, and a file that
cannot be opened leaves the sink writing to the one it had. Found by an audit of the output path.

A full disk is the kernel's own: RLIMIT_FSIZE cuts a write short and then fails it (EFBIG), as
ENOSPC does; the pipeline retries the whole body, as it does for any sink error."""

from __future__ import annotations

import asyncio
import errno
import resource
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from flowd.output.files import NdjsonFileSink
from flowd.server.ingress import IngressQueue
from flowd.server.metrics import WorkerStats
from flowd.server.pipeline import Pipeline


def lines_in(directory: Path) -> list[bytes]:
    return b"".join(p.read_bytes() for p in sorted(directory.glob("flows-*"))).splitlines()


def test_a_write_cut_short_by_a_full_disk_leaves_no_duplicate_nor_half_line(tmp_path: Path) -> None:
    documents = 40_000
    body = b"".join(orjson.dumps({"n": n, "pad": "x" * 60}) + b"\n" for n in range(documents))  # ~3.5 MB
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    async def main() -> None:
        sink = NdjsonFileSink(tmp_path)
        await sink.start()
        pipeline = Pipeline(IngressQueue(1, 10), decoder=None, sink=sink, stats=WorkerStats())  # type: ignore[arg-type]
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_001, hard))  # the disk fills mid-body

        async def space_comes_back() -> None:
            await asyncio.sleep(0.3)
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

        freeing = asyncio.create_task(space_comes_back())
        await pipeline._deliver(lambda: sink.write_encoded(memoryview(body), documents), documents)
        await freeing
        await sink.close()

    try:
        asyncio.run(main())
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    seen = Counter(orjson.loads(line)["n"] for line in lines_in(tmp_path))
    assert len(seen) == documents and set(seen.values()) == {1}


def test_a_file_that_cannot_be_opened_at_rotation_leaves_the_old_one_in_use(tmp_path: Path, monkeypatch: Any) -> None:
    real_open = Path.open
    refusals = [1]

    def open_once_refused(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode == "xb" and any(tmp_path.glob("flows-*")) and refusals[0]:
            refusals[0] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_once_refused)
    stats = WorkerStats()

    async def main() -> None:
        sink = NdjsonFileSink(tmp_path, rotate_bytes=200, clock=lambda: 0.0)
        await sink.start()
        pipeline = Pipeline(IngressQueue(1, 10), decoder=None, sink=sink, stats=stats)  # type: ignore[arg-type]
        for batch in range(6):
            documents = [{"n": batch * 10 + k, "pad": "x" * 20} for k in range(3)]
            await pipeline._deliver(lambda d=documents: sink.write(d), len(documents))  # type: ignore[misc]
        await sink.close()

    asyncio.run(main())
    numbers = sorted(orjson.loads(line)["n"] for line in lines_in(tmp_path))
    assert numbers == [batch * 10 + k for batch in range(6) for k in range(3)]
    assert not stats.counters.get("flowd_sink_rejected_documents")
