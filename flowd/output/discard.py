"""A sink that builds every `_bulk` request body as the Elasticsearch sink does, then drops it.

For measuring a collector without its storage (Vector's `blackhole` sink has the same use), so a
benchmark can tell flowd's own work from the writing of its output: `flowd bench --sink discard`.
Documents are counted, never kept: `flowd run` logs a warning when this output is configured.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.config import ElasticsearchSettings
from flowd.output.bulk import Batch, BatchBuilder, BulkEncoder
from flowd.output.sink import Body, row_bytes


class DiscardSink:
    """`_bulk` action lines and request bodies cut at the Elasticsearch sink's limits, then dropped."""

    def __init__(self, settings: ElasticsearchSettings | None = None) -> None:
        settings = settings if settings is not None else ElasticsearchSettings()
        self.encoder = BulkEncoder(document_ids=True)
        self.builder = BatchBuilder(settings.batch_docs, settings.batch_bytes, time.monotonic)
        self.documents_written = 0
        self.bodies = 0
        self.body_bytes = 0

    def describe(self) -> str:
        return "nowhere: bulk bodies are built and dropped (output.discard)"

    async def start(self) -> None:
        return None

    async def write(self, documents: list[dict[str, Any]]) -> None:
        pairs, rejected = self.encoder.encode(documents)
        self.documents_written += len(documents) - len(rejected)
        self._drop(self.builder.add(pairs))

    def action_lines(self, count: int) -> npt.NDArray[np.uint8]:
        return self.encoder.action_lines(count)

    async def write_encoded(self, body: Body, count: int) -> None:
        """`count` documents serialised as `_bulk` pairs, each after its line from `action_lines`."""
        self.documents_written += count
        self._drop(self.builder.add_body(body, count, row_bytes(body, count)))

    def _drop(self, batches: list[Batch]) -> None:
        self.bodies += len(batches)
        self.body_bytes += sum(len(batch.body) for batch in batches)

    async def flush(self) -> None:
        last = self.builder.cut()
        self._drop([] if last is None else [last])

    async def close(self, timeout_s: float | None = None) -> None:
        await self.flush()
