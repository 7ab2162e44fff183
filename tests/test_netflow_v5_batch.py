"""NetFlow v5 datagrams decoded a receive batch at once (`decode_netflow_v5_batch`) against the
per-datagram decoder (`decode_netflow_v5`, itself checked against tshark over the corpus):

- the datagrams it takes are exactly those `decode_netflow_v5` reads with no error and at least
  one record, and for them it gives what that decoder gives once `merge_batches` has joined its
  batches: the same records, row headers, header extras and rates;
- in the pipeline, decoding at once changes neither the documents nor the counters.

Over the corpus's v5 captures, the benchmark traffic, and generated datagrams, some with a
header count that disagrees with their length.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowd.bench.traffic import build_traffic
from flowd.decode import TemplateCache
from flowd.decode.batch import RecordBatch, RowHeaders, merge_batches
from flowd.decode.netflow_v5 import decode_netflow_v5, decode_netflow_v5_batch
from flowd.errors import DecodeError
from tests.batch_decoding import assert_at_once_equals_per_datagram
from tests.corpus_units import UNITS, corpus_available, unit_datagrams

EXPORTERS = [("192.0.2.1", 2055), ("192.0.2.2", 9995)]
RECEIVED_AT = 1_764_072_000.5


def _clean(payload: bytes) -> bool:
    """Whether the per-datagram decoder reads it with no error and finds records."""
    try:
        result = decode_netflow_v5(payload, EXPORTERS[0], TemplateCache(), RECEIVED_AT)
    except DecodeError:
        return False
    return not result.errors and len(result.flows) > 0


def _state(batch: Any) -> tuple[Any, ...]:
    """What a batch holds; a batch of one datagram (which `merge_batches` leaves unjoined) with
    its header values as one run."""
    assert isinstance(batch, RecordBatch)
    headers = batch.row_headers or RowHeaders(
        [len(batch)],
        [batch.exporter],
        [batch.domain_id],
        [batch.template.template_id],
        [batch.export_time],
        [batch.uptime_ms],
        [batch.sequence],
        [batch.received_at],
    )
    return (
        batch.array.tobytes(),
        batch.array.dtype,
        headers,
        batch.extra,
        batch.rates,
        batch.kind,
        batch.version,
        batch.template.layout,
    )


def assert_batch_decode_agrees(payloads: list[bytes]) -> list[int]:
    """Returns the indices taken."""
    items = [(p, EXPORTERS[n % 2], RECEIVED_AT + n) for n, p in enumerate(payloads)]
    batches, left = decode_netflow_v5_batch(items)
    taken = [n for n in range(len(items)) if n not in set(left)]
    assert taken == [n for n, p in enumerate(payloads) if _clean(p)]
    per_datagram: list[Any] = []
    for number in taken:
        per_datagram += decode_netflow_v5(*items[number][:2], TemplateCache(), items[number][2]).flows.parts
    merged = merge_batches(per_datagram)
    assert sorted(map(_state, batches), key=repr) == sorted(map(_state, merged), key=repr)
    return taken


def test_benchmark_traffic() -> None:
    traffic = build_traffic("v5", exporters=4, datagrams_per_exporter=16)
    payloads = [d.payload for s in traffic.streams for d in s.datagrams]
    assert assert_batch_decode_agrees(payloads) == list(range(len(payloads)))


@pytest.mark.skipif(not corpus_available(), reason="shared corpus not found (set FLOWD_CORPUS)")
def test_corpus() -> None:
    payloads = [d.payload for unit in UNITS if unit.protocol == "v5" for d in unit_datagrams(unit, split=True)]
    assert len(assert_batch_decode_agrees(payloads)) > 1
    assert not all(_clean(p) for p in payloads)  # the corpus's broken headers are among them


def _record(number: int) -> bytes:
    return struct.pack(
        "!4s4s4sHHIIIIHHBBBBHHBBH",
        bytes([10, 0, 0, number % 250]),
        bytes([192, 0, 2, 7]),
        bytes(4),
        1,
        2,
        number,
        number * 100,
        1000,
        2000,
        40000 + number,
        443,
        0,
        0x18,
        6,
        0,
        64500,
        64501,
        24,
        16,
        0,
    )


@st.composite
def v5_datagrams(draw: st.DrawFn) -> bytes:
    count = draw(st.integers(0, 30))
    records = b"".join(_record(n) for n in range(count))
    declared = draw(st.sampled_from([count, count, count, count + 1, max(count - 1, 0), 0]))
    engine = draw(st.sampled_from([(0, 0), (1, 2)]))
    sampling = draw(st.sampled_from([0, 100, (1 << 14) | 512]))
    header = struct.pack(
        "!HHIIIIBBH", 5, declared, 123_456, 1_764_000_000, 0, draw(st.integers(0, 2**32 - 1)), *engine, sampling
    )
    payload = header + records
    tail = draw(st.sampled_from([0, 0, 0, -1, 7, 48]))
    return payload[:tail] if tail < 0 else payload + bytes(tail)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(v5_datagrams(), min_size=1, max_size=12))
def test_generated_datagrams(payloads: list[bytes]) -> None:
    assert_batch_decode_agrees(payloads)


def test_each_engine_and_sampling_word_is_its_own_batch() -> None:
    plain = struct.pack("!HHIIIIBBH", 5, 1, 1, 2, 0, 3, 0, 0, 0) + _record(1)
    other_engine = struct.pack("!HHIIIIBBH", 5, 1, 1, 2, 0, 3, 1, 9, 0) + _record(2)
    sampled = struct.pack("!HHIIIIBBH", 5, 1, 1, 2, 0, 3, 0, 0, 100) + _record(3)
    batches, left = decode_netflow_v5_batch(
        [(p, EXPORTERS[0], RECEIVED_AT) for p in (plain, other_engine, sampled, plain)]
    )
    assert not left
    assert sorted((len(b), b.rates, tuple(b.extra.values()) if b.extra else ()) for b in batches) == [
        (1, 1, (1, 9, 0)),
        (1, 100, (0, 0, 100)),
        (2, 1, (0, 0, 0)),
    ]


def test_pipeline_documents_and_counters_are_those_of_the_per_datagram_path(monkeypatch: pytest.MonkeyPatch) -> None:
    traffic = build_traffic("v5", exporters=3, datagrams_per_exporter=8)
    payloads = [d.payload for s in traffic.streams for d in s.datagrams]
    payloads[5:5] = [payloads[0] + bytes(48), payloads[1][:-48], b"\x00\x05\x00\x01"]  # count mismatches, cut header
    sflow = build_traffic("sflow", exporters=1, datagrams_per_exporter=2).streams[0].datagrams[0].payload
    batch = [(p, EXPORTERS[n % 2], RECEIVED_AT + n) for n, p in enumerate([*payloads, sflow])]
    rows = sum(d.flows for s in traffic.streams for d in s.datagrams)
    at_once, _ = assert_at_once_equals_per_datagram(monkeypatch, batch, "decode_netflow_v5_batch", rows)
    assert at_once.stats.counter("flowd_decode_errors", ("192.0.2.2", "netflow_v5", "record_count_mismatch")) == 1
