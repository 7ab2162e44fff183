"""What the kernel knows about a collector: CPU time and memory of its processes
(/proc/<pid>/stat, /proc/<pid>/status) and the drops and queue of its UDP sockets
(/proc/net/udp{,6}: the `drops` column, matched by local port, since a collector we did not
write cannot hand us SO_RXQ_OVFL counts)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC_NET_UDP = ("/proc/net/udp", "/proc/net/udp6")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def parent_of(pid: int) -> int | None:
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    return int(stat.rpartition(")")[2].split()[1])


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = parent_of(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        if _read(f"/proc/{pid}/stat") is None:
            continue
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def process_group(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (a peer started in its own session: pmacct's
    plugins outlive their core process by the time it takes them to write out)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            if stat is None:
                continue
            fields = stat.rpartition(")")[2].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its own threads, not its children)."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_bytes(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in bytes; (0, 0) when it is gone."""
    status = _read(f"/proc/{pid}/status")
    values = {"VmRSS:": 0, "VmHWM:": 0}
    for line in (status or "").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in values:
            values[parts[0]] = int(parts[1]) * 1024
    return values["VmRSS:"], values["VmHWM:"]


@dataclass(slots=True)
class ProcessSample:
    cpu_s: dict[int, float]
    rss: dict[int, int]
    hwm: dict[int, int]

    @property
    def total_cpu_s(self) -> float:
        return sum(self.cpu_s.values())


def sample_processes(pids: Iterable[int]) -> ProcessSample:
    sample = ProcessSample({}, {}, {})
    for pid in pids:
        sample.cpu_s[pid] = cpu_seconds(pid)
        sample.rss[pid], sample.hwm[pid] = memory_bytes(pid)
    return sample


def cpu_between(before: ProcessSample, after: ProcessSample) -> float:
    """CPU used between two samples by the processes of `after` (new ones count from zero)."""
    return sum(max(0.0, cpu - before.cpu_s.get(pid, 0.0)) for pid, cpu in after.cpu_s.items())


@dataclass(slots=True)
class SocketState:
    sockets: int = 0
    rx_queue_bytes: int = 0
    drops: int = 0


def udp_sockets(port: int, paths: Iterable[str] = PROC_NET_UDP) -> SocketState:
    """Every UDP socket bound to local `port` (SO_REUSEPORT groups have several)."""
    state = SocketState()
    for path in paths:
        for line in (_read(path) or "").splitlines()[1:]:
            columns = line.split()
            if len(columns) < 13:
                continue
            try:
                if int(columns[1].rpartition(":")[2], 16) != port:
                    continue
                state.rx_queue_bytes += int(columns[4].partition(":")[2], 16)
                state.drops += int(columns[12])
            except ValueError:
                continue
            state.sockets += 1
    return state


def loadavg() -> tuple[float, float, float]:
    text = _read("/proc/loadavg") or "0 0 0"
    one, five, fifteen = (float(v) for v in text.split()[:3])
    return one, five, fifteen


def rmem_max() -> int:
    text = _read("/proc/sys/net/core/rmem_max")
    return int(text) if text else 0
