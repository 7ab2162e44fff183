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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowd.decode import TemplateCache, decode_datagram
from flowd.errors import DecodeError
from flowd.output.documents import flow_document
from flowd.output.table import DocumentTable, split_lines
from flowd.server import batch_decoder
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.metrics import WorkerStats
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
        protocol = batch_decoder.protocol_of(data)
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

    def __init__(self, patch: pytest.MonkeyPatch) -> None:
        self.raised: list[str] = []
        for name in ("batch_table", "sample_batch_tables", "sflow_tables"):
            patch.setattr(batch_decoder, name, self._spy(getattr(batch_decoder, name)))

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
            patch.setattr(batch_decoder, "MIN_WALKED_DATAGRAMS", 1)
        else:
            patch.setattr(batch_decoder, "MIN_WALKED_DATAGRAMS", len(batch) + 1)
            patch.setattr(batch_decoder, "decode_data_datagrams", _one_at_a_time)
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


def assert_batch_agrees(batch: list[Item]) -> list[str]:
    """Every path gives the per-datagram documents, options, errors and flow count, and the
    pipeline the same counters with and without its batch paths; returns the documents."""
    expected = _per_datagram(batch)
    with pytest.MonkeyPatch.context() as patch:
        raising = _Raising(patch)
        alone = _pipeline(batch, raising, at_once=False)
        at_once = _pipeline(batch, raising, at_once=True)
    assert raising.raised == []
    assert alone[:4] == expected
    assert at_once[:4] == expected
    assert at_once[4] == alone[4]
    return expected[0]


def assert_paths_agree(datagrams: list[bytes]) -> list[str]:
    """`assert_batch_agrees` for datagrams of one exporter."""
    return assert_batch_agrees([(data, EXPORTER, RECEIVED_AT + n * 1e-3) for n, data in enumerate(datagrams)])


def test_records_of_a_template_of_padding_only_are_as_many_as_counted() -> None:
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
    assert len(assert_paths_agree([definition, data])) == 2


def test_a_system_init_time_past_any_date_is_not_taken() -> None:
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
    (document,) = assert_paths_agree(datagrams)
    assert "netflow.exporter.uptime_millis" not in json.loads(document)


@pytest.mark.parametrize("signs", [(-0.0, 0.0, 0.0), (0.0, -0.0, 1.5)], ids=["minus_first", "plus_first"])
def test_negative_and_positive_zero_floats_keep_their_sign_in_ndjson(signs: tuple[float, ...]) -> None:
    """A float64 element (samplingProbability) that is -0.0 in one record and 0.0 in another:
    the NDJSON renderer took them for one value (they are equal, and equal dict keys), so one
    sign was written for both and the NDJSON disagreed with `to_dicts` and the per-record path."""
    floats = template(258, (8, 4), (311, 8))
    records = b"".join(bytes(4) + struct.pack("!d", value) for value in signs)
    datagrams = [ipfix_message(ipfix_set(2, floats), ipfix_set(258, records))]
    documents = assert_paths_agree(datagrams)
    assert sorted(str(json.loads(d)["netflow.sampling_probability"]) for d in documents) == sorted(map(str, signs))


NOW_S = 1_764_072_000
ELEMENTS: dict[int, tuple[int, tuple[int, ...]]] = {
    # element: (its usual length, values worth trying besides 0, all ones and random bytes)
    1: (8, (1, 1500, 2**62, 2**63 - 1, 2**63, 2**64 - 1)),  # counters: scaled, saturated
    2: (8, (1, 2**31, 2**63)),
    4: (1, (1, 6, 17, 58)),
    7: (2, (443,)),
    8: (4, (0x0A000001,)),
    10: (4, (1, 7)),
    11: (2, (53,)),
    12: (4, (0x0A000001, 0xC0000201)),
    21: (4, (3_600_000, 3_700_001, 2**31)),  # sysUpTime-relative: ahead, behind, wrapped
    22: (4, (3_500_000, 2**32 - 1)),
    27: (16, (0x20010DB8 << 96, 0xFFFF0A000001)),
    28: (16, (1, 0xFE80 << 112)),
    34: (4, (1, 100, 2**32 - 1)),
    56: (6, (0x0050569A0001,)),
    58: (2, (1, 4095, 4096)),
    70: (3, (0x01F401,)),  # an MPLS label stack entry
    85: (8, (2**64 - 1,)),
    89: (4, (0x80, 0x40, 0x8000)),  # forwardingStatus: dropped in the low octet or not
    150: (4, (NOW_S, 253_402_300_800)),  # dates: now, and past year 9999
    152: (8, (NOW_S * 1000, 253_402_300_799_999, 253_402_300_800_000)),
    153: (8, (NOW_S * 1000 + 5,)),
    154: (8, ((NOW_S + 2_208_988_800) << 32, 2_208_988_799 << 32)),  # NTP, and before 1970
    156: (8, ((NOW_S + 2_208_988_800) << 32 | 2**31,)),
    158: (4, (999, 10**9)),
    160: (8, (NOW_S * 1000 - 3_600_000, 2**64 - 1)),
    210: (2, ()),  # padding
    230: (1, (1, 2, 3, 5)),
    233: (1, (1, 2, 3, 4)),
    276: (1, (1, 2)),  # boolean: 2 is false
    302: (8, (1, 2)),
    311: (8, (0x8000000000000000, 0x3FF0000000000000, 0x7FF8000000000000)),  # -0.0, 1.0, NaN
    323: (8, (NOW_S * 1000,)),
    434: (4, (2**31,)),  # signed
    82: (0xFFFF, ()),  # a variable-length string
}
V9_ONLY = {40005: (1, (1, 2, 3))}  # Cisco ASA's event
REVERSE_PEN = 29305


@st.composite
def _fields(draw: st.DrawFn, ipfix: bool) -> list[tuple[int, int, int]]:
    """A template's (element, length, enterprise) list: usual lengths mostly, odd ones too."""
    pool = sorted(ELEMENTS) + ([] if ipfix else sorted(V9_ONLY))
    if draw(st.integers(0, 9)) == 0:  # a handful of elements, each likely repeated or alone
        pool = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
    chosen = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=8))
    fields = []
    for element in chosen:
        usual = (ELEMENTS | V9_ONLY)[element][0]
        odd = [0, 1, 2, 3, 4, 5, 8, 16] + ([0xFFFF] if ipfix else [])
        length = draw(st.sampled_from([usual, usual, *odd])) if usual != 0xFFFF or ipfix else 4
        pen = REVERSE_PEN if ipfix and element in (1, 2, 85) and draw(st.booleans()) else 0
        fields.append((element, length, pen))
    return fields


@st.composite
def _record(draw: st.DrawFn, fields: list[tuple[int, int, int]]) -> bytes:
    out = b""
    for element, length, _ in fields:
        if length == 0xFFFF:
            text = draw(st.sampled_from([b"", b"eth0", b"\xc3(", b"x" * 300]))
            out += (bytes([len(text)]) if len(text) < 255 else b"\xff" + struct.pack("!H", len(text))) + text
            continue
        values = (ELEMENTS | V9_ONLY)[element][1]
        value = draw(st.one_of(st.sampled_from((0, 2 ** (8 * length) - 1, *values)), st.integers(0, 2**64)))
        out += (value % 2 ** (8 * length)).to_bytes(length, "big")
    return out


def _template_set(ipfix: bool, template_id: int, fields: list[tuple[int, int, int]]) -> bytes:
    if ipfix:
        return ipfix_set(2, template(template_id, *[(e, n, p) if p else (e, n) for e, n, p in fields]))
    body = struct.pack("!HH", template_id, len(fields)) + b"".join(struct.pack("!HH", e, n) for e, n, _ in fields)
    return struct.pack("!HH", 0, 4 + len(body)) + body


def _message(ipfix: bool, sets: list[bytes], count: int, export_s: int, uptime_ms: int, domain: int) -> bytes:
    export_s, uptime_ms = export_s % 2**32, uptime_ms % 2**32
    if ipfix:
        body = b"".join(sets)
        return struct.pack("!HHIII", 10, 16 + len(body), export_s, 1, domain) + body
    return struct.pack("!HHIIII", 9, count, uptime_ms, export_s, 1, domain) + b"".join(sets)


@st.composite
def exports(draw: st.DrawFn) -> list[Item]:
    """One or two exporters' NetFlow v9 or IPFIX: templates of random elements and lengths,
    maybe options (a sampling rate, an IPFIX system init time), data sets of them (some
    padded, some counted wrong in the v9 header), a template redefined between data, data sent
    before its template; the exporters' datagrams interleaved."""
    ipfix = draw(st.booleans())
    export_s = draw(st.sampled_from([NOW_S, NOW_S, 0, 2**32 - 1]))
    uptime_ms = draw(st.sampled_from([3_600_000, 2**32 - 16]))
    domain = draw(st.sampled_from([0, 1]))
    layouts = {256 + n: draw(_fields(ipfix)) for n in range(draw(st.integers(1, 2)))}
    datagrams = [_message(ipfix, [_template_set(ipfix, t, f) for t, f in layouts.items()], 2, export_s, 0, domain)]
    if draw(st.booleans()):  # options: the domain's sampling rate (and IPFIX system init time)
        rate = draw(st.sampled_from([0, 1, 100, 2**32 - 1]))
        if ipfix:
            init = draw(st.sampled_from([NOW_S * 1000 - 3_600_000, 2**64 - 1]))
            definition = ipfix_set(3, options_template(400, 1, (149, 4), (34, 4), (160, 8)))
            data = ipfix_set(400, struct.pack("!IIQ", domain, rate, init))
        else:
            definition = struct.pack("!HHHHH", 1, 18, 400, 4, 4) + struct.pack("!HHHH", 1, 4, 34, 4)
            data = struct.pack("!HHII", 400, 12, 0, rate)
        datagrams.append(_message(ipfix, [definition, data], 2, export_s, uptime_ms, domain))
    for number in range(draw(st.integers(1, 5))):
        if draw(st.integers(0, 9)) == 0:  # redefined between data
            template_id = draw(st.sampled_from(sorted(layouts)))
            layouts[template_id] = draw(_fields(ipfix))
            datagrams.append(
                _message(ipfix, [_template_set(ipfix, template_id, layouts[template_id])], 1, export_s, 0, domain)
            )
        sets, count = [], 0
        for template_id in draw(st.lists(st.sampled_from(sorted(layouts)), min_size=1, max_size=2)):
            records = draw(st.lists(_record(layouts[template_id]), min_size=1, max_size=4))
            padding = bytes(draw(st.sampled_from([0, 0, 1, 3])))
            body = b"".join(records) + padding
            sets.append(struct.pack("!HH", template_id, 4 + len(body)) + body)
            count += len(records)
        count += draw(st.sampled_from([0, 0, 0, 1])) if not ipfix else 0
        datagrams.append(_message(ipfix, sets, count, export_s + number, uptime_ms + 1000 * number, domain))
    late = draw(st.integers(0, len(datagrams) - 1))  # data before its template when > 0
    datagrams = datagrams[late:] + datagrams[:late]
    port = 4739 if ipfix else 2055
    batch = [(d, ("203.0.113.5", port), RECEIVED_AT + n * 1e-3) for n, d in enumerate(datagrams)]
    if draw(st.booleans()):  # a second exporter sends the same: tables join rows of both
        other = [(bytes(bytearray(d)), ("203.0.113.6", port), t + 5.0) for d, _, t in batch]  # own objects, as received
        order = draw(st.permutations([0] * len(batch) + [1] * len(other)))
        sources = [iter(batch), iter(other)]
        batch = [next(sources[which]) for which in order]
    return batch


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(exports())
def test_generated_templates_decode_alike_on_every_path(batch: list[Item]) -> None:
    """Random templates and records (odd lengths, floats, dates out of range, reverse and
    variable-length elements, saturating counters, options) give the same documents, errors
    and counts per datagram and through the pipeline with and without its batch paths."""
    assert_batch_agrees(batch)
