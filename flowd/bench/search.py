"""The zero-loss search (RFC 2544 section 26.1 style): offer a rate for a fixed time, count what
came out, and bisect between the highest rate that lost nothing and the lowest that lost
something. Pure: the trial is an injected function, so the policy is tested without sockets.

The search doubles the rate from `start` until a trial loses (or `max_rate`, or the senders
cannot offer more), then bisects geometrically until the bracket is within `resolution`
(0.1: the answer is within 10% of the true zero-loss rate) or `max_trials` ran out. With an
explicit list of rates it runs exactly those (the quick CI mode).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

SENDER_SHORTFALL = 0.9
"""A trial that offered less than 90% of the target rate hit the senders' limit, not the collector's."""


@dataclass(slots=True)
class Trial:
    collector: str
    protocol: str
    workers: int
    target_dps: float
    offered_dps: float
    """Datagrams per second actually sent (the senders' achieved rate)."""
    offered_fps: float
    delivered_fps: float
    sent_flows: int
    delivered_flows: float
    zero_loss: bool
    kernel_drops: int = 0
    ingress_drops: int = 0
    cpu_s: float = 0.0
    """CPU seconds of all the collector's processes, and of every process they started (pmacct's
    cache writers), between trial start and drained (a peer: and written out at its stop)."""
    rss_total_bytes: int = 0
    """The collector's RSS summed over its processes (flowd's supervisor and workers, pmacct's
    core and plugins), the highest sampled during the trial: this trial's, not the search's."""
    received_datagrams: int | None = None
    """flowd: datagrams its listeners received in the trial (`flowd_datagrams_received`); None
    for a peer, which does not say."""
    sender_cpu_s: float = 0.0
    duration_s: float = 0.0
    drain_s: float = 0.0
    loadavg: float = 0.0
    note: str = ""
    stage_s: dict[str, float] = field(default_factory=dict)
    """flowd: seconds its workers spent in each stage (receive, decode, enrich, serialise, sink)."""

    @property
    def loss_fraction(self) -> float:
        return max(0.0, 1.0 - self.delivered_flows / self.sent_flows) if self.sent_flows else 0.0

    @property
    def cpu_s_per_million(self) -> float:
        return self.cpu_s / self.delivered_flows * 1e6 if self.delivered_flows else 0.0

    @property
    def flows_per_cpu_s(self) -> float:
        return self.delivered_flows / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def received_dps(self) -> float | None:
        """Datagrams received per second of sending: the rate the collector took, as far as it says."""
        if self.received_datagrams is None or self.duration_s <= 0:
            return None
        return self.received_datagrams / self.duration_s

    @property
    def sender_limited(self) -> bool:
        return self.offered_dps < SENDER_SHORTFALL * self.target_dps


@dataclass(slots=True)
class SearchResult:
    collector: str
    protocol: str
    workers: int
    trials: list[Trial] = field(default_factory=list)
    resolution: float = 0.1
    """The search's --resolution: how close the best pass and the first loss had to get."""

    @property
    def best(self) -> Trial | None:
        """The zero-loss trial with the highest delivered flow rate."""
        passing = [t for t in self.trials if t.zero_loss]
        return max(passing, key=lambda t: t.delivered_fps) if passing else None

    @property
    def first_loss(self) -> Trial | None:
        """The lossy trial at the lowest offered rate above the best zero-loss one."""
        best = self.best
        floor = best.target_dps if best is not None else 0.0
        failing = [t for t in self.trials if not t.zero_loss and t.target_dps > floor]
        return min(failing, key=lambda t: t.target_dps) if failing else None

    @property
    def bracket(self) -> float | None:
        """(first loss - best pass) / first loss in offered rate; None without both."""
        best, loss = self.best, self.first_loss
        if best is None or loss is None:
            return None
        return (loss.target_dps - best.target_dps) / loss.target_dps

    @property
    def converged(self) -> bool:
        """The best pass is within `resolution` of a loss: the zero-loss rate is the collector's
        limit. False when the trials ran out first (the figure is then only a lower bound, as far
        below the limit as the bracket is wide) or nothing was lost at all."""
        bracket = self.bracket
        return bracket is not None and bracket <= self.resolution + 1e-9


def search_zero_loss(
    run_trial: Callable[[float], Trial],
    *,
    start_dps: float,
    max_dps: float,
    max_trials: int = 10,
    resolution: float = 0.1,
    min_dps: float = 10.0,
    rates: Sequence[float] = (),
) -> list[Trial]:
    trials: list[Trial] = []
    if rates:
        return [run_trial(rate) for rate in rates]
    passed = 0.0
    failed: float | None = None
    rate = min(start_dps, max_dps)
    for _ in range(max_trials):
        trial = run_trial(rate)
        trials.append(trial)
        if trial.zero_loss:
            passed = max(passed, rate)
            if trial.sender_limited:
                break  # the collector kept up with all the senders could offer
        else:
            failed = rate if failed is None else min(failed, rate)
        if failed is None:
            if rate >= max_dps:
                trial.note = (trial.note + "; " if trial.note else "") + "reached --max-rate"
                break
            rate = min(max_dps, rate * 2)
            continue
        if passed and (failed - passed) / failed <= resolution:
            break
        rate = math.sqrt(passed * failed) if passed else failed / 4
        if rate < min_dps:
            break
    return trials
