"""A vectorised decode path that raises costs throughput, not documents, and says so: the records
go the per-record way, `flowd_fast_path_fallbacks{path}` counts it, and the log names the error."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import pytest

from benchmarks.test_bench_enrich import build_datagrams
from flowd.capture import read_datagrams
from flowd.decode import TemplateCache
from flowd.server import batch_decoder
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.metrics import WorkerStats
from tests.corpus_units import UNITS, unit_datagrams
from tests.shared_data import CORPUS

SFLOW_CAPTURE = CORPUS / "ndpi" / "sflow.pcap"


def v5_batch() -> list[Any]:
    received = time.time()
    return [(datagram, ("192.0.2.1", 2055), received) for datagram in build_datagrams()[:40]]


def sflow_batch() -> list[Any]:
    return [(d.payload, d.source, 1.7e9) for d in read_datagrams(SFLOW_CAPTURE)]


def v9_batch() -> list[Any]:
    """Every v9 unit of the corpus, each from its own exporter (their template ids collide)."""
    batch = []
    for number, unit in enumerate(u for u in UNITS if u.protocol == "v9"):
        batch.extend((d.payload, (f"192.0.2.{number + 1}", 2055), 1.7e9) for d in unit_datagrams(unit, split=True))
    return batch


def documents(batch: list[Any]) -> list[str]:
    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    return sorted(repr(sorted(document.items())) for document in decoder.decode(batch))


def broken(*args: Any, **kwargs: Any) -> Any:
    raise ZeroDivisionError("a bug in the vectorised path")


@pytest.mark.parametrize(
    ("function", "path", "make_batch"),
    [
        ("decode_netflow_v5_batch", "netflow_v5_batch", v5_batch),
        ("walk_sflow_datagrams", "sflow_walk", sflow_batch),
        ("batch_table", "netflow_table", v5_batch),
        ("decode_data_datagrams", "data_sets", v9_batch),
        ("sample_batch_tables", "sflow_samples", sflow_batch),
        ("sflow_tables", "sflow_tables", sflow_batch),
    ],
)
def test_a_fast_path_that_raises_loses_nothing_and_is_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, function: str, path: str, make_batch: Any
) -> None:
    batch = make_batch()
    expected = documents(batch)
    assert expected, "the capture decodes to documents"
    monkeypatch.setattr(batch_decoder, function, broken)
    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    with caplog.at_level(logging.WARNING):
        got = sorted(repr(sorted(document.items())) for document in decoder.decode(batch))
    assert got == expected
    assert decoder.stats.counters["flowd_fast_path_fallbacks"] == {(path,): 1}
    assert any(path in line and "ZeroDivisionError: a bug in the vectorised path" in line for line in caplog.messages)


def test_every_path_counted_is_in_the_readme() -> None:
    from flowd.server.fallbacks import PATHS
    from tests.test_readme import README

    section = README[README.index("**Fast paths that fail.**") :]
    section = section[: section.index("\n\n")]
    assert re.findall(r"`([a-z_0-9]+)`", section.split("counts each time", 1)[1]) == list(PATHS)
