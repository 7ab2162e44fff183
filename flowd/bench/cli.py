"""`flowd bench`: build the traffic, run the zero-loss search against flowd (1, 2 and N workers)
and the peers asked for, measure flowd's memory with many templates, write the table, the
JSON result and the plot. The lead wires `add_bench_arguments` and `run_bench` into flowd.cli.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowd.bench import IPV6_SHARE, PROTOCOLS, procfs
from flowd.bench.collectors import PEERS, SINKS, Collector, Delivery, FlowdCollector, PeerCollector, PeerPreset
from flowd.bench.report import MB, ratios, table, write_json, write_plot
from flowd.bench.search import SearchResult, Trial, search_zero_loss
from flowd.bench.sender import SendResult, replay, source_address

if TYPE_CHECKING:
    from flowd.bench.traffic import Traffic

GOALS_FPS = {"v9": 300_000, "ipfix": 300_000, "v5": 500_000, "sflow": 150_000}
"""Issue 9: zero-loss flows (sFlow: samples) per second, one worker."""
GOAL_SCALING = 0.8
GOAL_RSS_MB = 150
JSON_PEERS = ("nfacctd", "sfacctd")
"""The peers that turn flows into JSON documents, as flowd does: the issue's per-core lead is over these
(nfcapd's binary files are the C ceiling, reported beside them)."""
WARMUP_S = 1.0


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--protocols", default=",".join(PROTOCOLS), help="comma-separated: v5,v9,ipfix,sflow")
    add("--workers", default="1,2,N", help="flowd worker counts to measure; N = CPU count (default 1,2,N)")
    add("--no-flowd", action="store_true", help="measure only the peers")
    add(
        "--sink",
        default="files",
        choices=SINKS,
        help="flowd's output: NDJSON files on tmpfs (as the peers write theirs), or discard: "
        "_bulk bodies built and dropped (the pipeline without storage)",
    )
    add(
        "--raw-fields",
        default="*",
        help="flowd's output.raw_fields, comma-separated (default *: every raw field; an empty string: none, "
        "as ElastiFlow's KEEP_ORIG_DATA=false)",
    )
    add("--peer", action="append", default=[], choices=sorted(PEERS), help="also measure this peer (repeatable)")
    add("--target", help="HOST:PORT of an external collector started by --peer-cmd")
    add("--peer-cmd", help="command starting the collector at --target ({host} {port} {outdir} {config})")
    add("--peer-count", help="shell command printing the flows it delivered ({outdir}); default from the binary")
    add("--peer-protocols", default="v5,v9,ipfix", help="protocols the --peer-cmd collector takes")
    add("--duration", type=float, default=8.0, help="seconds per trial (default 8)")
    add("--max-datagrams", type=int, default=2_000_000, help="datagrams per trial at most")
    add("--start-rate", type=float, default=2_000.0, help="first offered rate, datagrams/s")
    add("--max-rate", type=float, default=200_000.0, help="highest offered rate, datagrams/s")
    add("--max-trials", type=int, default=8, help="trials per search")
    add("--resolution", type=float, default=0.1, help="stop when the bracket is within this fraction")
    add("--rates", default="", help="comma-separated datagram rates to run instead of a search")
    add("--senders", type=int, default=2, help="sender processes")
    add("--exporters", type=int, default=16, help="exporters (source addresses/ports, each with its own templates)")
    add("--pool", type=int, default=64, help="distinct data datagrams per exporter (replayed in a cycle)")
    add("--template-refresh", type=int, default=20, help="v9/IPFIX: resend templates every N data datagrams")
    add("--ipv6-share", type=float, default=IPV6_SHARE, help="share of v9/IPFIX datagrams and sFlow samples in IPv6")
    add("--sflow-routing", action="store_true", help="sFlow samples carry a BGP router's router and gateway records")
    add(
        "--templates",
        type=int,
        default=10_000,
        help="templates a fresh worker holds in the memory goal's trial (0: skip it)",
    )
    add(
        "--settle",
        type=float,
        default=2.5,
        help="a trial passes only if everything came out within this many seconds after sending ended "
        "(RFC 2544 waits 2 s; flowd's metrics lag up to 1 s more). Queues can hide an overload for at most "
        "settle/duration of the trial, so keep duration >> settle",
    )
    add("--drain-timeout", type=float, default=30.0, help="seconds to wait for a collector to finish a trial")
    add("--seed", type=int, default=1)
    add("--output", default="", help="directory for bench.json and bench.png (default ./flowd-bench-<time>)")


def _worker_counts(text: str) -> list[int]:
    cpus = os.cpu_count() or 1
    counts = [cpus if item.upper() == "N" else int(item) for item in _csv(text)]
    return list(dict.fromkeys(max(1, c) for c in counts))


def _peer_from_args(args: argparse.Namespace) -> PeerCollector:
    host, _, port = args.target.rpartition(":")
    host = host.strip("[]")
    binary = Path(shlex.split(args.peer_cmd)[0]).name
    count = args.peer_count or {"nfcapd": "nfdump-stat", "nfacctd": "pmacct-packets", "sfacctd": "pmacct-packets"}.get(
        binary, ""
    )
    if not count:
        raise SystemExit("flowd bench: --peer-count is needed for a collector other than nfcapd/nfacctd/sfacctd")
    preset = PeerPreset(args.peer_cmd, tuple(_csv(args.peer_protocols)), count)
    local = host in ("127.0.0.1", "::1", "localhost")
    return PeerCollector(binary, preset, host=host, port=int(port), external=not local)


def trial_of(
    collector: Collector, protocol: str, rate: float, sent: SendResult, delivery: Delivery, settle_s: float
) -> Trial:
    """One trial's figures from what the senders sent and what the collector delivered."""
    elapsed = sent.elapsed_s if sent.elapsed_s > 0 else float("inf")  # senders that failed sent nothing
    return Trial(
        collector=collector.name,
        protocol=protocol,
        workers=collector.workers,
        target_dps=rate,
        offered_dps=sent.datagrams / elapsed,
        offered_fps=sent.flows / elapsed,
        delivered_fps=delivery.delivered_flows / elapsed,
        sent_flows=sent.flows,
        delivered_flows=delivery.delivered_flows,
        zero_loss=delivery.exact and sent.datagrams > 0 and sent.errors == 0 and delivery.drain_s <= settle_s,
        kernel_drops=delivery.kernel_drops,
        ingress_drops=delivery.ingress_drops,
        cpu_s=delivery.cpu_s,
        rss_total_bytes=delivery.rss_total_bytes,
        received_datagrams=delivery.received_datagrams,
        sender_cpu_s=sent.cpu_s,
        duration_s=sent.elapsed_s,
        drain_s=delivery.drain_s,
        loadavg=procfs.loadavg()[0],
        note=delivery.note,
        stage_s=delivery.stage_s,
    )


def _trial(collector: Collector, traffic: Traffic, rate: float, args: argparse.Namespace) -> Trial:
    host, port = collector.begin(traffic.protocol)
    sent = replay(
        traffic,
        (host, port),
        rate_dps=rate,
        duration_s=args.duration,
        max_datagrams=args.max_datagrams,
        senders=args.senders,
    )
    trial = trial_of(collector, traffic.protocol, rate, sent, collector.finish(sent, args.drain_timeout), args.settle)
    mark = "ok  " if trial.zero_loss else "LOSS"
    print(
        f"  {collector.name} x{collector.workers} {traffic.protocol:<5} {mark} "
        f"offered {trial.offered_dps:>9,.0f} dgram/s "
        f"{trial.offered_fps:>10,.0f} flows/s  delivered {trial.delivered_fps:>10,.0f}  "
        f"loss {100 * trial.loss_fraction:6.2f}%  kernel drops {trial.kernel_drops}  ingress drops "
        f"{trial.ingress_drops}  drained {trial.drain_s:.1f}s  CPU {trial.cpu_s:.1f}s  load {trial.loadavg:.2f}",
        flush=True,
    )
    return trial


def _search(
    collector: Collector, traffic: Traffic, args: argparse.Namespace, rates: list[float], log: Callable[[str], None]
) -> SearchResult:
    log(f"{collector.name} x{collector.workers} {traffic.protocol}:")
    trials = search_zero_loss(
        lambda rate: _trial(collector, traffic, rate, args),
        start_dps=args.start_rate,
        max_dps=args.max_rate,
        max_trials=args.max_trials,
        resolution=args.resolution,
        rates=rates,
    )
    return SearchResult(collector.name, traffic.protocol, collector.workers, trials, args.resolution)


def measure_template_memory(collector: FlowdCollector, count: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """Send `count` distinct v9 templates over 10 exporters; the workers' RSS once they are known."""
    from flowd.bench.traffic import template_datagrams  # scapy: imported only when a run starts

    exporters = template_datagrams(count, exporters=10)
    before = {pid: procfs.memory_bytes(pid)[0] for pid in collector.worker_pids()}
    known_before = collector.metrics().get("flowd_templates_known", 0.0)
    target = (collector.host, collector.port("v9"))
    for number, datagrams in enumerate(exporters):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((source_address(collector.host, 900 + number), 0))
            for index, payload in enumerate(datagrams):
                sock.sendto(payload, target)
                if index % 20 == 19:
                    time.sleep(0.002)
    deadline = time.monotonic() + timeout_s
    known = 0.0
    while time.monotonic() < deadline:
        known = collector.metrics().get("flowd_templates_known", 0.0) - known_before
        if known >= count:
            break
        time.sleep(0.5)
    after = {pid: procfs.memory_bytes(pid) for pid in collector.worker_pids()}
    rss = {str(pid): round(value[0] / MB, 1) for pid, value in after.items()}
    return {
        "templates_sent": count,
        "templates_known": int(known),
        "worker_rss_before_mb": {str(pid): round(value / MB, 1) for pid, value in before.items()},
        "worker_rss_mb": rss,
        "worker_peak_rss_mb": {str(pid): round(value[1] / MB, 1) for pid, value in after.items()},
        "max_worker_rss_mb": max(rss.values(), default=0.0),
    }


def goal_rate_dps(traffic: Traffic) -> float:
    """The protocol's goal in flows/s as this traffic's datagrams per second."""
    return GOALS_FPS.get(traffic.protocol, 0) / max(traffic.mean_flows_per_datagram, 1e-9)


def memory_trial_rate(traffic: Traffic, zero_loss_dps: float) -> float:
    """Datagrams/s for the memory trial: the goal rate, or the zero-loss rate when the worker
    does not reach the goal."""
    goal_dps = goal_rate_dps(traffic)
    return goal_dps if 0 < goal_dps < zero_loss_dps else zero_loss_dps


def _memory_at_rate(
    traffic: dict[str, Traffic], results: list[SearchResult], args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, Any]:
    """RSS of a fresh worker holding `--templates` templates while it runs one trial at the goal
    rate (the protocol's flows/s goal in its datagrams), or at its zero-loss rate when that is
    lower, peak included, with the rate it received: the goal is judged at the goal rate only.
    The search's worker is not used: its overload trials filled the ingress queue on purpose."""
    protocol = "v9" if "v9" in traffic else next(iter(traffic))
    best = next((r.best for r in results if r.collector == "flowd" and r.workers == 1 and r.protocol == protocol), None)
    rate = memory_trial_rate(traffic[protocol], best.target_dps if best is not None else args.start_rate)
    collector = FlowdCollector(1, sink=args.sink, raw_fields=_csv(args.raw_fields))
    try:
        collector.start()
        memory = measure_template_memory(collector, args.templates)
        trial = _trial(collector, traffic[protocol], rate, args)
        peaks = {str(pid): round(procfs.memory_bytes(pid)[1] / MB, 1) for pid in collector.worker_pids()}
        current = {str(pid): round(procfs.memory_bytes(pid)[0] / MB, 1) for pid in collector.worker_pids()}
    finally:
        collector.stop()
    received_dps = trial.received_dps
    memory.update(
        {
            "protocol": protocol,
            "target_dps": round(rate),
            "goal_dps": round(goal_rate_dps(traffic[protocol])),
            "offered_dps": round(trial.offered_dps),
            "achieved_dps": round(received_dps) if received_dps is not None else None,
            "trial_zero_loss": trial.zero_loss,
            "worker_rss_after_trial_mb": current,
            "worker_peak_rss_mb": peaks,
            "max_worker_rss_mb": max(peaks.values(), default=0.0),
        }
    )
    log(
        f"flowd x1 with {memory['templates_known']:,} templates at {rate:,.0f} {protocol} datagrams/s "
        f"(received {memory['achieved_dps'] or 0:,}/s, goal {memory['goal_dps']:,}/s; "
        f"{'zero loss' if trial.zero_loss else 'with loss'}): worker peak RSS {peaks} MB"
    )
    return memory


MET, MISSED, UNPROVEN = "met", "missed", "unproven"
PACING_TOLERANCE = 0.99
"""The share of the goal rate a memory trial must receive to count as at it: the senders pace to
within a fraction of a percent of their target, on either side."""
EXACT, LOWER, UPPER = "exact", "lower bound", "upper bound"
"""What a figure is: a converged search's zero-loss figure is the collector's limit (within
--resolution); one whose trials ran out, or that the senders or --max-rate stopped, a lower bound."""


def figure_kind(result: SearchResult) -> str:
    return EXACT if result.converged else LOWER


def ratio_kind(numerator: str, denominator: str) -> str | None:
    """What a ratio of two search figures is: over an exact denominator, what the numerator is;
    an exact numerator over a lower bound, an upper bound; two lower bounds, nothing (None)."""
    if denominator == EXACT:
        return numerator
    return UPPER if numerator == EXACT else None


def judge(value: float, goal: float, kind: str | None, *, strictly: bool = False) -> str:
    """Whether `value` >= `goal` (> if `strictly`) is proven: a lower bound proves a goal met but
    never missed, an upper bound missed but never met; the other side is unproven."""
    if kind is None:
        return UNPROVEN
    if value > goal or (value == goal and not strictly):
        return MET if kind in (EXACT, LOWER) else UNPROVEN
    return MISSED if kind in (EXACT, UPPER) else UNPROVEN


def _rate_goal(protocol: str, goal: float, one: SearchResult) -> dict[str, Any]:
    best = one.best
    measured = best.delivered_fps if best else 0.0
    status = judge(measured, goal, figure_kind(one))
    loss = one.first_loss
    if status == UNPROVEN and loss is not None and loss.offered_fps <= goal:
        status = MISSED  # a loss at or below the goal rate bounds the limit from above
    return {
        "goal": f"{protocol}: one worker >= {goal:,} flows/s with zero loss",
        "measured_fps": round(measured),
        "flows_per_cpu_s": round(best.flows_per_cpu_s) if best else 0,
        "converged": one.converged,
        "status": status,
    }


def evaluate_goals(results: list[SearchResult], memory: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each goal with the figures it turns on, whether their searches converged, and its status:
    met or missed when the figures prove it, unproven when a figure that is only a bound (its
    search did not converge) lies on the side that cannot decide it."""
    goals: list[dict[str, Any]] = []
    flowd = {(r.protocol, r.workers): r for r in results if r.collector == "flowd"}
    for protocol, goal in GOALS_FPS.items():
        one = flowd.get((protocol, 1))
        if one is None:
            continue
        goals.append(_rate_goal(protocol, goal, one))
        if one.best is None:
            continue
        for (other, workers), more in flowd.items():
            if other != protocol or workers == 1:
                continue
            scaling = (more.best.delivered_fps if more.best else 0.0) / (workers * one.best.delivered_fps)
            goals.append(
                {
                    "goal": f"{protocol}: {workers} workers >= {GOAL_SCALING} x {workers} x one worker",
                    "measured_scaling": round(scaling, 3),
                    "converged": more.converged and one.converged,
                    "status": judge(scaling, GOAL_SCALING, ratio_kind(figure_kind(more), figure_kind(one))),
                }
            )
    for compared in ratios(results):
        if compared["flowd_workers"] != 1 or compared["peer"] not in JSON_PEERS:
            continue
        per_cpu = compared["flows_per_cpu_s_ratio"]
        converged = compared["flowd_converged"] and compared["peer_converged"]
        # Work per CPU-second below a collector's limit bounds nothing about it at its limit.
        goals.append(
            {
                "goal": f"{compared['protocol']}: one worker does more per CPU-second than {compared['peer']}",
                "flows_per_cpu_s_ratio": per_cpu,
                "zero_loss_fps_ratio": compared["zero_loss_fps_ratio"],
                "converged": converged,
                "status": judge(per_cpu, 1.0, EXACT if converged else None, strictly=True)
                if per_cpu is not None
                else UNPROVEN,
            }
        )
    if memory:
        met = (
            memory["max_worker_rss_mb"] < GOAL_RSS_MB
            and memory["templates_known"] >= memory["templates_sent"]
            and memory["trial_zero_loss"]
        )
        achieved = memory["achieved_dps"]
        offered = memory.get("offered_dps", achieved)
        status = MET if met else MISSED
        # Paced by what the senders offered: datagrams the kernel or flowd dropped are a miss at
        # the goal rate, not a trial below it.
        if offered is None or offered < PACING_TOLERANCE * memory["goal_dps"]:
            status = UNPROVEN
        goals.append(
            {
                "goal": f"RSS per worker < {GOAL_RSS_MB} MB with {memory['templates_sent']:,} templates "
                f"at the goal rate ({memory['goal_dps']:,} {memory['protocol']} datagrams/s; peak)",
                "measured_mb": memory["max_worker_rss_mb"],
                "target_dps": memory["target_dps"],
                "offered_dps": offered,
                "achieved_dps": achieved,
                # A trial below the goal rate (the worker's limit, or the senders') proves nothing at it.
                "status": status,
            }
        )
    return goals


def run_bench(args: argparse.Namespace) -> int:
    """The `flowd bench` command; 0 when every search ran (goals are reported, not enforced)."""
    protocols = _csv(args.protocols)
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        print(f"flowd bench: unknown protocol(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    if args.target and not args.peer_cmd:
        print("flowd bench: --target needs --peer-cmd (the command that starts that collector)", file=sys.stderr)
        return 2
    rates = [float(r) for r in _csv(args.rates)]
    output = Path(args.output or f"flowd-bench-{time.strftime('%Y%m%d-%H%M%S')}")
    output.mkdir(parents=True, exist_ok=True)

    def log(text: str) -> None:
        print(text, flush=True)

    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "rmem_max": procfs.rmem_max(),
        "loadavg_before": procfs.loadavg(),
        "args": {k: v for k, v in vars(args).items() if not callable(v)},
    }
    from flowd.bench.traffic import build_traffic  # scapy: imported only when a run starts

    log(f"net.core.rmem_max = {meta['rmem_max']:,} bytes; load average {meta['loadavg_before']}; {meta['cpus']} CPUs")
    traffic: dict[str, Traffic] = {}
    for protocol in protocols:
        built = build_traffic(
            protocol,
            exporters=args.exporters,
            datagrams_per_exporter=args.pool,
            template_refresh=args.template_refresh,
            seed=args.seed,
            ipv6_share=args.ipv6_share,
            router_records=args.sflow_routing,
        )
        traffic[protocol] = built
        log(
            f"built {protocol}: {args.exporters} exporters x {len(built.streams[0].datagrams)} datagrams, "
            f"{built.mean_datagram_bytes:,.0f} bytes and {built.mean_flows_per_datagram:.1f} flows per datagram "
            f"on average, in {built.build_s:.1f}s"
        )
    results: list[SearchResult] = []
    memory: dict[str, Any] | None = None
    if not args.no_flowd and not args.target:
        for workers in _worker_counts(args.workers):
            collector = FlowdCollector(workers, sink=args.sink, raw_fields=_csv(args.raw_fields))
            try:
                collector.start()
                for protocol in protocols:
                    warmup = replay(
                        traffic[protocol],
                        (collector.host, collector.port(protocol)),
                        rate_dps=args.start_rate,
                        duration_s=min(WARMUP_S, args.duration),
                        max_datagrams=args.max_datagrams,
                        senders=args.senders,
                    )
                    collector.begin(protocol)
                    collector.finish(warmup, args.drain_timeout)
                    results.append(_search(collector, traffic[protocol], args, rates, log))
                if workers == 1:
                    after_search = {
                        str(pid): round(procfs.memory_bytes(pid)[1] / MB, 1) for pid in collector.worker_pids()
                    }
            finally:
                collector.stop()
            if workers == 1 and args.templates > 0:
                memory = _memory_at_rate(traffic, results, args, log)
                memory["worker_peak_rss_after_search_mb"] = after_search
    peers: list[PeerCollector] = [PeerCollector(name, PEERS[name]) for name in args.peer]
    if args.target:
        peers.append(_peer_from_args(args))
    for peer in peers:
        peer.start()
        for protocol in protocols:
            if peer.supports(protocol):
                results.append(_search(peer, traffic[protocol], args, rates, log))
        peer.stop()

    meta["loadavg_after"] = procfs.loadavg()
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    goals = evaluate_goals(results, memory)
    json_path, plot_path = output / "bench.json", output / "bench.png"
    write_json(json_path, meta, results, {"memory": memory, "goals": goals})
    write_plot(plot_path, results)
    log("")
    log(table(results))
    if goals:
        log("")
        for goal in goals:
            figures = ", ".join(f"{k} {v}" for k, v in goal.items() if k not in ("goal", "status"))
            log(f"  [{goal['status'] if goal['status'] != MISSED else 'MISSED'}] {goal['goal']}: {figures}")
        if any(goal["status"] == UNPROVEN for goal in goals):
            log("  unproven: a figure it turns on is only a bound (its search did not converge: ? or + above)")
    log(f"\nload average {meta['loadavg_after']}; results in {json_path} and {plot_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowd bench", description="pps harness: zero-loss rates of flowd and peers")
    add_bench_arguments(parser)
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
