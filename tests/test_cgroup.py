"""The CPU quota `listen.workers = 0` follows, read from fake cgroup trees built in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowd.cgroup import available_cpus, cgroup_cpu_quota

SERVICE = "/system.slice/flowd.service"


def proc_cgroup(tmp_path: Path, text: str) -> Path:
    """A /proc/self/cgroup with `text` in it."""
    path = tmp_path / "proc-self-cgroup"
    path.write_text(text)
    return path


def cgroup(root: Path, path: str, cpu_max: str | None = None) -> Path:
    """A v2 cgroup directory under `root`, with a `cpu.max` when one is given."""
    directory = root / path.lstrip("/")
    directory.mkdir(parents=True, exist_ok=True)
    if cpu_max is not None:
        (directory / "cpu.max").write_text(cpu_max)
    return directory


def test_systemd_cpu_quota_on_the_service_cgroup_is_read(tmp_path: Path) -> None:
    """`CPUQuota=50%` on flowd.service without a cgroup namespace: the limit is in the service's
    cgroup, not at the mount root, so a 64-core host would have started 64 workers."""
    root = tmp_path / "cgroup"
    cgroup(root, "/", "max 100000\n")
    cgroup(root, SERVICE, "50000 100000\n")
    proc = proc_cgroup(tmp_path, f"0::{SERVICE}\n")
    assert cgroup_cpu_quota(root, proc) == 0.5
    assert available_cpus(root, proc) == 1


def test_a_limit_on_an_ancestor_slice_bounds_the_service(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    cgroup(root, "/system.slice", "200000 100000\n")
    cgroup(root, SERVICE, "max 100000\n")
    assert cgroup_cpu_quota(root, proc_cgroup(tmp_path, f"0::{SERVICE}\n")) == 2.0


def test_the_tightest_level_wins_even_at_the_root(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    cgroup(root, "/", "150000 100000\n")
    cgroup(root, "/system.slice", "400000 100000\n")
    cgroup(root, SERVICE, "300000 100000\n")
    assert cgroup_cpu_quota(root, proc_cgroup(tmp_path, f"0::{SERVICE}\n")) == 1.5


def test_max_everywhere_is_no_limit(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    for level in ("/", "/system.slice", SERVICE):
        cgroup(root, level, "max 100000\n")
    proc = proc_cgroup(tmp_path, f"0::{SERVICE}\n")
    assert cgroup_cpu_quota(root, proc) is None
    assert available_cpus(root, proc) == len(os.sched_getaffinity(0))


def test_cgroup_v1_cpu_controller_path_is_walked(tmp_path: Path) -> None:
    """v1 names the cpu controller's cgroup on its own line; its files are under the cpu mount."""
    root = tmp_path / "cgroup"
    service = root / "cpu,cpuacct" / SERVICE.lstrip("/")
    service.mkdir(parents=True)
    (service / "cpu.cfs_quota_us").write_text("150000\n")
    (service / "cpu.cfs_period_us").write_text("100000\n")
    (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")  # the hierarchy's root: unlimited
    (root / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    text = f"12:memory:/elsewhere\n4:cpu,cpuacct:{SERVICE}\n1:name=systemd:{SERVICE}\n0::/\n"
    assert cgroup_cpu_quota(root, proc_cgroup(tmp_path, text)) == 1.5


@pytest.mark.parametrize(
    "content",
    ["", "max\n", "garbage here\n", "50000 100000 7\n", "-5 100000\n", "50000 0\n", f"{10**400} 1\n", "\xff\xfe\n"],
)
def test_odd_cpu_max_content_is_no_limit_from_that_level(tmp_path: Path, content: str) -> None:
    """Never an exception at start-up: a quota too large for a float once escaped the root's read."""
    root = tmp_path / "cgroup"
    cgroup(root, "/system.slice", "300000 100000\n")
    for level in ("/", SERVICE):
        (cgroup(root, level) / "cpu.max").write_bytes(content.encode("latin-1"))
    assert cgroup_cpu_quota(root, proc_cgroup(tmp_path, f"0::{SERVICE}\n")) == 3.0


@pytest.mark.parametrize(
    "proc_text",
    [None, "", "garbage\n", "0::relative/path\n", "0::/../../etc\n", "0::/system.slice/gone.service\n", "\xff\n"],
)
def test_missing_or_odd_proc_cgroup_falls_back_to_the_root(tmp_path: Path, proc_text: str | None) -> None:
    """The root level is still read, as it is in a container whose namespace makes it its own."""
    root = tmp_path / "cgroup"
    cgroup(root, "/", "250000 100000\n")
    proc = tmp_path / "no-such-proc-file"
    if proc_text is not None:
        proc.write_bytes(proc_text.encode("latin-1"))
    assert cgroup_cpu_quota(root, proc) == 2.5


def test_no_cgroup_files_at_all_is_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "absent", tmp_path / "absent-proc") is None
    assert cgroup_cpu_quota(tmp_path, proc_cgroup(tmp_path, f"0::{SERVICE}\n4:cpu:{SERVICE}\n")) is None


def test_a_directory_where_cpu_max_should_be_is_no_limit(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    (cgroup(root, SERVICE) / "cpu.max").mkdir()
    assert cgroup_cpu_quota(root, proc_cgroup(tmp_path, f"0::{SERVICE}\n")) is None
