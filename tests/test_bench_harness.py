"""The pps harness (`flowd bench`): its pure parts, its traffic decoded by flowd's decoders, one
tiny bounded end-to-end run against a real `flowd run`, and the pytest-benchmark files run once
as plain tests so they cannot rot. No wall-clock goal is asserted: the figures are measured and
reported by `flowd bench`, not tested here. The whole module stays well under 60 s.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from flowd.bench import PROTOCOLS
from flowd.bench.cli import GOALS_FPS, evaluate_goals, main, memory_trial_rate
from flowd.bench.collectors import Delivery, FlowdCollector, PeerCollector, PeerPreset, parse_metrics, stage_seconds
from flowd.bench.procfs import CpuWatch, process_tree, udp_sockets
from flowd.bench.search import SearchResult, Trial, search_zero_loss
from flowd.bench.sender import SendResult
from flowd.bench.traffic import RECORDS_PER_DATAGRAM, build_traffic, template_datagrams
from flowd.config import load_settings
from flowd.decode import TemplateCache, decode_datagram

REPO = Path(__file__).resolve().parents[1]


def fake_trial(capacity_dps: float, calls: list[float]) -> Any:
    def run(rate: float) -> Trial:
        calls.append(rate)
        ok = rate <= capacity_dps
        return Trial("fake", "v9", 1, rate, rate, rate * 20, rate * 20 if ok else capacity_dps * 20, 100, 100, ok)

    return run


def test_search_brackets_the_capacity_within_the_resolution() -> None:
    calls: list[float] = []
    trials = search_zero_loss(fake_trial(7_300, calls), start_dps=1_000, max_dps=1e6, max_trials=20, resolution=0.05)
    passed = max(t.target_dps for t in trials if t.zero_loss)
    failed = min(t.target_dps for t in trials if not t.zero_loss)
    assert passed <= 7_300 < failed
    assert (failed - passed) / failed <= 0.05
    assert calls[:4] == [1_000, 2_000, 4_000, 8_000]  # doubling until the first loss


def test_search_goes_below_a_failing_start_and_stops_at_bounds() -> None:
    trials = search_zero_loss(fake_trial(300, []), start_dps=1_000, max_dps=1e6, max_trials=6)
    assert trials[0].target_dps == 1_000 and not trials[0].zero_loss
    assert any(t.zero_loss for t in trials)
    assert len(search_zero_loss(fake_trial(1e9, []), start_dps=1_000, max_dps=4_000, max_trials=20)) == 3
    assert [t.target_dps for t in search_zero_loss(fake_trial(1e9, []), start_dps=1, max_dps=1, rates=[5, 7])] == [5, 7]


def test_search_stops_when_the_senders_cannot_offer_more() -> None:
    def run(rate: float) -> Trial:
        offered = min(rate, 3_000)
        return Trial("fake", "v9", 1, rate, offered, offered * 20, offered * 20, 100, 100, True)

    trials = search_zero_loss(run, start_dps=1_000, max_dps=1e6, max_trials=20)
    assert [t.target_dps for t in trials] == [1_000, 2_000, 4_000]
    assert trials[-1].sender_limited


def test_goals_are_evaluated_not_asserted() -> None:
    one = SearchResult("flowd", "v9", 1, [Trial("flowd", "v9", 1, 1, 1, 1, 100_000, 10, 10, True, cpu_s=1.0)])
    two = SearchResult("flowd", "v9", 2, [Trial("flowd", "v9", 2, 1, 1, 1, 170_000, 10, 10, True, cpu_s=1.0)])
    memory = {
        "templates_sent": 10_000,
        "templates_known": 10_000,
        "max_worker_rss_mb": 90.0,
        "trial_zero_loss": True,
        "protocol": "v9",
        "target_dps": 15_000,
        "goal_dps": 15_000,
        "achieved_dps": 15_020,
    }
    peer = SearchResult("nfacctd", "v9", 1, [Trial("nfacctd", "v9", 1, 1, 1, 1, 80_000, 10, 10, True, cpu_s=0.5)])
    ceiling = SearchResult("nfcapd", "v9", 1, [Trial("nfcapd", "v9", 1, 1, 1, 1, 900_000, 10, 10, True, cpu_s=0.5)])
    goals = {g["goal"]: g for g in evaluate_goals([one, two, peer, ceiling], memory)}
    lead = goals["v9: one worker does more per CPU-second than nfacctd"]
    assert (lead["status"], lead["zero_loss_fps_ratio"]) == ("unproven", 1.25)  # no search converged
    assert not any("nfcapd" in goal for goal in goals)  # binary output: the ceiling, not a goal
    assert goals["v9: one worker >= 300,000 flows/s with zero loss"]["status"] == "unproven"
    assert goals["v9: 2 workers >= 0.8 x 2 x one worker"]["measured_scaling"] == 0.85
    memory_goal = "RSS per worker < 150 MB with 10,000 templates at the goal rate (15,000 v9 datagrams/s; peak)"
    assert goals[memory_goal]["status"] == "met"


def test_parse_metrics_sums_label_sets() -> None:
    text = (
        "# HELP flowd_flows_out_total Documents\n"
        'flowd_datagrams_received_total{listener="a"} 3.0\n'
        'flowd_datagrams_received_total{listener="b"} 4.0\n'
        "flowd_flows_out_total 70.0\n"
    )
    assert parse_metrics(text) == {"flowd_datagrams_received_total": 7.0, "flowd_flows_out_total": 70.0}


def test_stage_seconds_reads_each_stage() -> None:
    text = (
        "# TYPE flowd_stage_seconds counter\n"
        'flowd_stage_seconds_total{stage="decode"} 1.5\n'
        'flowd_stage_seconds_created{stage="decode"} 1.7e9\n'
        'flowd_stage_seconds_total{stage="sink"} 0.25\n'
    )
    assert stage_seconds(text) == {"decode": 1.5, "sink": 0.25}


def test_udp_sockets_reads_drops_and_queue_by_port(tmp_path: Path) -> None:
    table = tmp_path / "udp"
    table.write_text(
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref "
        "pointer drops\n"
        "  1: 0100007F:0807 00000000:0000 07 00000000:00000100 00:00000000 00000000 0 0 1001 2 0 5\n"
        "  2: 0100007F:0807 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 1002 2 0 7\n"
        "  3: 0100007F:0808 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 1003 2 0 9\n"
    )
    state = udp_sockets(0x0807, [str(table)])
    assert (state.sockets, state.rx_queue_bytes, state.drops) == (2, 0x100, 12)


def test_process_tree_includes_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert child.pid in process_tree(os.getpid())
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_traffic_decodes_to_the_flows_it_claims(protocol: str) -> None:
    traffic = build_traffic(protocol, exporters=3, datagrams_per_exporter=12, template_refresh=5)
    cache = TemplateCache()
    flows = 0
    for stream in traffic.streams:
        exporter = (f"127.0.0.{1 + stream.index}", 40_000 + stream.index)
        for datagram in stream.datagrams:
            result = decode_datagram(datagram.payload, exporter, cache, 0.0)
            assert not result.errors
            assert len(result.flows) == datagram.flows
            flows += datagram.flows
    assert flows >= 3 * 12 * min(RECORDS_PER_DATAGRAM[protocol], 14)
    assert all(len(d.payload) <= 1_500 for s in traffic.streams for d in s.datagrams)
    if protocol in ("v9", "ipfix"):  # templates first, then refreshed every 5 data datagrams
        assert [d.flows == 0 for d in traffic.streams[0].datagrams[:7]] == [True, *[False] * 5, True]


def test_template_datagrams_define_distinct_templates() -> None:
    cache = TemplateCache()
    for number, datagrams in enumerate(template_datagrams(250, exporters=5)):
        for payload in datagrams:
            decode_datagram(payload, (f"127.0.1.{number + 1}", 9_000), cache, 0.0)
    assert len(cache) == 250


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_bench_end_to_end_against_flowd_run(tmp_path: Path) -> None:
    """Two rates, 2 s each, one worker: the JSON and the PNG come out and are sane."""
    code = main(
        [
            "--protocols", "v9",
            "--workers", "1",
            "--rates", "150,300",
            "--duration", "2",
            "--settle", "10",
            "--exporters", "4",
            "--pool", "8",
            "--senders", "1",
            "--templates", "200",
            "--drain-timeout", "20",
            "--output", str(tmp_path),
        ]
    )  # fmt: skip
    assert code == 0
    result = orjson.loads((tmp_path / "bench.json").read_bytes())
    assert result["meta"]["rmem_max"] > 0
    (summary,) = result["results"]
    assert (summary["collector"], summary["protocol"], summary["workers"]) == ("flowd", "v9", 1)
    assert len(summary["trials"]) == 2
    for trial in summary["trials"]:
        assert 0 < trial["delivered_flows"] <= trial["sent_flows"]
        assert trial["delivered_fps"] <= trial["offered_fps"] * 1.0001
        assert trial["cpu_s"] > 0
    assert summary["zero_loss_fps"] > 0
    assert 0 < summary["rss_at_zero_loss_mb"] <= summary["rss_search_peak_mb"]
    for trial in summary["trials"]:  # the workers' own account of where their time went
        assert set(trial["stage_s"]) == {"receive", "decode", "enrich", "serialise", "sink"}
        assert 0 < sum(trial["stage_s"].values()) <= trial["cpu_s"] * 1.5 + 1  # wall time: waits count too
    assert sum(summary["stage_share"].values()) == pytest.approx(1.0, abs=0.01)
    assert result["memory"]["templates_known"] == 200
    rates = {round(trial["target_dps"]) for trial in summary["trials"] if trial["zero_loss"]}
    assert result["memory"]["target_dps"] == max(rates)  # below the goal rate: the zero-loss one
    assert 0 < result["memory"]["achieved_dps"] < result["memory"]["goal_dps"]
    (memory_goal,) = [goal for goal in result["goals"] if goal["goal"].startswith("RSS per worker")]
    assert memory_goal["status"] == "unproven"  # not run at the goal rate
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("raw_fields", [[], ["netflow.tcp_control_bits", "sflow.*"], ["*"]])
def test_bench_runs_flowd_with_the_raw_fields_asked_for(raw_fields: list[str]) -> None:
    """`flowd bench --raw-fields` reaches the benchmarked flowd's configuration as it was given."""
    collector = FlowdCollector(1, raw_fields=raw_fields)
    try:
        assert load_settings(collector.config, {}).settings.output.raw_fields == raw_fields
    finally:
        collector.stop()


def test_memory_trial_runs_at_the_goal_rate_or_below() -> None:
    """The memory goal's terms: the goal rate (as this traffic's datagrams), or the worker's
    zero-loss rate when it does not reach the goal."""
    traffic = build_traffic("v9", exporters=2, datagrams_per_exporter=6)
    goal_dps = GOALS_FPS["v9"] / traffic.mean_flows_per_datagram
    assert memory_trial_rate(traffic, goal_dps * 1.3) == pytest.approx(goal_dps)
    assert memory_trial_rate(traffic, goal_dps * 0.7) == pytest.approx(goal_dps * 0.7)


BENCHMARK_FILES = [
    "test_bench_decode.py",
    "test_bench_enrich.py",
    "test_bench_sflow.py",
    "test_bench_sink.py",
    "test_bench_pipeline.py",
]


@pytest.mark.parametrize("name", BENCHMARK_FILES)
def test_benchmarks_run_as_plain_tests(name: str) -> None:
    """Each pytest-benchmark file once, timing disabled (the benchmarks are then plain tests)."""
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable", f"benchmarks/{name}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]


FORKING_PEER = """
import os, signal, socket, sys, time
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped by the kernel: their CPU never reaches cutime
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.recv(2048)
for _ in range(3):  # a writer per cache purge, as pmacct's print plugin forks them
    pid = os.fork()
    if pid == 0:
        end = time.process_time() + 0.15
        while time.process_time() < end:
            pass
        os._exit(0)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
time.sleep(60)
"""


def one_datagram_trial(peer: PeerCollector) -> Delivery:
    """Start `peer`, send it one v9 datagram as a trial, and stop it: what it delivered."""
    peer.start()
    try:
        host, port = peer.begin("v9")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"x", (host, port))
        return peer.finish(SendResult(datagrams=1, flows=1, packets=1), timeout_s=20)
    finally:
        peer.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_peer_cpu_includes_short_lived_writer_children(tmp_path: Path) -> None:
    """A peer's CPU counts the children it forks and the kernel reaps between two samples
    (pmacct's cache writers): they did the serialising, and two samples never saw them."""
    script = tmp_path / "peer.py"
    script.write_text(FORKING_PEER)
    preset = PeerPreset(f"{sys.executable} {script} {{host}} {{port}}", ("v9",), "echo 1")
    delivery = one_datagram_trial(PeerCollector("forking", preset))
    assert delivery.delivered_flows == 1
    assert delivery.cpu_s >= 0.8 * 3 * 0.15


def test_cpu_watch_counts_a_child_that_came_and_went() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, time\n"
            "time.sleep(0.3)\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    end = time.process_time() + 0.3\n"
            "    while time.process_time() < end: pass\n"
            "    os._exit(0)\n"
            "os.waitpid(pid, 0)\n"
            "time.sleep(0.3)\n",
        ]
    )
    try:
        watch = CpuWatch([child.pid]).start()
        child.wait(timeout=20)
        assert watch.stop() >= 0.25
    finally:
        child.kill()
        child.wait()


def test_a_search_that_ran_out_of_trials_is_reported_as_a_lower_bound() -> None:
    """Two trials, both passing, far below the capacity (or a bracket far wider than the
    resolution): the zero-loss figure is where the trials ran out, and the report says so."""
    from flowd.bench.report import summary, table

    doubling = SearchResult(
        "fake", "v9", 1, search_zero_loss(fake_trial(1e6, []), start_dps=1_000, max_dps=1e7, max_trials=2)
    )
    row = summary(doubling)
    assert row["zero_loss_dps"] == 2_000
    assert (row["converged"], row["sender_limited"], row["max_rate_reached"]) == (False, False, False)
    assert "2,000?" in table([doubling])

    wide = SearchResult(
        "fake", "v9", 1, search_zero_loss(fake_trial(5_000, []), start_dps=1_000, max_dps=1e7, max_trials=4), 0.1
    )
    row = summary(wide)
    assert (row["zero_loss_dps"], row["first_loss_dps"], row["bracket"], row["converged"]) == (4_000, 8_000, 0.5, False)

    narrow = SearchResult(
        "fake", "v9", 1, search_zero_loss(fake_trial(7_300, []), start_dps=1_000, max_dps=1e7, max_trials=20), 0.1
    )
    assert summary(narrow)["converged"] and "?" not in table([narrow]).splitlines()[2]


def test_a_sender_that_fails_marks_the_trial_as_failed() -> None:
    """A sender that dies after sending some datagrams reported nothing, so the others' counts
    alone were taken as what was sent and a collector could pass having lost its share."""
    from flowd.bench.sender import replay
    from flowd.bench.traffic import Datagram, ExporterStream, Traffic

    good = ExporterStream(0, [Datagram(b"ok", 1, 1)])
    broken = ExporterStream(1, [Datagram(b"ok", 1, 1), Datagram("not bytes", 1, 1)])  # type: ignore[arg-type]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sent = replay(
            Traffic("v5", [good, broken]), sink.getsockname(), rate_dps=200, duration_s=0.1, max_datagrams=20, senders=2
        )
    assert sent.datagrams > 0
    assert sent.errors > 0
