"""The harness's outputs: a terminal table, a JSON file and a PNG plot (matplotlib, Agg)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from flowd.bench.search import SearchResult, Trial

MB = 1024 * 1024


def trial_dict(trial: Trial) -> dict[str, Any]:
    data = asdict(trial)
    data.update(
        loss_fraction=round(trial.loss_fraction, 6),
        cpu_s_per_million_flows=round(trial.cpu_s_per_million, 3),
        flows_per_cpu_s=round(trial.flows_per_cpu_s),
        sender_limited=trial.sender_limited,
    )
    return data


def summary(result: SearchResult) -> dict[str, Any]:
    best = result.best
    return {
        "collector": result.collector,
        "protocol": result.protocol,
        "workers": result.workers,
        "zero_loss_dps": round(best.offered_dps) if best else 0,
        "zero_loss_fps": round(best.delivered_fps) if best else 0,
        "cpu_s_per_million_flows": round(best.cpu_s_per_million, 3) if best else None,
        "flows_per_cpu_s": round(best.flows_per_cpu_s) if best else None,
        "rss_at_zero_loss_mb": round(best.rss_total_bytes / MB, 1) if best else None,
        "rss_search_peak_mb": round(max((t.rss_total_bytes for t in result.trials), default=0) / MB, 1),
        "sender_limited": bool(best and best.sender_limited),
        "max_rate_reached": bool(best and "reached --max-rate" in best.note),
        "first_loss_dps": round(result.first_loss.target_dps) if result.first_loss else None,
        "bracket": round(result.bracket, 3) if result.bracket is not None else None,
        "converged": result.converged,
        "stage_share": stage_share(best) if best else {},
        "trials": [trial_dict(t) for t in result.trials],
    }


STAGES = ("receive", "decode", "enrich", "serialise", "sink")
"""flowd's worker stages, in pipeline order (`flowd_stage_seconds`)."""


def stage_share(trial: Trial) -> dict[str, float]:
    """Each stage's share of the time flowd's workers spent in all of them during the trial."""
    busy = sum(trial.stage_s.values())
    if busy <= 0:
        return {}
    ordered = [s for s in STAGES if s in trial.stage_s] + sorted(set(trial.stage_s) - set(STAGES))
    return {stage: round(trial.stage_s[stage] / busy, 3) for stage in ordered}


def ratios(results: list[SearchResult]) -> list[dict[str, Any]]:
    """flowd (each worker count) against every peer on the same protocol, same run."""
    out = []
    for ours in (r for r in results if r.collector == "flowd"):
        mine = ours.best
        for peer in (r for r in results if r.collector != "flowd" and r.protocol == ours.protocol):
            theirs = peer.best
            if mine is None or theirs is None:
                continue
            out.append(
                {
                    "protocol": ours.protocol,
                    "flowd_workers": ours.workers,
                    "peer": peer.collector,
                    "zero_loss_fps_ratio": round(mine.delivered_fps / theirs.delivered_fps, 3),
                    "flows_per_cpu_s_ratio": round(mine.flows_per_cpu_s / theirs.flows_per_cpu_s, 3)
                    if theirs.flows_per_cpu_s
                    else None,
                    "peer_sender_limited": theirs.sender_limited,
                    "flowd_sender_limited": mine.sender_limited,
                    "flowd_converged": ours.converged,
                    "peer_converged": peer.converged,
                }
            )
    return out


def table(results: list[SearchResult]) -> str:
    header = (
        f"{'collector':<9} {'proto':<6} {'wk':>2} {'zero-loss dgram/s':>17} {'flows/s':>10} "
        f"{'CPU s/Mflow':>11} {'flows/CPU-s':>11} {'RSS MB':>7} {'search peak MB':>14} {'trials':>6}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        row = summary(result)
        mark = "+" if row["sender_limited"] or row["max_rate_reached"] else " " if row["converged"] else "?"
        cpu = f"{row['cpu_s_per_million_flows']:.2f}" if row["cpu_s_per_million_flows"] is not None else "-"
        per_cpu = f"{row['flows_per_cpu_s']:,}" if row["flows_per_cpu_s"] is not None else "-"
        rss = f"{row['rss_at_zero_loss_mb']:.1f}" if row["rss_at_zero_loss_mb"] is not None else "-"
        lines.append(
            f"{result.collector:<9} {result.protocol:<6} {result.workers:>2} {row['zero_loss_dps']:>16,}{mark} "
            f"{row['zero_loss_fps']:>10,} {cpu:>11} {per_cpu:>11} {rss:>7} {row['rss_search_peak_mb']:>14.1f} "
            f"{len(result.trials):>6}"
        )
    lines.append("+ the senders could not offer more, or --max-rate was reached: the collector's limit is higher")
    lines.append(
        "? the trials ran out before the best pass came within --resolution of a loss: a lower bound "
        "(bracket in bench.json)"
    )
    lines.append(
        "RSS MB: the collector's processes together (flowd's supervisor and workers, pmacct's core and "
        "plugins), the most during the zero-loss trial; search peak MB: the same, the most in any trial "
        "of the search, overload ones included"
    )
    shares = [
        (result, stage_share(result.best) if result.best else {}) for result in results if result.collector == "flowd"
    ]
    if any(share for _, share in shares):
        lines.append("")
        lines.append("flowd worker time by stage at the zero-loss rate (flowd_stage_seconds)")
        for result, share in shares:
            if share:
                parts = "  ".join(f"{stage} {fraction:.0%}" for stage, fraction in share.items())
                lines.append(f"  {result.protocol:<6} x{result.workers}  {parts}")
    compared = ratios(results)
    if compared:
        lines.append("")
        lines.append("flowd / peer (same run): zero-loss flows/s ratio, flows per CPU-second ratio")
        for item in compared:
            per_cpu = item["flows_per_cpu_s_ratio"]
            lines.append(
                f"  {item['protocol']:<6} flowd x{item['flowd_workers']} / {item['peer']:<8} "
                f"{item['zero_loss_fps_ratio']:>6.2f}   {per_cpu if per_cpu is not None else '-':>6}"
            )
    return "\n".join(lines)


def write_json(path: Path, meta: dict[str, Any], results: list[SearchResult], extra: dict[str, Any]) -> None:
    document = {"meta": meta, "results": [summary(r) for r in results], "ratios": ratios(results), **extra}
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def _label(result: SearchResult) -> str:
    return f"{result.collector} x{result.workers}" if result.collector == "flowd" else result.collector


def write_plot(path: Path, results: list[SearchResult]) -> None:
    """Per protocol: offered vs delivered flows/s (top) and loss (bottom), one series per
    collector and worker count; failed trials are crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = list(dict.fromkeys(r.protocol for r in results)) or ["none"]
    labels = list(dict.fromkeys(_label(r) for r in results))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {label: palette[i % len(palette)] for i, label in enumerate(labels)}
    figure, axes = plt.subplots(2, len(protocols), figsize=(4.5 * len(protocols), 7), squeeze=False)
    for column, protocol in enumerate(protocols):
        top, bottom = axes[0][column], axes[1][column]
        limit = 1.0
        for result in (r for r in results if r.protocol == protocol):
            trials = sorted(result.trials, key=lambda t: t.offered_fps)
            if not trials:
                continue
            label = _label(result)
            color = colors[label]
            offered = [t.offered_fps for t in trials]
            top.plot(offered, [max(1.0, t.delivered_fps) for t in trials], "-", alpha=0.6, label=label, color=color)
            for t in trials:
                top.plot(t.offered_fps, max(1.0, t.delivered_fps), "o" if t.zero_loss else "x", color=color)
            bottom.plot(offered, [100 * t.loss_fraction for t in trials], "o-", color=color, label=label)
            limit = max(limit, *offered)
        top.plot([limit / 1000, limit], [limit / 1000, limit], ":", color="grey", linewidth=1)
        top.set_xscale("log")
        top.set_yscale("log")
        bottom.set_xscale("log")
        top.set_title(protocol)
        top.set_xlabel("offered flows/s")
        top.set_ylabel("delivered flows/s")
        top.legend(fontsize=7)
        bottom.set_xlabel("offered flows/s")
        bottom.set_ylabel("loss %")
        bottom.set_ylim(bottom=-1)
        for axis in (top, bottom):
            axis.grid(alpha=0.3, which="both")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
