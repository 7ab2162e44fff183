"""Export sequence numbers: exports lost before flowd are counted per exporter, in each protocol's unit.

The traffic is built here with struct (benchmarks.traffic and the sFlow test builder), numbered
as each standard says; the expected losses are the datagrams the test leaves out and what they
held, counted from how they were built, not from the decoders.
"""

from __future__ import annotations

import random

import pytest

from benchmarks import traffic
from flowd.decode import TemplateCache
from flowd.decode.sequence import (
    DUPLICATE,
    GAP,
    LARGEST_GAP,
    LATE,
    LATE_EXPORTS,
    RESET,
    SEQUENCE_SPACE,
    UNNUMBERED,
    SequenceTracker,
    export_mark,
)
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.metrics import WorkerStats
from tests.test_sflow_properties import datagram as sflow_datagram
from tests.test_sflow_properties import flow_sample, raw_header

EXPORTER = ("192.0.2.70", 40_000)
RECORDS = 28


def test_tracker_events() -> None:
    tracker = SequenceTracker()
    key = ("192.0.2.1", "netflow_v5", (0, 0))
    assert tracker.observe(key, 101_000, 30) == (None, 0)  # first: nothing to check against
    assert tracker.observe(key, 101_030, 30) == (None, 0)
    assert tracker.observe(key, 101_090, 30) == (GAP, 30)  # 101,060-101,089 never came
    assert tracker.observe(key, 101_060, 30) == (LATE, 0)  # ... until now, out of order
    assert tracker.observe(key, 101_120, 30) == (None, 0)  # the expected number still stands
    assert tracker.observe(key, 101_120, 30) == (DUPLICATE, 0)
    assert tracker.observe(key, 0, 30) == (RESET, 0)  # the exporter restarted (from further back than 64 exports)
    assert tracker.observe(key, 30, 30) == (None, 0)
    assert tracker.observe(key, 60 + LARGEST_GAP + 1, 30) == (RESET, 0)  # too far ahead to be loss
    assert tracker.observe(("192.0.2.1", "netflow_v5", (0, 1)), 5, 1) == (None, 0)  # another engine


def test_tracker_across_the_wrap_and_the_windows() -> None:
    tracker = SequenceTracker()
    key = ("192.0.2.1", "ipfix", 7)
    tracker.observe(key, SEQUENCE_SPACE - 10, 25)
    assert tracker.observe(key, 15, 5) == (None, 0)
    assert tracker.observe(key, 20 + LARGEST_GAP, 5) == (GAP, LARGEST_GAP)
    expected = 25 + LARGEST_GAP
    assert tracker.observe(key, expected - LATE_EXPORTS * 5, 5) == (LATE, 0)
    assert tracker.observe(key, expected - LATE_EXPORTS * 5 - 1, 5) == (RESET, 0)


def test_unknown_units_leave_the_next_export_unchecked() -> None:
    tracker = SequenceTracker()
    key = ("192.0.2.1", "ipfix", 1)
    tracker.observe(key, 100, None)
    assert tracker.observe(key, 5_000, 10) == (None, 0)
    assert tracker.observe(key, 5_011, 10) == (GAP, 1)


def test_an_exporter_that_does_not_number_is_reported_once() -> None:
    tracker = SequenceTracker()
    key = ("192.0.2.1", "netflow_v5", (0, 0))
    events = [tracker.observe(key, 0, 30) for _ in range(50)]
    assert events[:3] == [(None, 0), (DUPLICATE, 0), (UNNUMBERED, 0)]
    assert set(events[3:]) == {(None, 0)}
    assert tracker.observe(key, 900, 30) == (None, 0)  # numbering now: checked from the next one
    assert tracker.observe(key, 930, 30) == (None, 0)
    assert tracker.observe(key, 990, 30) == (GAP, 30)


def test_a_datagram_sent_twice_is_one_duplicate_not_an_unnumbered_exporter() -> None:
    tracker = SequenceTracker()
    key = ("192.0.2.1", "netflow_v9", 3)
    assert [tracker.observe(key, n, 1) for n in (10, 11, 11, 12, 12, 13)] == [
        (None, 0),
        (None, 0),
        (DUPLICATE, 0),
        (None, 0),
        (DUPLICATE, 0),
        (None, 0),
    ]
    assert tracker.observe(key, 13, 1) == (DUPLICATE, 0)
    assert tracker.observe(key, 15, 1) == (GAP, 1)  # the repeat is forgotten once the count moves


def test_unnumbered_v5_exporter_through_the_worker() -> None:
    """Sequence 0 in every header (bytes 16-19 of the v5 header zeroed): no losses, two events."""
    datagrams = [d[:16] + bytes(4) + d[20:] for d in traffic.netflow_v5(records=RECORDS, datagrams=40)[1]]
    stats = _decoded_with_losses(datagrams, set(), batch_size=7)
    events = {labels[2]: value for labels, value in stats.counters["flowd_export_sequence_events"].items()}
    assert events == {DUPLICATE: 1, UNNUMBERED: 1}
    assert stats.total("flowd_export_sequence_missed") == 0
    assert stats.total("flowd_flows_decoded") == 40 * RECORDS


def test_tracked_streams_are_bounded() -> None:
    tracker = SequenceTracker(max_streams=3)
    for index in range(5):
        tracker.observe((f"192.0.2.{index}", "sflow", 0), 1, 1)
    assert len(tracker) == 3 and tracker.evicted == 2  # counted (flowd_export_sequence_streams_evicted)
    assert tracker.observe(("192.0.2.0", "sflow", 0), 9, 1) == (None, 0)  # forgotten: first again
    assert tracker.evicted == 3


def _decoded_with_losses(datagrams: list[bytes], lost: set[int], batch_size: int = 10) -> WorkerStats:
    stats = WorkerStats()
    decoder = BatchDecoder(TemplateCache(), stats)
    kept = [(d, EXPORTER, 1_700_000_000.0) for index, d in enumerate(datagrams) if index not in lost]
    for start in range(0, len(kept), batch_size):
        decoder.decode_parts(kept[start : start + batch_size])
    return stats


def _built(protocol: str, datagrams: int) -> tuple[list[bytes], int]:
    """Templates then data datagrams, and what one data datagram adds to the sequence."""
    if protocol == "netflow_v5":
        return traffic.netflow_v5(records=RECORDS, datagrams=datagrams)[1], RECORDS
    if protocol == "netflow_v9":
        templates, data = traffic.netflow_v9(records=RECORDS, datagrams=datagrams)
        return templates + data, 1
    if protocol == "ipfix":
        templates, data = traffic.ipfix(records=RECORDS, datagrams=datagrams)
        return templates + data, RECORDS
    frame = bytes(range(64))
    samples = [sflow_datagram(flow_sample(raw_header(frame), sequence=n), sequence=n + 1) for n in range(datagrams)]
    return samples, 1


@pytest.mark.parametrize("protocol", ["netflow_v5", "netflow_v9", "ipfix", "sflow"])
def test_missing_exports_are_counted_in_each_protocols_unit(protocol: str) -> None:
    datagrams, unit = _built(protocol, 60)
    first_data = len(datagrams) - 60
    complete = _decoded_with_losses(datagrams, set())
    assert complete.total("flowd_export_sequence_events") == 0
    assert complete.total("flowd_flows_decoded") > 0
    rng = random.Random(protocol)
    lost = set(rng.sample(range(first_data + 1, len(datagrams) - 1), 12))  # not the first or last data
    stats = _decoded_with_losses(datagrams, lost, batch_size=rng.choice([1, 7, 64]))
    runs = sum(1 for index in lost if index - 1 not in lost)  # each run of lost datagrams is one gap
    assert stats.counter("flowd_export_sequence_missed", (EXPORTER[0], protocol)) == len(lost) * unit
    assert stats.counter("flowd_export_sequence_events", (EXPORTER[0], protocol, GAP)) == runs
    assert stats.total("flowd_export_sequence_events") == runs


def test_ipfix_counts_records_of_a_template_carried_in_the_same_batch() -> None:
    """The template datagram and the data travel in one batch: the records are counted with it."""
    templates, data = traffic.ipfix(records=RECORDS, datagrams=4)
    stats = _decoded_with_losses(templates + data, {2}, batch_size=64)
    assert stats.counter("flowd_export_sequence_missed", (EXPORTER[0], "ipfix")) == RECORDS


def test_ipfix_message_with_an_unknown_template_is_not_counted() -> None:
    _, data = traffic.ipfix(records=RECORDS, datagrams=3)
    cache = TemplateCache()
    assert export_mark(data[0], EXPORTER, cache.get, 0.0) == ("ipfix", (EXPORTER[1], 1), 0, None)


def test_ipfix_transport_sessions_from_one_address_number_apart() -> None:
    """RFC 7011 section 3.1: the sequence counts per transport session and observation domain.
    Two exporting processes on one device (UDP source ports 40000 and 40001, the same domain),
    each numbering its own records, interleaved: nothing is missing; a gap in one is counted."""
    templates, data = traffic.ipfix(records=RECORDS, datagrams=6)
    stats = WorkerStats()
    decoder = BatchDecoder(TemplateCache(), stats)
    first, second = ("192.0.2.70", 40_000), ("192.0.2.70", 40_001)
    items = [(d, first, 1.0) for d in templates] + [(d, second, 1.0) for d in templates]
    for index, datagram in enumerate(data):
        items += [(datagram, first, 1.0)] + ([] if index == 3 else [(datagram, second, 1.0)])
    decoder.decode_parts(items)
    assert stats.counter("flowd_export_sequence_missed", ("192.0.2.70", "ipfix")) == RECORDS
    events = {labels[2]: value for labels, value in stats.counters["flowd_export_sequence_events"].items()}
    assert events == {GAP: 1}


def test_reordered_and_duplicated_datagrams() -> None:
    _, data = traffic.netflow_v9(records=RECORDS, datagrams=6)
    templates, _ = traffic.netflow_v9()
    order = [*templates, data[0], data[2], data[1], data[3], data[3], data[4], data[5]]
    stats = WorkerStats()
    decoder = BatchDecoder(TemplateCache(), stats)
    decoder.decode_parts([(d, EXPORTER, 1.0) for d in order])
    events = {labels[2]: value for labels, value in stats.counters["flowd_export_sequence_events"].items()}
    assert events == {GAP: 1, LATE: 1, DUPLICATE: 1}
    assert stats.counter("flowd_export_sequence_missed", (EXPORTER[0], "netflow_v9")) == 1


def test_marks_of_truncated_and_foreign_datagrams() -> None:
    cache = TemplateCache()
    v5 = traffic.netflow_v5(records=2, datagrams=1)[1][0]
    assert export_mark(v5, EXPORTER, cache.get, 0.0) == ("netflow_v5", (0, 0), 0, 2)
    for cut in range(len(v5[:24])):
        mark = export_mark(v5[:cut], EXPORTER, cache.get, 0.0)
        assert mark is None or cut >= 22
    assert export_mark(b"\x00\x07" + bytes(30), EXPORTER, cache.get, 0.0) is None
    ipv6_agent = sflow_datagram(agent="2001:db8::9", sequence=41)
    assert export_mark(ipv6_agent, EXPORTER, cache.get, 0.0) == (
        "sflow",
        (bytes.fromhex("20010db8000000000000000000000009"), 3),
        41,
        1,
    )


def test_a_count_restarted_a_little_way_back_is_a_reset_not_a_gap() -> None:
    """ipfixcol2's example_flows.ipfix: the exporter numbers 0 (59 records), 59 (none), then
    starts again at 0. The restart first looks like a late export; its successor shows it."""
    tracker = SequenceTracker()
    key = ("192.0.2.1", "ipfix", 6)
    assert [tracker.observe(key, sequence, units) for sequence, units in ((0, 59), (59, 0), (0, 60))] == [
        (None, 0),
        (None, 0),
        (LATE, 0),
    ]
    assert tracker.observe(key, 60, 60) == (RESET, 0)
    assert tracker.observe(key, 120, 59) == (None, 0)
    assert tracker.observe(key, 180, 59) == (GAP, 1)


def test_flowd_decode_reports_what_the_sequence_numbers_say() -> None:
    from flowd.offline import DecodeSummary, decode_documents
    from tests.shared_data import CORPUS

    summary = DecodeSummary()
    documents = list(decode_documents([CORPUS / "ipfixcol2" / "example_flows.ipfix"], summary))
    assert len(documents) == summary.flows > 0
    assert dict(summary.sequence_events) == {LATE: 1, RESET: 1} and sum(summary.sequence_missed.values()) == 0
    assert summary.describe().endswith("; missing by sequence numbers: ipfix=0 (late=1, reset=1)")


def test_ipfix_records_are_counted_with_the_template_of_their_moment() -> None:
    """Template 300 is redefined to a longer record within one batch: each message's records are
    counted with the template in force when it arrived, so no gap is seen (counting them after
    the batch, with its last templates, made the earlier messages look short)."""
    from tests.test_ipfix_features import ipfix_message, ipfix_set, template

    short, long = template(300, (8, 4)), template(300, (8, 4), (12, 4))
    sequence, messages = 0, []
    for layout, width in ((short, 4), (long, 8)):
        messages.append(ipfix_message(ipfix_set(2, layout), sequence=sequence))
        for _ in range(3):
            messages.append(ipfix_message(ipfix_set(300, bytes(width * 5)), sequence=sequence))
            sequence += 5
    for batch_size in (1, len(messages)):
        stats = WorkerStats()
        decoder = BatchDecoder(TemplateCache(), stats)
        items = [(m, EXPORTER, 1.0) for m in messages]
        for start in range(0, len(items), batch_size):
            decoder.decode_parts(items[start : start + batch_size])
        assert stats.total("flowd_export_sequence_events") == 0
        assert stats.total("flowd_flows_decoded") == 30
