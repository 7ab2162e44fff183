"""The interface every output implements: the pipeline hands it batches of documents."""

from __future__ import annotations

from typing import Any, Protocol

Body = bytes | memoryview
"""NDJSON handed to `write_encoded`: a view of the array a table was laid out in (one byte per
element), which a sink writes, joins into its request bodies, or sends as one (a bulk batch cut
from one table is a view of it). The array is never reused, so a view may outlive the write; the
bulk builder copies a short tail left in its open batch, and the Elasticsearch sink copies the
batches that wait out failures, so that a table's whole array is not kept alive for them. Every
document in it (with its action line, when the sink gave them) is padded to one length, so a
sink can cut it at multiples of `row_bytes(body, count)` without looking for line ends."""


def row_bytes(body: Body, count: int) -> int:
    """The length of each of the `count` documents of a `Body` (they are padded to one)."""
    return len(body) // max(count, 1)


class Sink(Protocol):
    """An output stage. `write` may await to apply backpressure; it never drops silently."""

    async def start(self) -> None: ...

    async def write(self, documents: list[dict[str, Any]]) -> None: ...

    # Optional: `async def write_encoded(self, body: Body, count: int) -> None` takes `count`
    # documents already serialised as NDJSON (`DocumentTable.to_ndjson_buffer`); the pipeline uses it
    # when a sink has it and hands dicts to `write` otherwise. A sink that also has
    # `def action_lines(self, count: int) -> uint8 matrix` gets each document after its row of
    # that matrix (the `_bulk` action lines), so the body is ready to send.

    async def flush(self) -> None:
        """Everything written so far is durable (indexed, spooled or on disk) when this returns."""
        ...

    async def close(self, timeout_s: float | None = None) -> None:
        """Flush and let go; `timeout_s` is what is left of the worker's shutdown grace (a sink
        that waits on a remote end must be done by then: the supervisor kills at its end)."""
        ...

    # Optional: `async def begin_shutdown(self, deliver_for_s: float) -> None`, called when the
    # worker starts to stop: documents may wait for a remote end that long, then go to local
    # storage (the Elasticsearch sink's spool) so the drain ends within the grace.
