"""A check shared by the batch decoders' tests (`sflow_walk`, `decode_netflow_v5_batch`): in the
pipeline, decoding a batch's datagrams at once changes neither the documents nor the counters."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from flowd.decode import TemplateCache
from flowd.server import pipeline
from flowd.server.metrics import WorkerStats
from flowd.server.pipeline import BatchDecoder


def _documents(decoder: BatchDecoder, batch: list[Any]) -> list[bytes]:
    return sorted(orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in decoder.decode(batch))


def assert_at_once_equals_per_datagram(
    monkeypatch: pytest.MonkeyPatch, batch: list[Any], function: str, rows: int
) -> tuple[BatchDecoder, BatchDecoder]:
    """`BatchDecoder` with the batch decoder `pipeline.<function>` (which must decode `rows`
    records of `batch` at once) gives the documents and counters it gives without batch decoding;
    returns both decoders."""
    decoded: list[int] = []
    original = getattr(pipeline, function)

    def spy(*args: Any) -> Any:
        parts, left = original(*args)
        decoded.append(sum(len(part) for part in parts) if isinstance(parts, list) else len(parts or ()))
        return parts, left

    monkeypatch.setattr(pipeline, function, spy)
    at_once = BatchDecoder(TemplateCache(), WorkerStats())
    documents = _documents(at_once, batch)
    assert decoded == [rows]
    monkeypatch.setattr(pipeline, "MIN_WALKED_DATAGRAMS", len(batch) + 1)
    per_datagram = BatchDecoder(TemplateCache(), WorkerStats())
    assert documents == _documents(per_datagram, batch)
    assert at_once.stats.counters == per_datagram.stats.counters
    return at_once, per_datagram
