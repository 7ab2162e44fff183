"""Decoding throughput: flowd against the `netflow` PyPI package on the same bytes, same run.

Each benchmark decodes a list of data datagrams (templates learned beforehand) and records
flows per second per core in `extra_info`; the peer's figure is measured in the same session so
the ratio is what to read, not the absolute numbers. `flows_per_s` counts records returned by
`decode_datagram` (fixed-length sets stay columnar until read); the `documents` benchmark
turns every record into its index document as a dict and serialises it (`flowd decode`'s path),
the `ndjson` one writes the same documents straight from the columns (`flowd run`'s path).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import netflow
import orjson
import pytest

from benchmarks import traffic
from flowd.decode import TemplateCache, decode_datagram
from flowd.decode.batch import RecordBatch, merge_batches
from flowd.model import FlowList
from flowd.output.batch_documents import batch_table, documents_for

EXPORTER = ("192.0.2.1", 2055)
BUILDERS: dict[str, Callable[[], tuple[list[bytes], list[bytes]]]] = {
    "v5": traffic.netflow_v5,
    "v9": traffic.netflow_v9,
    "ipfix": traffic.ipfix,
}
PEER_RATES: dict[str, float] = {}
RECEIVE_BATCH = 64


def _primed(templates: list[bytes]) -> TemplateCache:
    cache = TemplateCache()
    for datagram in templates:
        decode_datagram(datagram, EXPORTER, cache, 0.0)
    return cache


def _flows_per_s(benchmark: Any, flows_per_round: int) -> float:
    if benchmark.stats is None:  # --benchmark-disable: the body ran once, untimed
        return 0.0
    return flows_per_round / benchmark.stats.stats.mean


def _report(benchmark: Any, protocol: str, flows: int, key: str) -> None:
    """Our rate under `key`, beside the `netflow` package's on the same datagrams."""
    ours = _flows_per_s(benchmark, flows)
    peer = _peer_rate(protocol)
    benchmark.extra_info.update(
        {key: round(ours), "netflow_pkg_flows_per_s": round(peer), "ratio_vs_netflow_pkg": round(ours / peer, 1)}
    )


def _peer_rate(protocol: str) -> float:
    """The netflow package's flows/s on the same datagrams (measured once per session)."""
    if protocol not in PEER_RATES:
        templates, data = BUILDERS[protocol]()
        state: dict[str, Any] = {"netflow": {}, "ipfix": {}}
        for datagram in templates:
            netflow.parse_packet(datagram, state)
        flows = 0
        started = time.perf_counter()
        rounds = 0
        while time.perf_counter() - started < 1.0 or rounds < 3:
            for datagram in data:
                flows += len(netflow.parse_packet(datagram, state).flows)
            rounds += 1
        PEER_RATES[protocol] = flows / (time.perf_counter() - started)
    return PEER_RATES[protocol]


@pytest.mark.parametrize("protocol", ["v5", "v9", "ipfix"])
def test_decode(benchmark: Any, protocol: str) -> None:
    templates, data = BUILDERS[protocol]()
    cache = _primed(templates)

    def decode_all() -> int:
        return sum(len(decode_datagram(datagram, EXPORTER, cache, 1.0).flows) for datagram in data)

    _report(benchmark, protocol, benchmark(decode_all), "flows_per_s")


@pytest.mark.parametrize("protocol", ["v5", "v9", "ipfix"])
def test_decode_to_documents(benchmark: Any, protocol: str) -> None:
    templates, data = BUILDERS[protocol]()
    cache = _primed(templates)

    def decode_and_serialise() -> int:
        count = 0
        for datagram in data:
            documents = documents_for(decode_datagram(datagram, EXPORTER, cache, 1.0).flows)
            orjson.dumps(documents)
            count += len(documents)
        return count

    _report(benchmark, protocol, benchmark(decode_and_serialise), "documents_per_s")


@pytest.mark.parametrize("protocol", ["v5", "v9", "ipfix"])
def test_decode_to_ndjson_from_columns(benchmark: Any, protocol: str) -> None:
    """What `flowd run` does: a receive batch of 64 datagrams, one table per template layout,
    NDJSON written straight from its columns (no dict per flow)."""
    templates, data = BUILDERS[protocol]()
    cache = _primed(templates)

    def decode_and_write() -> int:
        count = 0
        for start in range(0, len(data), RECEIVE_BATCH):
            flows = FlowList()
            for datagram in data[start : start + RECEIVE_BATCH]:
                for part in decode_datagram(datagram, EXPORTER, cache, 1.0).flows.parts:
                    flows.add_batch(part)
            for part in merge_batches(flows.parts):
                assert isinstance(part, RecordBatch)
                count += batch_table(part).to_ndjson().count(b"\n")
        return count

    _report(benchmark, protocol, benchmark(decode_and_write), "documents_per_s")
