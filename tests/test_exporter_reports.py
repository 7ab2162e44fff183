"""`flowd_exporter_reported`: the statistics exporters send about themselves in options data.

The IPFIX messages are built with struct from RFC 7011 section 4.3's Exporting Process Reliability
Statistics (an options template scoped by exportingProcessId); the expected gauges are the values
packed into them.
"""

from __future__ import annotations

import struct

import pytest
from prometheus_client import generate_latest

from flowd.decode import TemplateCache
from flowd.server.exporter_reports import MAX_SOURCES_PER_SERIES, ExporterReports
from flowd.server.metrics import Aggregator, WorkerStats, build_registry
from flowd.server.pipeline import BatchDecoder
from tests.corpus_units import CORPUS, corpus_available
from tests.test_ipfix_features import ipfix_message, ipfix_set, options_template

RELIABILITY = options_template(
    300,
    1,
    (144, 4),  # exportingProcessId (scope)
    (41, 8),  # exportedMessageTotalCount
    (42, 8),  # exportedFlowRecordTotalCount
    (166, 8),  # notSentFlowTotalCount
    (167, 8),  # notSentPacketTotalCount
    (164, 8),  # ignoredPacketTotalCount
)


def reliability(domain: int, messages: int, flows: int, not_sent: int, not_sent_packets: int, ignored: int) -> bytes:
    record = struct.pack("!IQQQQQ", 7, messages, flows, not_sent, not_sent_packets, ignored)
    return ipfix_message(ipfix_set(3, RELIABILITY), ipfix_set(300, record), domain=domain)


def reported(decoder: BatchDecoder) -> dict[tuple[str, ...], float]:
    return dict(decoder.stats.gauges.get("flowd_exporter_reported", {}))


def test_reliability_statistics_become_gauges_per_exporter_summed_over_domains() -> None:
    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    router, other = ("192.0.2.7", 4739), ("198.51.100.1", 4739)
    decoder.decode_parts([(reliability(1, 100, 2_000, 5, 50, 3), router, 1.0)])
    assert reported(decoder) == {
        ("192.0.2.7", "exported_message_total_count"): 100,
        ("192.0.2.7", "exported_flow_record_total_count"): 2_000,
        ("192.0.2.7", "not_sent_flow_total_count"): 5,
        ("192.0.2.7", "not_sent_packet_total_count"): 50,
        ("192.0.2.7", "ignored_packet_total_count"): 3,
    }
    # A later report replaces the domain's totals; a second domain adds its own; another exporter
    # has its own series.
    decoder.decode_parts(
        [
            (reliability(1, 150, 2_900, 9, 90, 3), router, 2.0),
            (reliability(2, 10, 200, 1, 4, 0), router, 2.0),
            (reliability(1, 1, 2, 0, 0, 0), other, 2.0),
        ]
    )
    gauges = reported(decoder)
    assert gauges[("192.0.2.7", "exported_flow_record_total_count")] == 2_900 + 200
    assert gauges[("192.0.2.7", "not_sent_flow_total_count")] == 9 + 1
    assert gauges[("192.0.2.7", "not_sent_packet_total_count")] == 90 + 4
    assert gauges[("198.51.100.1", "exported_flow_record_total_count")] == 2
    assert decoder.stats.counter("flowd_options_records_decoded", ("ipfix",)) == 4

    aggregator = Aggregator()
    aggregator.update(0, decoder.stats.snapshot())
    text = generate_latest(build_registry(aggregator)).decode()
    assert 'flowd_exporter_reported{counter="not_sent_flow_total_count",exporter="192.0.2.7"} 10.0' in text


def test_a_restarted_exporter_lowers_its_totals() -> None:
    """The gauge follows the exporter: a restart shows as a fall, which `increase()` reads as a reset."""
    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    router = ("192.0.2.7", 4739)
    decoder.decode_parts([(reliability(1, 100, 2_000, 5, 50, 3), router, 1.0)])
    decoder.decode_parts([(reliability(1, 2, 40, 0, 0, 0), router, 2.0)])
    assert reported(decoder)[("192.0.2.7", "exported_flow_record_total_count")] == 40


def test_flow_records_carrying_the_same_elements_are_not_reports() -> None:
    """Only options data counts: a data record with exportedFlowRecordTotalCount is a flow."""
    flows_template = struct.pack("!HH", 301, 2) + struct.pack("!HHHH", 8, 4, 42, 8)
    record = bytes([10, 0, 0, 1]) + struct.pack("!Q", 77)
    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    decoder.decode_parts(
        [(ipfix_message(ipfix_set(2, flows_template), ipfix_set(301, record)), ("192.0.2.7", 4739), 1.0)]
    )
    assert reported(decoder) == {}


@pytest.mark.skipif(not corpus_available(), reason="shared corpus not found")
def test_cisco_v9_exporter_statistics_from_the_corpus() -> None:
    """logstash-codec-netflow's v9 captures hold Cisco's exporter statistics options (scope system)."""
    path = CORPUS / "logstash-codec-netflow" / "netflow9_test_macaddr_tpl.dat"
    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    decoder.decode_parts([(path.read_bytes(), ("192.0.2.1", 50000), 1.0)])
    gauges = reported(decoder)
    assert set(gauges) == {
        ("192.0.2.1", "exported_flow_record_total_count"),
        ("192.0.2.1", "exported_message_total_count"),
    }


def test_values_that_are_not_counts_and_too_many_sources_are_ignored() -> None:
    stats = WorkerStats()
    reports = ExporterReports(stats, lambda address: "other")
    reports.learn(
        [
            {"observer.ip": "192.0.2.1", "netflow.not_sent_flow_total_count": "7"},
            {"observer.ip": "192.0.2.1", "netflow.not_sent_flow_total_count": -1},
            {"observer.ip": "192.0.2.1", "netflow.not_sent_flow_total_count": 2**70},
            {"observer.ip": "192.0.2.1", "netflow.not_sent_flow_total_count": True},
        ]
    )
    assert stats.gauges == {}
    documents = [
        {"observer.ip": f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", "netflow.not_sent_flow_total_count": 1}
        for i in range(MAX_SOURCES_PER_SERIES + 5)
    ]
    reports.learn(documents)
    assert stats.gauges["flowd_exporter_reported"] == {("other", "not_sent_flow_total_count"): MAX_SOURCES_PER_SERIES}


def test_an_exporter_that_moved_between_workers_is_not_counted_twice() -> None:
    """Found by an audit: the worker an exporter left kept its last total, and the workers' sum
    doubled "not sent" in /metrics and `flowd status`. Workers now combine by the largest value,
    and a worker lets a source go once it has not been heard from for half an hour."""
    from flowd.server.exporter_reports import STALE_AFTER_S, ExporterReports

    now = [0.0]
    left, joined = WorkerStats(), WorkerStats()
    reports = [ExporterReports(stats, str, clock=lambda: now[0]) for stats in (left, joined)]
    document = {"observer.ip": "192.0.2.7", "netflow.exporter.source_id": 1}
    reports[0].learn([{**document, "netflow.not_sent_flow_total_count": 1_000_060}])
    now[0] = 60.0
    reports[1].learn([{**document, "netflow.not_sent_flow_total_count": 1_000_070}])
    aggregator = Aggregator()
    aggregator.update(0, left.snapshot())
    aggregator.update(1, joined.snapshot())
    assert aggregator.gauge_total("flowd_exporter_reported") == 1_000_070
    now[0] = STALE_AFTER_S + 120.0
    reports[0].maybe_prune()  # the worker it left hears nothing more of it (the decoder calls this per batch)
    assert "flowd_exporter_reported" not in left.gauges or not left.gauges["flowd_exporter_reported"]
