"""Hypothesis properties over real corpus datagrams: any truncation or byte flip either decodes
or raises DecodeError; nothing else escapes, nothing hangs, and state stays within its caps."""

from __future__ import annotations

import contextlib
import glob
from functools import cache

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowd.capture import read_datagrams
from flowd.decode import TemplateCache, decode_datagram
from flowd.decode.batch import RecordBatch
from flowd.errors import DecodeError
from flowd.model import KIND_NETFLOW_FLOW
from flowd.output.batch_documents import batch_table
from flowd.output.documents import flow_document
from flowd.output.table import split_lines
from tests.shared_data import CORPUS as SHARED_CORPUS

CORPUS = SHARED_CORPUS
EXPORTER = ("192.0.2.1", 2055)


@cache
def corpus_datagrams() -> tuple[tuple[bytes, ...], ...]:
    """Per capture, its datagrams in order (so a data datagram can follow its templates)."""
    files = sorted(glob.glob(str(CORPUS / "**" / "*.pcap"), recursive=True))
    files += sorted(glob.glob(str(CORPUS / "logstash-codec-netflow" / "*.dat")))
    files += [str(CORPUS / "ipfixcol2" / "example_flows.ipfix")]
    units = []
    for name in files:
        payloads = tuple(d.payload for d in read_datagrams(name))[:40]
        if payloads:
            units.append(payloads)
    return tuple(units)


def primed_cache(unit: tuple[bytes, ...], upto: int) -> TemplateCache:
    cache_ = TemplateCache(max_per_exporter=64, max_templates=256, max_parked_per_key=4, max_parked_sets=32)
    for payload in unit[:upto]:
        with contextlib.suppress(DecodeError):
            decode_datagram(payload, EXPORTER, cache_, 0.0)
    return cache_


def decode_or_decode_error(payload: bytes, templates: TemplateCache) -> None:
    try:
        result = decode_datagram(payload, EXPORTER, templates, 1.0)
    except DecodeError as error:
        assert isinstance(error.reason, str) and error.reason
        return
    batches = [p for p in result.flows.parts if isinstance(p, RecordBatch) and p.kind == KIND_NETFLOW_FLOW]
    tables = [batch_table(p) for p in batches]
    records = list(result.flows) + list(result.options)  # materialise lazily decoded sets too
    assert len(records) == len(result.flows) + len(result.options)
    for record in records:
        orjson.dumps(flow_document(record))
    for batch, table in zip(batches, tables, strict=True):  # `flowd run`'s path: the same documents
        documents = table.to_dicts()
        assert documents == [flow_document(record) for record in batch]
        try:
            body = table.to_ndjson()
        except orjson.JSONEncodeError:  # the pipeline dead-letters these through the dict path
            continue
        assert [orjson.loads(line) for line in split_lines(body)] == documents
    assert len(templates) <= templates.max_templates
    assert templates.parked_sets <= templates.max_parked_sets


def test_corpus_is_there() -> None:
    assert len(corpus_datagrams()) > 40


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_truncation_decodes_or_raises_decode_error(data: st.DataObject) -> None:
    units = corpus_datagrams()
    unit = units[data.draw(st.integers(0, len(units) - 1), label="unit")]
    index = data.draw(st.integers(0, len(unit) - 1), label="datagram")
    payload = unit[index]
    cut = data.draw(st.integers(0, len(payload)), label="cut")
    decode_or_decode_error(payload[:cut], primed_cache(unit, index))


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_byte_flips_decode_or_raise_decode_error(data: st.DataObject) -> None:
    units = corpus_datagrams()
    unit = units[data.draw(st.integers(0, len(units) - 1), label="unit")]
    index = data.draw(st.integers(0, len(unit) - 1), label="datagram")
    payload = bytearray(unit[index])
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(payload) - 1), st.integers(0, 255)), min_size=1, max_size=8)
    )
    for position, value in flips:
        payload[position] = value
    decode_or_decode_error(bytes(payload), primed_cache(unit, index))


@settings(max_examples=200, deadline=2000)
@given(
    payload=st.binary(min_size=0, max_size=600),
    version=st.sampled_from([b"\x00\x05", b"\x00\x09", b"\x00\x0a", b"\x00\x00\x00\x05"]),
)
def test_random_bytes_after_a_version_word(payload: bytes, version: bytes) -> None:
    decode_or_decode_error(version + payload, TemplateCache(max_templates=64, max_parked_sets=16))


def test_every_truncation_of_a_few_datagrams() -> None:
    """Exhaustive over offsets for one datagram of each protocol (the sampled tests above vary more)."""
    for unit in corpus_datagrams()[:12]:
        payload = unit[-1]
        templates = primed_cache(unit, len(unit) - 1)
        for cut in range(len(payload)):
            decode_or_decode_error(payload[:cut], templates)
