"""The two decoding paths held to one another on hostile input (a differential fuzz campaign's
findings, and a bounded property over its mutations):

- per datagram: `decode_datagram`, every record it yields (iterated) through `flow_document`;
- the pipeline's `BatchDecoder`, with its batch paths (v5, sFlow walk, v9/IPFIX data sets) and
  without, its tables read both as dicts (`to_dicts`) and as the NDJSON the sinks are sent.

They must give the same documents, options, decode errors by reason and flow counts, and the
batch paths must raise nothing (the pipeline would hide it by falling back to dicts).
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from typing import Any

import orjson
import pytest

from flowd.decode import TemplateCache, decode_datagram
from flowd.errors import DecodeError
from flowd.output.documents import flow_document
from flowd.output.table import DocumentTable, split_lines
from flowd.server import pipeline
from flowd.server.metrics import WorkerStats
from flowd.server.pipeline import BatchDecoder
from tests.test_ipfix_features import ipfix_message, ipfix_set, options_template, template

EXPORTER = ("203.0.113.5", 4739)
RECEIVED_AT = 1_764_072_000.5
Item = tuple[bytes, tuple[str, int], float]


def _canonical(document: dict[str, Any]) -> str:
    """Comparable text that tells 0 from 0.0 from False and 0.0 from -0.0 (and holds any int)."""
    return json.dumps(document, sort_keys=True, default=repr)


def _per_datagram(batch: list[Item]) -> tuple[list[str], list[str], Counter[tuple[str, str]], int]:
    """Documents, options documents, errors by (protocol, reason) and records, one datagram at a time."""
    templates = TemplateCache()
    documents: list[str] = []
    options: list[str] = []
    errors: Counter[tuple[str, str]] = Counter()
    records = 0
    for data, exporter, received_at in batch:
        protocol = pipeline.protocol_of(data)
        try:
            result = decode_datagram(data, exporter, templates, received_at)
        except DecodeError as error:
            errors[(protocol, error.reason)] += 1
            continue
        errors.update((protocol, soft.reason) for soft in result.errors)
        flows = list(result.flows)
        records += len(flows)
        documents += [_canonical(flow_document(record)) for record in flows]
        options += [_canonical(flow_document(record)) for record in result.options]
    return sorted(documents), sorted(options), errors, records


class _Raising:
    """Counts what the batch paths raise: `BatchDecoder` falls back quietly, a test must not."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.raised: list[str] = []
        for name in ("batch_table", "sample_batch_tables", "sflow_tables"):
            monkeypatch.setattr(pipeline, name, self._spy(getattr(pipeline, name)))

    def _spy(self, function: Any) -> Any:
        def spy(*args: Any) -> Any:
            try:
                return function(*args)
            except Exception as error:
                self.raised.append(f"{function.__name__}: {type(error).__name__}: {error}")
                raise

        return spy

    def warning(self, key: str, message: str) -> bool:
        """`RateLimitedLog.warning`: a batch path's failure, or a decode error's line."""
        if key.endswith("|at_once") or key in ("sequences", "exporter_reports"):
            self.raised.append(message)
        return True


def _one_at_a_time(items: Any, templates: TemplateCache, decode_other: Any, counted: Any = None) -> Any:
    for index in range(len(items)):
        decode_other(index)
    return [], {}


def _pipeline(batch: list[Item], raising: _Raising, *, at_once: bool) -> tuple[Any, ...]:
    """What the worker's decoder makes of the batch: documents (each table as dicts, and checked
    against its NDJSON), options, errors by (protocol, reason), flows counted, and counters."""
    with pytest.MonkeyPatch.context() as patch:
        if at_once:
            patch.setattr(pipeline, "MIN_WALKED_DATAGRAMS", 1)
        else:
            patch.setattr(pipeline, "MIN_WALKED_DATAGRAMS", len(batch) + 1)
            patch.setattr(pipeline, "decode_data_datagrams", _one_at_a_time)
        decoder = BatchDecoder(TemplateCache(), WorkerStats(), warn=raising)  # type: ignore[arg-type]
        parts = decoder.decode_parts(batch)
    documents: list[str] = []
    for part in parts:
        dicts = part.to_dicts() if isinstance(part, DocumentTable) else part
        documents += [_canonical(d) for d in dicts]
        if isinstance(part, DocumentTable):
            try:
                body = part.to_ndjson()
            except orjson.JSONEncodeError:  # beyond 64 bits: the pipeline sends these as dicts
                continue
            written = [_canonical(json.loads(line)) for line in split_lines(body)]
            assert written == [_canonical(json.loads(orjson.dumps(d))) for d in dicts]
    counters = decoder.stats.counters
    errors: Counter[tuple[str, str]] = Counter()
    for (_, protocol, reason), count in counters.get("flowd_decode_errors", {}).items():
        errors[(protocol, reason)] += int(count)
    flows = int(sum(counters.get("flowd_flows_decoded", {}).values()))
    options = sorted(_canonical(d) for d in decoder.take_options())
    return sorted(documents), options, errors, flows, counters


def assert_paths_agree(monkeypatch: pytest.MonkeyPatch, datagrams: list[bytes]) -> list[str]:
    """Every path gives the per-datagram documents, options, errors and flow count; returns the
    documents."""
    batch = [(data, EXPORTER, RECEIVED_AT + n * 1e-3) for n, data in enumerate(datagrams)]
    raising = _Raising(monkeypatch)
    expected = _per_datagram(batch)
    alone = _pipeline(batch, raising, at_once=False)
    at_once = _pipeline(batch, raising, at_once=True)
    assert raising.raised == []
    assert alone[:4] == expected
    assert at_once[:4] == expected
    assert at_once[4] == alone[4]
    return expected[0]


def test_records_of_a_template_of_padding_only_are_as_many_as_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A template of paddingOctets alone: its records hold no field, and the data set's array
    counted two where iterating it gave none, so the pipeline wrote two documents that the
    per-datagram path did not. Now two records everywhere, and alike when parked and released."""
    definition = ipfix_message(ipfix_set(2, template(257, (210, 2))))
    data = ipfix_message(ipfix_set(257, b"\0" * 4))
    templates = TemplateCache()
    decode_datagram(definition, EXPORTER, templates, RECEIVED_AT)
    live = decode_datagram(data, EXPORTER, templates, RECEIVED_AT).flows
    assert len(live) == len(list(live)) == 2
    templates = TemplateCache()
    assert decode_datagram(data, EXPORTER, templates, RECEIVED_AT).parked == 1
    released = decode_datagram(definition, EXPORTER, templates, RECEIVED_AT).flows
    assert [r.fields for r in released] == [r.fields for r in live] == [{}, {}]
    assert len(assert_paths_agree(monkeypatch, [definition, data])) == 2


def test_a_system_init_time_past_any_date_is_not_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """systemInitTimeMilliseconds of 2**64 - 2**32 + 410 (garbage): the uptime it implied fell
    below -2**63, so `batch_table` raised OverflowError (`flowd decode` died with a traceback,
    `flowd run` went to dicts) and no document of the domain could be written as JSON. An init
    time past the last date a document holds (year 9999) is now ignored, like such dates."""
    init_options = options_template(400, 1, (149, 4), (160, 8))
    relative = template(260, (8, 4), (22, 4), (21, 4))
    datagrams = [
        ipfix_message(ipfix_set(3, init_options), ipfix_set(400, struct.pack("!IQ", 1, 0xFFFF_FFFF_0000_019A))),
        ipfix_message(ipfix_set(2, relative), ipfix_set(260, bytes(4) + struct.pack("!II", 1_000, 2_000))),
    ]
    (document,) = assert_paths_agree(monkeypatch, datagrams)
    assert "netflow.exporter.uptime_millis" not in json.loads(document)


@pytest.mark.parametrize("signs", [(-0.0, 0.0, 0.0), (0.0, -0.0, 1.5)], ids=["minus_first", "plus_first"])
def test_negative_and_positive_zero_floats_keep_their_sign_in_ndjson(
    monkeypatch: pytest.MonkeyPatch, signs: tuple[float, ...]
) -> None:
    """A float64 element (samplingProbability) that is -0.0 in one record and 0.0 in another:
    the NDJSON renderer took them for one value (they are equal, and equal dict keys), so one
    sign was written for both and the NDJSON disagreed with `to_dicts` and the per-record path."""
    floats = template(258, (8, 4), (311, 8))
    records = b"".join(bytes(4) + struct.pack("!d", value) for value in signs)
    datagrams = [ipfix_message(ipfix_set(2, floats), ipfix_set(258, records))]
    documents = assert_paths_agree(monkeypatch, datagrams)
    assert sorted(str(json.loads(d)["netflow.sampling_probability"]) for d in documents) == sorted(map(str, signs))
