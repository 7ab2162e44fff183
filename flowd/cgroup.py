"""The CPUs flowd may use, which `listen.workers = 0` starts one worker per: the process's CPU
affinity and its cgroup's CPU quota, neither of which `os.cpu_count` sees.

A quota may sit on flowd's own cgroup or on any ancestor: at the mount root in a container with
a cgroup namespace, on `system.slice/flowd.service` under systemd's `CPUQuota=`, on a slice above
it. The kernel enforces every level, so the tightest one is the limit. Reading is best effort: a
missing, unreadable or odd file is no limit from that level, never an error at start-up."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path, PurePosixPath

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
V1_CPU_MOUNTS = ("cpu", "cpu,cpuacct")
"""Where cgroup v1's cpu controller is mounted under the root (systemd; `cpu` is often a symlink)."""


def available_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """The CPUs this process may use: its affinity, and its cgroup CPU quota rounded up. A pod
    limited to 2 CPUs on a 64-core node would otherwise start 64 workers."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The smallest CPU quota, in CPUs, over this process's cgroup and its ancestors (v2 and v1
    hierarchies under `root`); None when no level sets one."""
    quotas = [quota for directory in cgroup_levels(root, proc_cgroup) if (quota := _level_quota(directory)) is not None]
    return min(quotas, default=None)


def cgroup_levels(root: Path, proc_cgroup: Path) -> list[Path]:
    """This process's cgroup directories, innermost first, down to each hierarchy's root. The
    roots are always there: in a cgroup namespace, or without /proc, they are the process's own."""
    v2_path, v1_path = _own_cgroup_paths(proc_cgroup)
    levels = _with_ancestors(root, v2_path)
    for mount in V1_CPU_MOUNTS:
        levels += _with_ancestors(root / mount, v1_path)
    return levels


def _own_cgroup_paths(proc_cgroup: Path) -> tuple[str, str]:
    """The v2 path (`0::/path`) and the v1 cpu controller's path (`N:cpu,cpuacct:/path`) from
    /proc/self/cgroup; `/` for a hierarchy it does not name or cannot be read."""
    v2_path = v1_path = "/"
    try:
        text = proc_cgroup.read_text()
    except (OSError, ValueError):
        return v2_path, v1_path
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, found, path = rest.partition(":")
        if not found:
            continue
        if hierarchy == "0" and not controllers:
            v2_path = path
        elif "cpu" in controllers.split(","):
            v1_path = path
    return v2_path, v1_path


def _with_ancestors(base: Path, cgroup_path: str) -> list[Path]:
    """`base/cgroup_path` and each parent up to `base`; just `base` for a path that is not a
    plain absolute one (nothing outside the hierarchy is read)."""
    path = PurePosixPath(cgroup_path)
    parts = path.parts[1:] if path.is_absolute() and ".." not in path.parts else ()
    return [base.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _level_quota(directory: Path) -> float | None:
    """CPUs' worth of time per period one cgroup allows: v2 `cpu.max` (`max` or `quota period`),
    v1 `cpu.cfs_quota_us` over `cpu.cfs_period_us` (-1 unlimited); None when unlimited or unread."""
    with contextlib.suppress(OSError, ValueError, ArithmeticError):
        quota, period = (directory / "cpu.max").read_text().split()
        return None if quota == "max" else _cpus(int(quota), int(period))
    with contextlib.suppress(OSError, ValueError, ArithmeticError):
        quota_us = int((directory / "cpu.cfs_quota_us").read_text())
        return _cpus(quota_us, int((directory / "cpu.cfs_period_us").read_text()))
    return None


def _cpus(quota: int, period: int) -> float | None:
    """Quota over period; None for the non-positive values that mean no limit (or are nonsense)."""
    return None if quota <= 0 or period <= 0 else quota / period
