"""A check shared by the batch decoders' tests (`sflow_walk`, `decode_netflow_v5_batch`,
`decode_data_datagrams`): in the pipeline, decoding a batch's datagrams at once changes neither
the documents, the options documents nor the counters."""

from __future__ import annotations

from typing import Any

import pytest

from flowd.decode import TemplateCache
from flowd.decode.batch import RecordBatch
from flowd.server import batch_decoder
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.metrics import WorkerStats


def _one_at_a_time(
    items: Any, templates: TemplateCache, decode_other: Any, counted: Any = None
) -> tuple[list[RecordBatch], Any]:
    """`decode_data_datagrams` taking nothing: every datagram goes to `decode_datagram`."""
    for index in range(len(items)):
        decode_other(index)
    return [], {}


def _unordered(decoder: BatchDecoder, batch: list[Any]) -> list[str]:
    """Documents in a comparable order; repr, since a hostile counter may not fit JSON's integers."""
    return sorted(repr(sorted(document.items())) for document in decoder.decode(batch))


def assert_batch_paths_change_nothing(
    patcher: pytest.MonkeyPatch, batch: list[Any]
) -> tuple[BatchDecoder, BatchDecoder, list[str]]:
    """The pipeline's decoder with its batch paths (v5, sFlow walk, v9/IPFIX data sets) gives the
    documents, options and counters it gives decoding each datagram alone; returns both decoders
    and the options."""
    at_once = BatchDecoder(TemplateCache(), WorkerStats())
    documents = _unordered(at_once, batch)
    patcher.setattr(batch_decoder, "decode_data_datagrams", _one_at_a_time)
    patcher.setattr(batch_decoder, "MIN_WALKED_DATAGRAMS", len(batch) + 1)
    alone = BatchDecoder(TemplateCache(), WorkerStats())
    assert documents == _unordered(alone, batch)
    assert at_once.stats.counters == alone.stats.counters
    options = [repr(sorted(d.items())) for d in at_once.take_options()]
    assert options == [repr(sorted(d.items())) for d in alone.take_options()]
    return at_once, alone, options


def assert_at_once_equals_per_datagram(
    monkeypatch: pytest.MonkeyPatch, batch: list[Any], function: str, rows: int
) -> tuple[BatchDecoder, BatchDecoder]:
    """`assert_batch_paths_change_nothing`, where the batch decoder `batch_decoder.<function>` decodes
    `rows` records of `batch` at once; returns both decoders."""
    decoded: list[int] = []
    original = getattr(batch_decoder, function)

    def spy(*args: Any) -> Any:
        parts, left = original(*args)
        decoded.append(sum(len(part) for part in parts) if isinstance(parts, list) else len(parts or ()))
        return parts, left

    monkeypatch.setattr(batch_decoder, function, spy)
    at_once, alone, _ = assert_batch_paths_change_nothing(monkeypatch, batch)
    assert decoded == [rows]
    return at_once, alone
