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
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.exporter_reports import MAX_SOURCES, MAX_SOURCES_PER_SERIES, ExporterReports
from flowd.server.metrics import Aggregator, WorkerStats, build_registry
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


def test_reliability_statistics_become_gauges_per_exporter_and_domain() -> None:
    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    router, other = ("192.0.2.7", 4739), ("198.51.100.1", 4739)
    decoder.decode_parts([(reliability(1, 100, 2_000, 5, 50, 3), router, 1.0)])
    assert reported(decoder) == {
        ("192.0.2.7", "1", "exported_message_total_count"): 100,
        ("192.0.2.7", "1", "exported_flow_record_total_count"): 2_000,
        ("192.0.2.7", "1", "not_sent_flow_total_count"): 5,
        ("192.0.2.7", "1", "not_sent_packet_total_count"): 50,
        ("192.0.2.7", "1", "ignored_packet_total_count"): 3,
    }
    # A later report replaces the domain's totals; a second domain and another exporter have their
    # own series.
    decoder.decode_parts(
        [
            (reliability(1, 150, 2_900, 9, 90, 3), router, 2.0),
            (reliability(2, 10, 200, 1, 4, 0), router, 2.0),
            (reliability(1, 1, 2, 0, 0, 0), other, 2.0),
        ]
    )
    gauges = reported(decoder)
    assert gauges[("192.0.2.7", "1", "exported_flow_record_total_count")] == 2_900
    assert gauges[("192.0.2.7", "2", "exported_flow_record_total_count")] == 200
    assert gauges[("192.0.2.7", "1", "not_sent_flow_total_count")] == 9
    assert gauges[("192.0.2.7", "2", "not_sent_packet_total_count")] == 4
    assert gauges[("198.51.100.1", "1", "exported_flow_record_total_count")] == 2
    assert decoder.stats.counter("flowd_options_records_decoded", ("ipfix",)) == 4

    aggregator = Aggregator()
    aggregator.update(0, decoder.stats.snapshot())
    text = generate_latest(build_registry(aggregator)).decode()
    assert 'flowd_exporter_reported{counter="not_sent_flow_total_count",domain="2",exporter="192.0.2.7"} 1.0' in text


def test_a_restarted_exporter_lowers_its_totals() -> None:
    """The gauge follows the exporter: a restart shows as a fall, which `increase()` reads as a reset."""
    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    router = ("192.0.2.7", 4739)
    decoder.decode_parts([(reliability(1, 100, 2_000, 5, 50, 3), router, 1.0)])
    decoder.decode_parts([(reliability(1, 2, 40, 0, 0, 0), router, 2.0)])
    assert reported(decoder)[("192.0.2.7", "1", "exported_flow_record_total_count")] == 40


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
    assert {(exporter, counter) for exporter, _, counter in gauges} == {
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
    assert stats.gauges["flowd_exporter_reported"] == {
        ("other", "", "not_sent_flow_total_count"): MAX_SOURCES_PER_SERIES
    }


def test_the_totals_kept_are_bounded_in_all_and_those_left_out_counted() -> None:
    """Found by an audit: sources were capped per series and series in all, but not in all, so
    spoofed addresses, each reporting under its own few domains, could make 10,000 x 10,000
    totals be kept (about 90 bytes each); and what the caps left out was not counted."""
    stats = WorkerStats()
    reports = ExporterReports(stats, lambda address: "other")
    domains = 16
    addresses = MAX_SOURCES // domains + 100  # under MAX_SOURCES_PER_SERIES in each
    assert addresses < MAX_SOURCES_PER_SERIES
    reports.learn(
        {
            "observer.ip": f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}",
            "netflow.exporter.source_id": domain,
            "netflow.not_sent_flow_total_count": 1,
        }
        for i in range(addresses)
        for domain in range(domains)
    )
    assert sum(len(sources) for sources in reports._latest.values()) == MAX_SOURCES
    assert stats.counter("flowd_exporter_reports_ignored") == addresses * domains - MAX_SOURCES
    assert sum(stats.gauges["flowd_exporter_reported"].values()) == MAX_SOURCES


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


def test_a_domain_going_quiet_or_restarting_leaves_the_others_series_alone() -> None:
    """Found by an audit: the gauge summed an exporter's domains, so when one domain was let go
    after half an hour of silence, or restarted, the sum fell, and `increase()` (the alert, the
    dashboard's rate) read a reset and counted the other domains' whole totals as new loss."""
    from flowd.server.exporter_reports import STALE_AFTER_S

    now = [0.0]
    stats = WorkerStats()
    reports = ExporterReports(stats, str, clock=lambda: now[0])

    def report(domain: int, not_sent: int) -> None:
        document = {"observer.ip": "192.0.2.7", "netflow.exporter.source_id": domain}
        reports.learn([{**document, "netflow.not_sent_flow_total_count": not_sent}])

    report(1, 1_000)
    report(2, 5_000_000)
    report(2, 10)  # domain 2's process restarted: its own series falls, domain 1's does not
    assert stats.gauges["flowd_exporter_reported"] == {
        ("192.0.2.7", "1", "not_sent_flow_total_count"): 1_000,
        ("192.0.2.7", "2", "not_sent_flow_total_count"): 10,
    }
    for minute in range(1, 40):  # only domain 1 goes on reporting
        now[0] = minute * 60.0
        report(1, 1_000 + minute)
    assert now[0] > STALE_AFTER_S
    assert stats.gauges["flowd_exporter_reported"] == {("192.0.2.7", "1", "not_sent_flow_total_count"): 1_039}


def test_exporters_folded_into_one_label_keep_the_total_of_one_let_go() -> None:
    """Past `metrics.exporter_label_limit` exporters share the label "other": one that goes quiet
    keeps its last total in the series, which would otherwise fall and read as a reset."""
    now = [0.0]
    stats = WorkerStats()
    reports = ExporterReports(stats, lambda address: "other", clock=lambda: now[0])
    for address, total in (("192.0.2.1", 700), ("192.0.2.2", 300)):
        reports.learn([{"observer.ip": address, "netflow.not_sent_flow_total_count": total}])
    for minute in range(1, 40):
        now[0] = minute * 60.0
        reports.learn([{"observer.ip": "192.0.2.2", "netflow.not_sent_flow_total_count": 300 + minute}])
    assert stats.gauges["flowd_exporter_reported"] == {("other", "", "not_sent_flow_total_count"): 700 + 339}


def test_an_address_back_in_a_shared_series_is_not_counted_twice() -> None:
    """Found in review: an address let go from a series others share left its last total in the
    series' sum, and when it reported again its whole running total was added once more, so the
    series grew by that total instead of by what the exporter reported since."""
    from flowd.server.exporter_reports import STALE_AFTER_S

    now = [0.0]
    stats = WorkerStats()
    reports = ExporterReports(stats, lambda address: "other", clock=lambda: now[0])
    series = ("other", "", "not_sent_flow_total_count")

    def report(address: str, total: int) -> None:
        reports.learn([{"observer.ip": address, "netflow.not_sent_flow_total_count": total}])

    report("192.0.2.1", 100)
    report("192.0.2.2", 1_000)
    now[0] = STALE_AFTER_S / 2
    report("192.0.2.2", 1_000)
    now[0] = STALE_AFTER_S + 1
    reports.prune(now[0])
    assert stats.gauges["flowd_exporter_reported"][series] == 1_100  # the quiet one's total stays
    report("192.0.2.1", 110)
    assert stats.gauges["flowd_exporter_reported"][series] == 1_110
    now[0] = 2 * STALE_AFTER_S + 2
    reports.prune(now[0])  # both quiet: the series goes, and with it what it kept
    assert series not in stats.gauges["flowd_exporter_reported"]
    assert reports._retired_count == 0 and not reports._retired_by


def test_past_max_retired_an_address_back_in_its_series_is_not_counted_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: past `MAX_RETIRED` a total let go stayed in its series' sum without its
    address, so when that address reported again its whole running total was added once more.
    Now what is forgotten by address is taken back out by the next addresses to join the series,
    up to what each reports: a new one may be under-counted by as much (counted as ignored),
    nothing is counted twice, and the series never falls."""
    from flowd.server import exporter_reports
    from flowd.server.exporter_reports import STALE_AFTER_S

    monkeypatch.setattr(exporter_reports, "MAX_RETIRED", 1)
    now = [0.0]
    stats = WorkerStats()
    reports = ExporterReports(stats, lambda address: "other", clock=lambda: now[0])
    series = ("other", "", "not_sent_flow_total_count")

    def report(address: str, total: int) -> float:
        reports.learn([{"observer.ip": address, "netflow.not_sent_flow_total_count": total}])
        return stats.gauges["flowd_exporter_reported"][series]

    report("192.0.2.1", 100)  # kept by address when let go
    report("192.0.2.2", 1_000)  # past the bound: forgotten by address
    report("192.0.2.9", 10)  # goes on reporting, keeping the series
    now[0] = STALE_AFTER_S + 1
    assert report("192.0.2.9", 10) == 1_110
    reports.prune(now[0])
    assert stats.gauges["flowd_exporter_reported"][series] == 1_110  # neither total is lost
    assert report("192.0.2.2", 1_005) == 1_115  # grows by what it reported since, not by 1,005
    assert report("192.0.2.1", 130) == 1_145
    assert report("192.0.2.2", 1_020) == 1_160
    assert stats.counter("flowd_exporter_reports_ignored") == 1  # the return told by its total only
    now[0] = 2 * STALE_AFTER_S + 2
    report("192.0.2.9", 10)
    reports.prune(now[0])  # 1 and 2 quiet again; one kept by address, the other forgotten
    assert report("192.0.2.3", 50) == 1_160  # a newcomer, taken for the forgotten one's return
    assert report("192.0.2.3", 70) == 1_180
    assert stats.counter("flowd_exporter_reports_ignored") == 2
