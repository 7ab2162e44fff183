"""`flowd status`: the summary of a running collector's counters.

The metrics text is what flowd's own registry serves for counters set here by hand (the same
aggregation path `flowd run` uses), so the summary is checked against the numbers put in.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest

from flowd.server.metrics import Aggregator, WorkerStats, build_registry
from flowd.status_report import describe, summarize


def served_metrics() -> str:
    first, second = WorkerStats(), WorkerStats()
    first.inc("flowd_datagrams_received", ("netflow/udp/0.0.0.0:2055",), 1_000)
    second.inc("flowd_datagrams_received", ("sflow/udp/0.0.0.0:6343",), 500)
    first.inc("flowd_exporter_datagrams", ("192.0.2.1", "netflow_v9"), 990)
    first.inc("flowd_exporter_datagrams", ("192.0.2.1", "ipfix"), 10)
    second.inc("flowd_exporter_datagrams", ("198.51.100.7", "sflow"), 500)
    first.inc("flowd_export_sequence_missed", ("192.0.2.1", "netflow_v9"), 4)
    second.inc("flowd_decode_errors", ("198.51.100.7", "sflow", "truncated"), 2)
    second.inc("flowd_decode_errors", ("198.51.100.7", "sflow", "bad_version"), 1)
    first.inc("flowd_kernel_drops", ("netflow/udp/0.0.0.0:2055",), 7)
    first.inc("flowd_ingress_drops", ("netflow/udp/0.0.0.0:2055",), 3)
    first.inc("flowd_parked_events", ("expired",), 5)
    first.inc("flowd_parked_events", ("unparked",), 50)  # decoded in the end: not a loss
    second.inc("flowd_sink_rejected_documents", (), 1)
    second.inc("flowd_shutdown_lost", ("datagrams",), 2)
    second.inc("flowd_shutdown_lost", ("documents",), 6)
    first.inc("flowd_flows_out", (), 20_000)
    second.inc("flowd_flows_out", (), 3_000)
    first.set("flowd_exporter_reported", ("192.0.2.1", "1", "not_sent_flow_total_count"), 12)
    first.set("flowd_exporter_reported", ("192.0.2.1", "1", "exported_flow_record_total_count"), 99_990)
    first.set("flowd_exporter_reported", ("192.0.2.1", "2", "exported_flow_record_total_count"), 9)
    aggregator = Aggregator()
    aggregator.update(0, first.snapshot())
    aggregator.update(1, second.snapshot())
    aggregator.local.set("flowd_workers", ("alive",), 2)
    aggregator.local.inc("flowd_worker_restarts", (), 1)
    aggregator.local.inc("flowd_worker_lost_datagrams", (), 5)
    return generate_latest(build_registry(aggregator)).decode()


def test_the_summary_adds_up_what_the_workers_counted() -> None:
    status = summarize(served_metrics())
    assert (status.workers_alive, status.worker_restarts) == (2, 1)
    assert (status.datagrams_received, status.flows_out) == (1_500, 23_000)
    assert (status.kernel_drops, status.queue_drops) == (7, 3)
    assert status.decode_errors == {"truncated": 2, "bad_version": 1}
    assert status.parked_losses == {"dropped": 0, "expired": 5, "shutdown": 0}
    assert status.output_losses["rejected by the sink"] == 1
    rows = {(r.exporter, r.protocol): r for r in status.exporters}
    assert set(rows) == {("192.0.2.1", "ipfix"), ("192.0.2.1", "netflow_v9"), ("198.51.100.7", "sflow")}
    assert (rows["192.0.2.1", "netflow_v9"].datagrams, rows["192.0.2.1", "netflow_v9"].missed_exports) == (990, 4)
    assert rows["198.51.100.7", "sflow"].decode_errors == 3
    assert rows["192.0.2.1", "ipfix"].reported == {"not_sent_flow_total_count": 12}  # the exporter's first row
    assert (status.worker_lost, status.drain_lost) == (5, 2)
    assert status.output_losses["not written when a drain ran out of time"] == 6
    assert status.datagrams_lost == 7 + 3 + 5 + 2

    text = describe(status, "http://127.0.0.1:9107/metrics")
    lost = "lost before decoding: kernel 7, queue full 3, in workers that died 5, when a drain ran out of time 2"
    assert lost in text
    assert "decode errors: bad_version 1, truncated 2" in text
    # By unit, not one sum: a datagram the kernel dropped is also an export missing by number.
    assert text.splitlines()[-1] == (
        "counted as lost: 17 datagrams before decoding, 3 decode errors, 5 data sets that never met a"
        " template, 7 documents at the output; 4 exports missing by sequence number (on the way, and flowd's"
        " own drops above)"
    )
    table = [line.split() for line in text.splitlines() if line.startswith("  ")]
    assert table[0][:2] == ["exporter", "protocol"]
    assert ["192.0.2.1", "ipfix", "10", "0", "0", "12", "-"] in table
    assert ["192.0.2.1", "netflow_v9", "990", "4", "0", "-", "-"] in table


def test_an_idle_collector_has_nothing_lost() -> None:
    aggregator = Aggregator()
    aggregator.local.set("flowd_workers", ("alive",), 1)
    status = summarize(generate_latest(build_registry(aggregator)).decode())
    assert status.losses == 0 and status.exporters == []
    assert describe(status, "x").endswith("nothing counted as lost")


def test_a_collector_that_does_not_answer_is_an_error() -> None:
    from flowd.cli import main
    from tests.ports import free_port

    assert main(["status", "--url", f"http://127.0.0.1:{free_port()}/metrics"]) == 1


@pytest.mark.parametrize("body", [b"<!DOCTYPE html><html>Kibana</html>\n", b"\xff\xfe not text\n"])
def test_a_page_that_is_not_metrics_is_an_error(body: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by an audit: `--url` at another service (or a wrong port) ended in a ValueError or
    UnicodeDecodeError traceback from the metrics parser."""
    import http.server
    import threading

    from flowd.cli import main

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        assert main(["status", "--url", url]) == 1
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert err.startswith("flowd: ") and url in err and "Traceback" not in err


def test_enrichment_table_sizes_are_gauges_not_counters() -> None:
    """Found by an audit: cache sizes were exported as counters, which doubled when a worker
    restarted (the supervisor keeps a retired worker's totals) and went down as caches shrank."""
    from flowd.server.metrics import WorkerStats, export_component_stats

    class Chain:
        def stats(self) -> dict[str, int]:
            return {
                "address_info_hits": 7,
                "address_info_size": 3,
                "oui_entries": 40_000,
                "interface_names_configured": 2,
            }

    stats = WorkerStats()
    export_component_stats(stats, None, Chain())
    assert stats.counters["flowd_enrich_events"] == {("address_info_hits",): 7}
    assert {key: stats.gauges["flowd_enrich_entries"][(key,)] for key in ("address_info_size", "oui_entries")} == {
        "address_info_size": 3,
        "oui_entries": 40_000,
    }


def test_an_idle_metrics_client_is_disconnected(monkeypatch: Any) -> None:
    """Found by an audit: each idle connection held a thread and a descriptor for good."""
    import socket
    import urllib.request

    from prometheus_client import CollectorRegistry

    from flowd.server import metrics

    monkeypatch.setattr(metrics, "HTTP_IDLE_TIMEOUT_S", 0.3)
    server = metrics.MetricsServer("127.0.0.1", 0, CollectorRegistry(), lambda: True, lambda: True)
    server.start()
    try:
        idle = socket.create_connection(("127.0.0.1", server.port))
        idle.settimeout(5.0)
        assert idle.recv(1) == b""  # the server closed it, well before the client's 5 s
        idle.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as answer:
            assert answer.status == 200
    finally:
        server.close()
