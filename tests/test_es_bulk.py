"""The pure parts of the sink: encoding, batching, retry policy, response triage, spool files."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from elastic_transport import ConnectionError as TransportConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st

from flowd.config import ElasticsearchSettings
from flowd.config_values import parse_es_host
from flowd.output.bulk import (
    BatchBuilder,
    BulkEncoder,
    RetryPolicy,
    classify_bulk_response,
    dead_letter_line,
    document_of,
    split_pairs,
)
from flowd.output.elasticsearch import ElasticsearchSink
from flowd.output.es_transport import auth_headers
from flowd.output.spool import Spool, SpoolFull
from flowd.output.table import DocumentTable


def test_encoder_gives_each_document_a_fixed_unique_id() -> None:
    encoder = BulkEncoder(id_prefix=b"p")
    pairs, rejected = encoder.encode([{"a": 1}, {"a": 2}, {"big": 2**70}])
    more, _ = encoder.encode([{"a": 3}])
    assert [orjson.loads(p.split(b"\n")[0])["create"]["_id"] for p in pairs + more] == ["p-0", "p-1", "p-2"]
    assert [orjson.loads(document_of(p)) for p in pairs] == [{"a": 1}, {"a": 2}]
    assert len(rejected) == 1 and "64-bit" in rejected[0].reason


def test_lines_written_from_columns_get_the_same_pairs_as_dicts() -> None:
    documents = [{"a": 1}, {"a": 2}, {"b": "x"}]
    by_dicts, _ = BulkEncoder(id_prefix=b"p").encode(documents)
    from_lines = BulkEncoder(id_prefix=b"p")
    pairs = from_lines.encode_lines([orjson.dumps(d) for d in documents[:2]])
    pairs += from_lines.encode_lines([orjson.dumps(documents[2])])
    assert pairs == by_dicts
    assert BulkEncoder(document_ids=False).encode_lines([b'{"a":1}']) == [b'{"create":{}}\n{"a":1}\n']


def test_encoder_without_ids_uses_the_constant_action() -> None:
    pairs, _ = BulkEncoder(document_ids=False).encode([{"a": 1}])
    assert pairs == [b'{"create":{}}\n{"a":1}\n']


def test_batches_cut_at_docs_or_bytes_and_split_back() -> None:
    pairs, _ = BulkEncoder(id_prefix=b"x").encode([{"n": i} for i in range(10)])
    by_docs = BatchBuilder(4, 1 << 20, lambda: 0.0)
    full = by_docs.add(pairs)
    assert [b.docs for b in full] == [4, 4] and by_docs.docs == 2
    rest = by_docs.cut()
    assert rest is not None and rest.docs == 2 and by_docs.cut() is None
    assert split_pairs(full[0].body) == pairs[:4]
    by_bytes = BatchBuilder(1000, len(pairs[0]) * 3, lambda: 0.0)
    assert [b.docs for b in by_bytes.add(pairs)] == [3, 3, 3]


def test_action_lines_for_tables_are_the_lines_encode_writes() -> None:
    """Action lines rendered as a matrix (written in front of each document by the table) carry
    the ids `encode_lines` gives, counting on across calls and through 0, 0xf, 0x10, 2**32."""
    for start in (0, 14, 2**32 - 3):
        by_lines, by_matrix = BulkEncoder(id_prefix=b"q"), BulkEncoder(id_prefix=b"q")
        by_lines._counter = by_matrix._counter = start
        lines = [b'{"n":%d}' % i for i in range(40)]
        expected = by_lines.encode_lines(lines[:25]) + by_lines.encode_lines(lines[25:])
        matrices = [by_matrix.action_lines(25), by_matrix.action_lines(15)]
        rendered = [bytes(row).lstrip(b" ") for m in matrices for row in m]
        assert [a + line + b"\n" for a, line in zip(rendered, lines, strict=True)] == expected
    plain = BulkEncoder(document_ids=False).action_lines(2)
    assert [bytes(row) for row in plain] == [b'{"create":{}}\n'] * 2


def test_tables_write_bulk_pairs_with_their_action_lines() -> None:
    table = DocumentTable(3)
    table.add("n", np.array([5, 60, 700]))
    table.set_constant("k", "v")
    encoder = BulkEncoder(id_prefix=b"t")
    body = table.to_ndjson(encoder.action_lines(3))
    expected, _ = BulkEncoder(id_prefix=b"t").encode(table.to_dicts())
    pairs = split_pairs(body)
    assert [orjson.loads(p.split(b"\n")[0]) for p in pairs] == [orjson.loads(p.split(b"\n")[0]) for p in expected]
    assert [orjson.loads(document_of(p)) for p in pairs] == table.to_dicts()


def test_a_batch_of_one_body_piece_is_a_view_of_the_table_not_a_copy() -> None:
    """Batches cut from one table's array are sent as views of it (joining them would copy
    megabytes per request); a batch that joins pieces, and a short tail left open, are bytes."""
    encoder = BulkEncoder(id_prefix=b"b")
    pairs, _ = encoder.encode([{"v": v, "pad": "x" * 40} for v in range(100)])
    width = max(map(len, pairs))
    table = np.frombuffer(b"".join(b" " * (width - len(p)) + p for p in pairs), dtype=np.uint8).copy()
    builder = BatchBuilder(30, 10**9, lambda: 0.0)
    batches = builder.add_body(table.data, 100, width)
    assert [b.docs for b in batches] == [30, 30, 30]
    for batch in batches:
        assert isinstance(batch.body, memoryview)
        assert np.shares_memory(np.frombuffer(batch.body, np.uint8), table)
    assert b"".join(bytes(b.body) for b in batches) == table[: 90 * width].tobytes()
    more = builder.add_body(table.data, 100, width)  # the open tail of 10 joins the next body's 20
    assert type(more[0].body) is bytes and more[0].docs == 30
    assert bytes(more[0].body) == table[90 * width :].tobytes() + table[: 20 * width].tobytes()


class _Unreachable:
    """A transport whose every request fails at once with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.requests = 0

    async def perform_request(self, *args: Any, **kwargs: Any) -> Any:
        self.requests += 1
        if self.requests > 500:  # a sink that spins: yield, so the test ends and fails rather than hangs
            await asyncio.sleep(0.001)
        raise self.error

    async def close(self) -> None:
        return None


async def _write_table_while_unreachable(tmp_path: Path, transport: _Unreachable, wait_s: float) -> list[Any]:
    """40 documents as one table body into a sink whose cluster fails every request; the bodies
    of the batches waiting in memory after `wait_s`."""
    settings = ElasticsearchSettings(
        batch_docs=10, max_in_flight=1, spool_dir=str(tmp_path / "spool"), dead_letter_path=str(tmp_path / "dl")
    )
    policy = RetryPolicy(initial_s=0.01, cap_s=0.05)
    sink = ElasticsearchSink(settings, transport=transport, policy=policy, close_timeout_s=0.5)  # type: ignore[arg-type]
    await sink.start()
    pairs, _ = BulkEncoder(id_prefix=b"t").encode([{"v": v} for v in range(40)])
    width = max(map(len, pairs))
    table = np.frombuffer(b"".join(b" " * (width - len(p)) + p for p in pairs), dtype=np.uint8).copy()
    await sink.write_encoded(table.data, 40)
    await asyncio.sleep(wait_s)
    bodies = [batch.body for batch in sink._pending]
    await sink.close()
    return bodies


def test_batches_that_wait_out_an_outage_own_their_bytes(tmp_path: Path) -> None:
    """While the cluster is away, a batch waiting in memory is its own bytes, not a view that
    keeps a whole table's array alive behind the buffer's byte count."""
    transport = _Unreachable(TransportConnectionError("cluster down"))
    bodies = asyncio.run(_write_table_while_unreachable(tmp_path, transport, 0.3))
    assert transport.requests >= 2
    assert bodies and all(type(body) is bytes for body in bodies)


def test_an_unexpected_transport_error_backs_off_instead_of_spinning(tmp_path: Path) -> None:
    """An exception the sink does not expect, raised at once by every request: the sink retries
    with backoff, and the event loop (the worker's receive and decode) keeps its turns."""
    transport = _Unreachable(ValueError("a bug in a transport layer"))
    bodies = asyncio.run(asyncio.wait_for(_write_table_while_unreachable(tmp_path, transport, 0.3), 10.0))
    assert 2 <= transport.requests < 100  # backoff from 10 ms, capped at 50 ms, over 0.3 s
    assert bodies and all(type(body) is bytes for body in bodies)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 10**6), min_size=0, max_size=30), min_size=1, max_size=6),
    st.integers(1, 12),
    st.integers(30, 600),
    st.booleans(),
    st.booleans(),
)
def test_bodies_are_cut_into_batches_as_pairs_would_be(
    writes: list[list[int]], batch_docs: int, batch_bytes: int, mixed: bool, fixed: bool
) -> None:
    """`add_body` (a block of pairs from a table) cuts the batches `add` cuts pair by pair, at
    both limits, whatever the open batch already holds; `fixed`: the pairs of a body are padded
    to one length, as a table's rows are, and `add_body` is told that length."""
    by_pairs = BatchBuilder(batch_docs, batch_bytes, lambda: 0.0)
    by_bodies = BatchBuilder(batch_docs, batch_bytes, lambda: 0.0)
    encoder = BulkEncoder(id_prefix=b"b")
    expected: list[tuple[bytes, int]] = []
    got: list[tuple[bytes, int]] = []
    for number, values in enumerate(writes):
        pairs, _ = encoder.encode([{"v": v, "pad": "x" * (v % 50)} for v in values])
        width = max(map(len, pairs), default=0)
        if fixed:  # JSON whitespace in front of the action line, as `to_ndjson` pads its rows
            pairs = [b" " * (width - len(pair)) + pair for pair in pairs]
        expected += [(b.body, b.docs) for b in by_pairs.add(pairs)]
        if mixed and number % 2:
            got += [(b.body, b.docs) for b in by_bodies.add(pairs)]
        else:
            body: bytes | memoryview = b"".join(pairs)
            if number % 3 == 0:  # as `flowd run` hands it over: a view of the table's array
                body = np.frombuffer(body, dtype=np.uint8).copy().data
            got += [(b.body, b.docs) for b in by_bodies.add_body(body, len(pairs), width if fixed else 0)]
        assert (by_bodies.docs, by_bodies.nbytes) == (by_pairs.docs, by_pairs.nbytes)
    last_pairs, last_bodies = by_pairs.cut(), by_bodies.cut()
    assert got == expected
    assert all(type(body) in (bytes, memoryview) for body, _ in got)
    assert (last_bodies and (last_bodies.body, last_bodies.docs)) == (last_pairs and (last_pairs.body, last_pairs.docs))


def test_a_short_tail_left_open_does_not_hold_on_to_its_table() -> None:
    """The pairs after the last cut of a large body stay in the open batch as a copy: the table's
    array can be freed (here: overwritten) while the next one is laid out."""
    builder = BatchBuilder(4, 1 << 20, lambda: 0.0)
    pairs, _ = BulkEncoder(id_prefix=b"t").encode([{"v": v} for v in range(9)])
    width = max(map(len, pairs))
    pairs = [b" " * (width - len(pair)) + pair for pair in pairs]
    array = np.frombuffer(b"".join(pairs), dtype=np.uint8).copy()
    full = builder.add_body(array.data, 9, width)  # two batches of 4, one pair left open
    assert [b.docs for b in full] == [4, 4]
    array[:] = ord(" ")
    last = builder.cut()
    assert last is not None and last.body == pairs[8]


def test_a_body_whose_lines_do_not_match_its_count_is_refused() -> None:
    builder = BatchBuilder(2, 1 << 20, lambda: 0.0)
    with pytest.raises(ValueError):
        builder.add_body(b'{"create":{}}\n{"a":1}\n', 3)
    pairs = b'{"create":{}}\n{"a":1}\n{"create":{}}\n{"a":12}\n{"create":{}}\n{"a":1}\n'
    with pytest.raises(ValueError):  # told the pairs have one length, which they do not
        builder.add_body(pairs, 3, len(pairs) // 3)


def test_retry_policy_is_capped_exponential_with_jitter() -> None:
    policy = RetryPolicy(initial_s=0.1, cap_s=2.0, jitter=0.5, random=lambda: 0.0)
    assert [round(policy.delay_s(n), 3) for n in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    jittered = RetryPolicy(initial_s=0.1, cap_s=2.0, jitter=0.5, random=lambda: 1.0)
    assert jittered.delay_s(3) == pytest.approx(0.4)
    assert RetryPolicy(cap_s=30.0, random=lambda: 0.0).delay_s(10_000) == 30.0


def test_bulk_response_triage() -> None:
    statuses = [201, 409, 429, 503, 400, 404, 200]
    body = {
        "errors": True,
        "items": [{"create": {"status": s, **({"error": {"reason": str(s)}} if s >= 300 else {})}} for s in statuses],
    }
    outcome = classify_bulk_response(body, len(statuses))
    assert (outcome.created, outcome.duplicates) == (2, 1)
    assert outcome.retry == [2, 3]
    assert [(r.index, r.status) for r in outcome.rejected] == [(4, 400), (5, 404)]
    assert classify_bulk_response({"errors": False}, 5).created == 5
    assert classify_bulk_response({"errors": True, "items": []}, 3).retry == [0, 1, 2]
    # An index made read-only at the disk's flood stage: the cluster's state, not the document.
    blocked = {"type": "cluster_block_exception", "reason": "index [flows] blocked by: [FORBIDDEN/12/index read-only]"}
    forbidden = {"type": "security_exception", "reason": "action [indices:data/write/bulk] is unauthorized"}
    body = {"errors": True, "items": [{"create": {"status": 403, "error": e}} for e in (blocked, forbidden)]}
    outcome = classify_bulk_response(body, 2)
    assert outcome.retry == [0] and [(r.index, r.status) for r in outcome.rejected] == [(1, 403)]


def test_dead_letter_line_keeps_the_document_and_reason() -> None:
    line = orjson.loads(dead_letter_line(b'{"a":1}', 400, {"reason": "bad"}, "2026-01-01T00:00:00Z"))
    assert line == {
        "@timestamp": "2026-01-01T00:00:00Z",
        "status": 400,
        "error": {"reason": "bad"},
        "document": {"a": 1},
    }


def test_spool_is_bounded_atomic_and_survives_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = iter(range(1000, 2000)).__next__
    spool = Spool(tmp_path, max_bytes=100, wall_clock=lambda: float(clock()))
    spool.scan()
    for body in (b"a" * 40, b"b" * 40):
        entry = spool.reserve(body, 1)
        spool.write(entry, body)
        spool.commit(entry)
    assert "near its cap" in caplog.text
    with pytest.raises(SpoolFull):
        spool.reserve(b"c" * 40, 1)
    (tmp_path / "junk.ndjson.tmp").write_bytes(b"partial")

    restarted = Spool(tmp_path, max_bytes=100)
    found = restarted.scan()
    assert [restarted.read(e) for e in found] == [b"a" * 40, b"b" * 40]
    assert restarted.nbytes == 80 and not (tmp_path / "junk.ndjson.tmp").exists()
    oldest = restarted.claim()
    assert oldest is not None and restarted.read(oldest) == b"a" * 40
    restarted.release(oldest)
    again = restarted.claim()
    assert again == oldest
    smaller = restarted.shrink(again, b"a" * 10, 1)
    restarted.replace(again, smaller)
    assert restarted.nbytes == 50
    assert restarted.claim() == smaller
    restarted.delete(smaller)
    restarted.remove(smaller)
    assert restarted.nbytes == 40 and restarted.batches == 1


def test_hosts_and_auth() -> None:
    assert parse_es_host("es1", tls=False) == ("http", "es1", 9200, "")
    assert parse_es_host("es1:9201", tls=True) == ("https", "es1", 9201, "")
    assert parse_es_host("https://es.example/prefix/", tls=False) == ("https", "es.example", 9200, "/prefix")
    with pytest.raises(ValueError):
        parse_es_host("ftp://x", tls=False)
    assert auth_headers(ElasticsearchSettings(user="u", password="p")) == {"authorization": "Basic dTpw"}
    assert auth_headers(ElasticsearchSettings(api_key="id:key", user="u")) == {"authorization": "ApiKey aWQ6a2V5"}
    assert auth_headers(ElasticsearchSettings(api_key="ZW5jb2RlZA==")) == {"authorization": "ApiKey ZW5jb2RlZA=="}
