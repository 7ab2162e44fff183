"""NetFlow v9 and IPFIX data sets decoded a receive batch at once (`decode_data_datagrams`)
against `decode_datagram` one datagram at a time (itself checked against tshark over the corpus):

- run over the same datagrams in the same order, each with its own template cache, the two give
  the same flow records (fields, exporters, header values, uptimes, sampling rates), options
  records, errors and template cache state; only the order of records across datagrams differs;
- it takes exactly the datagrams made of data sets only that decode, one at a time, into a
  columnar data set per set and nothing else (no template, options or error), and leaves each
  other one to the per-datagram decoder where it stands in the batch;
- in the pipeline it changes neither the documents nor the counters.

Over the corpus's v9/IPFIX units, the benchmark traffic (in order, and with data sent before its
templates), batches in which templates are redefined, withdrawn or expire between data datagrams
and options data change the sampling rate and the IPFIX system init time, and hypothesis-made
cuts and overwrites of those.
"""

from __future__ import annotations

import functools
import socket
import struct
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowd.bench.traffic import build_traffic
from flowd.decode import TemplateCache, decode_datagram
from flowd.decode.batch import RecordBatch
from flowd.decode.data_set_batch import decode_data_datagrams
from flowd.errors import DecodeError
from flowd.model import FlowRecord
from flowd.server import batch_decoder
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.metrics import WorkerStats
from tests.batch_decoding import assert_batch_paths_change_nothing
from tests.corpus_units import UNITS, corpus_available, unit_datagrams
from tests.test_ipfix_features import V4_TEMPLATE, ipfix_message, ipfix_set, options_template, template, v4_record

EXPORTERS = [("192.0.2.1", 2055), ("192.0.2.2", 4739)]
RECEIVED_AT = 1_764_072_000.5
Item = tuple[bytes, tuple[str, int], float]


def _record_key(record: FlowRecord) -> str:
    return repr(
        (
            record.kind,
            record.exporter,
            record.version,
            record.received_at,
            sorted(record.fields.items()),
            record.domain_id,
            record.template_id,
            record.sequence,
            record.export_time,
            record.uptime_ms,
            record.sampling_rate,
        )
    )


def _data_sets_to_the_end(data: bytes) -> int:
    """How many sets the datagram holds after its header when they are all data sets (ids from
    256) whose length words lead from one to the next and end where the datagram ends; else 0."""
    pos = 20 if data[:2] == b"\x00\x09" else 16
    sets = 0
    while pos + 4 <= len(data):
        set_id, length = struct.unpack_from("!HH", data, pos)
        if set_id < 256 or length < 4:
            return 0
        sets += 1
        pos += length
    return sets if pos == len(data) else 0


class Decoded:
    """What one way of decoding made of a batch."""

    def __init__(self) -> None:
        self.cache = TemplateCache(ttl_s=60.0)
        self.flows: list[FlowRecord] = []
        self.options: list[FlowRecord] = []
        self.errors: list[tuple[int, str]] = []
        self.one_at_a_time: list[int] = []
        self.single_batch: list[int] = []
        """Datagrams that decoded, alone, into a columnar data set per set and nothing else."""

    def decode_one(self, items: list[Item], index: int) -> None:
        self.one_at_a_time.append(index)
        data, exporter, received_at = items[index]
        try:
            result = decode_datagram(data, exporter, self.cache, received_at)
        except DecodeError as error:
            self.errors.append((index, error.reason))
            return
        self.flows.extend(result.flows)
        self.options.extend(result.options)
        self.errors.extend((index, soft.reason) for soft in result.errors)
        parts = result.flows.parts
        if (
            len(parts) == _data_sets_to_the_end(data) > 0
            and all(isinstance(part, RecordBatch) for part in parts)
            and not (result.errors or result.options or result.templates_added or result.parked)
        ):
            self.single_batch.append(index)

    def state(self) -> tuple[Any, ...]:
        return (
            sorted(map(_record_key, self.flows)),
            [_record_key(record) for record in self.options],
            self.errors,
            orjson.dumps(self.cache.snapshot(), option=orjson.OPT_SORT_KEYS),
            repr(self.cache.stats),
            self.cache.parked_sets,
        )


def assert_batch_decode_agrees(items: list[Item]) -> list[int]:
    """Returns the indices decoded at once."""
    at_once = Decoded()
    batches, datagrams = decode_data_datagrams(items, at_once.cache, lambda index: at_once.decode_one(items, index))
    for batch in batches:
        at_once.flows.extend(batch)
    assert at_once.one_at_a_time == sorted(at_once.one_at_a_time)  # the others, in batch order
    taken = sorted(set(range(len(items))) - set(at_once.one_at_a_time))
    assert sum(datagrams.values()) == len(taken)
    assert datagrams[9] == sum(1 for n in taken if items[n][0][:2] == b"\x00\x09")

    per_datagram = Decoded()
    for index in range(len(items)):
        per_datagram.decode_one(items, index)
    assert at_once.state() == per_datagram.state()
    assert taken == per_datagram.single_batch
    return taken


def _round_robin(protocol: str, exporters: int = 4, datagrams: int = 16) -> list[Item]:
    traffic = build_traffic(protocol, exporters=exporters, datagrams_per_exporter=datagrams)
    items: list[Item] = []
    for number in range(max(len(stream.datagrams) for stream in traffic.streams)):
        for stream in traffic.streams:
            if number < len(stream.datagrams):
                exporter = (f"127.0.0.{1 + stream.index}", 40_000 + stream.index)
                items.append((stream.datagrams[number].payload, exporter, RECEIVED_AT + len(items) * 1e-3))
    return items


@pytest.mark.parametrize("protocol", ["v9", "ipfix"])
def test_benchmark_traffic_is_decoded_at_once(protocol: str) -> None:
    items = _round_robin(protocol)
    taken = assert_batch_decode_agrees(items)
    assert len(taken) >= 0.8 * len(items)


@pytest.mark.parametrize("protocol", ["v9", "ipfix"])
def test_data_sent_before_its_templates_is_parked_then_released_as_one_at_a_time(protocol: str) -> None:
    items = _round_robin(protocol)
    first_templates = 4 * 2  # the streams open with their templates; send some of them late
    rotated = items[first_templates + 5 :] + items[: first_templates + 5]
    rotated = [(data, exporter, RECEIVED_AT + n * 1e-3) for n, (data, exporter, _) in enumerate(rotated)]
    assert_batch_decode_agrees(rotated)


def v9_datagram(*flowsets: bytes, count: int, source_id: int = 0, sequence: int = 1) -> bytes:
    return struct.pack("!HHIIII", 9, count, 90_000, 1_700_000_000, sequence, source_id) + b"".join(flowsets)


def v9_set(set_id: int, body: bytes) -> bytes:
    return struct.pack("!HH", set_id, 4 + len(body)) + body


V9_FIELDS = ((8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 4), (2, 4), (22, 4), (21, 4))
V9_RECORD = struct.Struct("!4s4sHHBIIII")


def v9_template(template_id: int, fields: tuple[tuple[int, int], ...] = V9_FIELDS) -> bytes:
    return struct.pack("!HH", template_id, len(fields)) + b"".join(struct.pack("!HH", *f) for f in fields)


def v9_records(count: int, seed: int) -> bytes:
    return b"".join(
        V9_RECORD.pack(
            socket.inet_aton(f"10.{seed}.0.{n + 1}"), socket.inet_aton(f"192.0.2.{n + 1}"), 1024 + n, 443, 6,
            100 * (n + 1), n + 1, 80_000 + n, 85_000 + n,
        )
        for n in range(count)
    )  # fmt: skip


def v9_scenario() -> list[bytes]:
    """Templates learned, refreshed, redefined; sampling announced between data datagrams."""
    tpl = v9_template(256)
    swapped = v9_template(256, ((12, 4), (8, 4), *V9_FIELDS[2:]))
    sampling_options = struct.pack("!HHH", 300, 4, 8) + struct.pack("!HHHHHH", 1, 4, 34, 4, 35, 1)
    return [
        v9_datagram(v9_set(0, tpl), count=1),
        v9_datagram(v9_set(256, v9_records(5, 1)), count=5),
        v9_datagram(v9_set(256, v9_records(3, 2)), count=3, source_id=7),  # another domain: parked
        v9_datagram(v9_set(256, v9_records(4, 3)), count=4, sequence=2),
        v9_datagram(v9_set(1, sampling_options), count=1),
        v9_datagram(v9_set(300, struct.pack("!IIB", 1, 100, 2) + b"\0\0\0"), count=1),
        v9_datagram(v9_set(256, v9_records(6, 4)), count=6, sequence=3),  # sampled 1:100
        v9_datagram(v9_set(256, v9_records(2, 5)), count=3),  # count disagrees: one at a time
        v9_datagram(v9_set(256, v9_records(2, 6) + b"\0\0"), count=2),  # padded set
        v9_datagram(v9_set(0, swapped), count=1),  # redefined: addresses swap places
        v9_datagram(v9_set(256, v9_records(3, 7)), count=3, sequence=4),
        v9_datagram(v9_set(0, tpl), v9_set(256, v9_records(2, 8)), count=3),  # template and data
        v9_datagram(v9_set(256, v9_records(2, 11)), v9_set(256, v9_records(3, 12)), count=5),  # two data sets
        v9_datagram(v9_set(256, v9_records(1, 13)), v9_set(257, v9_records(1, 14)), count=2),  # one unknown
        v9_datagram(v9_set(0, v9_template(256)), count=1, source_id=7),  # releases the parked set
        v9_datagram(v9_set(256, v9_records(2, 9)), count=2, source_id=7),
        v9_datagram(v9_set(256, b"\0" * 10), count=0),  # shorter than a record
        v9_datagram(v9_set(257, v9_records(2, 10)), count=2),  # unknown template
    ]


IPFIX_INIT_MS = 1_700_000_000_000 - 3_600_000
UPTIME_TEMPLATE = template(260, (8, 4), (12, 4), (22, 4), (21, 4))


def _uptime_record(n: int) -> bytes:
    return socket.inet_aton(f"10.1.1.{n}") + socket.inet_aton("192.0.2.9") + struct.pack("!II", 1_000_000, 1_002_000)


def ipfix_scenario() -> list[bytes]:
    """Templates learned, withdrawn, relearned; system init time and sampling from options."""
    record = v4_record("10.0.0.1", "10.0.0.2", 1234, 443, 6, 1500, 3)
    init_options = options_template(400, 1, (149, 4), (160, 8))
    rate_options = options_template(401, 1, (149, 4), (34, 4))
    return [
        ipfix_message(ipfix_set(2, V4_TEMPLATE + UPTIME_TEMPLATE)),
        ipfix_message(ipfix_set(256, record * 4), sequence=1),
        ipfix_message(ipfix_set(260, _uptime_record(1) * 2), sequence=2),  # no init time yet
        ipfix_message(ipfix_set(3, init_options + rate_options)),
        ipfix_message(ipfix_set(400, struct.pack("!IQ", 1, IPFIX_INIT_MS))),
        ipfix_message(ipfix_set(260, _uptime_record(2) * 3), sequence=3),  # times from init
        ipfix_message(ipfix_set(401, struct.pack("!II", 1, 64))),
        ipfix_message(ipfix_set(256, record * 2), sequence=4),  # sampled 1:64
        ipfix_message(ipfix_set(256, record * 2, pad_to=8), sequence=5),  # padded set
        ipfix_message(ipfix_set(256, record), ipfix_set(260, _uptime_record(3))),  # two sets
        ipfix_message(ipfix_set(2, struct.pack("!HH", 256, 0))),  # withdrawn: the next is parked
        ipfix_message(ipfix_set(256, record * 3), sequence=6),
        ipfix_message(ipfix_set(2, V4_TEMPLATE)),  # relearned: releases it
        ipfix_message(ipfix_set(256, record * 5), sequence=7),
        ipfix_message(ipfix_set(256, record), domain=2),  # another domain: parked
        ipfix_message(ipfix_set(256, record * 2), sequence=8) + b"\0\0\0\0",  # trailing bytes
        _length_word(ipfix_message(ipfix_set(256, record * 2), sequence=9), 4),  # claims more than came
        _length_word(ipfix_message(ipfix_set(256, record * 3), sequence=10), -len(record)),  # claims less
        ipfix_message(ipfix_set(2, SELECTOR_TEMPLATE)),
        ipfix_message(ipfix_set(262, _selector_records(3, 4))),  # no sampler table yet: the domain's rate
        ipfix_message(ipfix_set(3, options_template(402, 1, (302, 8), (305, 4), (306, 4)))),
        ipfix_message(ipfix_set(402, struct.pack("!QII", 3, 1, 999) + struct.pack("!QII", 4, 1, 9))),
        ipfix_message(ipfix_set(262, _selector_records(3, 4, 5)), ipfix_set(256, record)),  # 1:1000, 1:10, domain's
    ]


SELECTOR_TEMPLATE = template(262, (8, 4), (1, 8), (2, 8), (302, 8))
"""Records that name their selector (Cisco IOS XR): the rate comes from the selector's options."""


def _selector_records(*selectors: int) -> bytes:
    return b"".join(socket.inet_aton("10.0.0.1") + struct.pack("!QQQ", 100, 2, s) for s in selectors)


def _length_word(message: bytes, change: int) -> bytes:
    """The IPFIX message with its length word off by `change` bytes."""
    return message[:2] + struct.pack("!H", len(message) + change) + message[4:]


def _items(datagrams: list[bytes], step_s: float = 1.0) -> list[Item]:
    return [(data, EXPORTERS[0], RECEIVED_AT + n * step_s) for n, data in enumerate(datagrams)]


@pytest.mark.parametrize("scenario", [v9_scenario, ipfix_scenario], ids=["v9", "ipfix"])
def test_templates_and_options_apply_from_where_they_stand_in_the_batch(scenario: Any) -> None:
    taken = assert_batch_decode_agrees(_items(scenario()))
    assert len(taken) >= 5


def test_a_template_expiring_between_data_datagrams_parks_the_later_ones() -> None:
    datagrams = v9_scenario()[:4]
    items = _items(datagrams, step_s=0.0)
    items.append((datagrams[1], EXPORTERS[0], RECEIVED_AT + 61.0))  # past the 60 s template TTL
    items.append((datagrams[0], EXPORTERS[0], RECEIVED_AT + 62.0))
    items.append((datagrams[1], EXPORTERS[0], RECEIVED_AT + 63.0))
    taken = assert_batch_decode_agrees(items)
    assert 4 not in taken and 6 in taken


def test_exporters_keep_their_own_templates_in_one_batch() -> None:
    datagrams = v9_scenario()
    items = [(data, EXPORTERS[n % 2], RECEIVED_AT + n) for n, data in enumerate(datagrams + datagrams)]
    assert_batch_decode_agrees(items)


@pytest.mark.skipif(not corpus_available(), reason="shared corpus not present")
@pytest.mark.parametrize("unit", [u for u in UNITS if u.protocol in ("v9", "ipfix")], ids=lambda u: u.name)
def test_corpus_units(unit: Any) -> None:
    datagrams = [d.payload for d in unit_datagrams(unit, split=True)]
    assert_batch_decode_agrees(_items(datagrams * 2, step_s=1e-3))  # the second pass knows every template


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenario=st.sampled_from([v9_scenario, ipfix_scenario]),
    edits=st.lists(
        st.tuples(st.integers(0, 15), st.integers(0, 200), st.binary(min_size=1, max_size=4), st.booleans()),
        max_size=6,
    ),
)
def test_cut_and_overwritten_datagrams(scenario: Any, edits: list[tuple[int, int, bytes, bool]]) -> None:
    datagrams = scenario()
    for index, offset, data, cut in edits:
        datagram = datagrams[index % len(datagrams)]
        offset %= max(1, len(datagram))
        datagram = datagram[:offset] if cut else datagram[:offset] + data + datagram[offset + len(data) :]
        datagrams[index % len(datagrams)] = datagram
    assert_batch_decode_agrees(_items(datagrams))


def _documents(decoder: BatchDecoder, batch: list[Any]) -> list[bytes]:
    return sorted(orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in decoder.decode(batch))


@pytest.mark.parametrize("protocol", ["v9", "ipfix"])
def test_pipeline_documents_and_counters_are_unchanged(monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    items = _round_robin(protocol) + _items(v9_scenario() if protocol == "v9" else ipfix_scenario())
    _, _, options = assert_batch_paths_change_nothing(monkeypatch, list(items))
    assert options  # the scenarios' options too


def test_a_bug_in_the_batch_path_sends_its_datagrams_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    items = _items(v9_scenario())
    expected = _documents(BatchDecoder(TemplateCache(), WorkerStats()), list(items))

    def half_then_fail(
        items: Any, templates: TemplateCache, decode_other: Any, counted: Any = None
    ) -> tuple[list[RecordBatch], Any]:
        for index in range(0, len(items) // 2):
            decode_other(index)
        raise RuntimeError("bug")

    monkeypatch.setattr(batch_decoder, "decode_data_datagrams", half_then_fail)
    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    assert _documents(decoder, list(items)) == expected


@functools.cache
def _mixed_pool() -> list[tuple[bytes, tuple[str, int]]]:
    """Datagrams of every protocol (benchmark traffic, the template and options scenarios)."""
    pool = []
    for protocol in ("v5", "v9", "ipfix", "sflow"):
        traffic = build_traffic(protocol, exporters=3, datagrams_per_exporter=8)
        for stream in traffic.streams:
            exporter = (f"127.0.0.{1 + stream.index}", 40_000 + stream.index)
            pool += [(datagram.payload, exporter) for datagram in stream.datagrams]
    pool += [(data, ("192.0.2.9", 2055)) for data in v9_scenario()]
    pool += [(data, ("192.0.2.9", 4739)) for data in ipfix_scenario()]
    return pool


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],  # patched per example
)
@given(
    start=st.integers(0, 10**6),
    length=st.integers(1, 150),
    swaps=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), max_size=10),
    # most edits in the headers (version, counts, lengths, set and template ids), some anywhere
    edits=st.lists(
        st.tuples(st.integers(0, 10**6), st.one_of(st.integers(0, 40), st.integers(0, 10**6)), st.integers(0, 255)),
        max_size=12,
    ),
    cut=st.integers(0, 10**6),
)
def test_mixed_protocol_batches_decode_alike_with_and_without_the_batch_paths(
    monkeypatch: pytest.MonkeyPatch,
    start: int,
    length: int,
    swaps: list[tuple[int, int]],
    edits: list[tuple[int, int, int]],
    cut: int,
) -> None:
    """Batches of every protocol (a stretch of the pool, streams in order with their templates
    first, some datagrams swapped), bytes overwritten (most in the headers) and one datagram cut
    short: the pipeline's decoder with its batch paths (v5, sFlow walk, v9/IPFIX data sets) gives
    the documents, options and counters it gives decoding each datagram alone."""
    pool = _mixed_pool()
    first = start % len(pool)
    chosen = [bytearray(data) for data, _ in pool[first : first + length]]
    exporters = [exporter for _, exporter in pool[first : first + length]]
    for i, j in swaps:
        i, j = i % len(chosen), j % len(chosen)
        chosen[i], chosen[j], exporters[i], exporters[j] = chosen[j], chosen[i], exporters[j], exporters[i]
    for index, position, value in edits:
        datagram = chosen[index % len(chosen)]
        datagram[position % len(datagram)] = value
    shortened = cut % len(chosen)
    chosen[shortened] = chosen[shortened][: cut % (len(chosen[shortened]) + 1)]
    batch = [
        (bytes(data), exporter, RECEIVED_AT + n * 0.01)
        for n, (data, exporter) in enumerate(zip(chosen, exporters, strict=True))
    ]
    with monkeypatch.context() as patched:
        assert_batch_paths_change_nothing(patched, batch)
