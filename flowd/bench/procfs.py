"""What the kernel knows about a collector: CPU time and memory of its processes
(/proc/<pid>/stat, /proc/<pid>/status) and the drops and queue of its UDP sockets
(/proc/net/udp{,6}: the `drops` column of the sockets its processes hold, since a collector we
did not write cannot hand us SO_RXQ_OVFL counts)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
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
    return 0.0 if stat is None else _stat_cpu_seconds(stat)


def _stat_cpu_seconds(stat: str) -> float:
    """utime + stime from the text of /proc/<pid>/stat (fields after the command's last ')')."""
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _stat_rss_bytes(stat: str) -> int:
    """rss (field 24, in pages: what VmRSS says) from the text of /proc/<pid>/stat."""
    return int(stat.rpartition(")")[2].split()[21]) * PAGE_BYTES


def memory_bytes(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in bytes; (0, 0) when it is gone."""
    status = _read(f"/proc/{pid}/status")
    values = {"VmRSS:": 0, "VmHWM:": 0}
    for line in (status or "").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in values:
            values[parts[0]] = int(parts[1]) * 1024
    return values["VmRSS:"], values["VmHWM:"]


def children_of(pid: int) -> list[int]:
    """The live children of `pid` (those of each of its threads: /proc/<pid>/task/<tid>/children)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in threads:
        found.extend(int(child) for child in (_read(f"/proc/{pid}/task/{tid}/children") or "").split())
    return found


class CpuWatch:
    """CPU seconds used by some processes and every process they start, between `start()` and
    `stop()`, short-lived ones included.

    Two samples of utime + stime miss a child that is born and gone between them, and such a
    child's time reaches its parent's cutime only if the parent waits for it: pmacct's plugins
    fork a writer for each cache purge (the JSON is built and written there) and leave the
    reaping to the kernel, so their CPU appeared nowhere. A thread re-reads the processes and
    their children every `interval_s` and keeps each one's last reading; a process that exits
    counts with its last reading (at most one interval of its life is missed).

    From the same reads it keeps the collector's memory: the highest sum of the RSS of the
    processes it was given (flowd's supervisor and workers, pmacct's core and plugins), not of
    their children: pmacct's writers are forks sharing their parent's pages, which a sum would
    count twice."""

    def __init__(self, pids: Iterable[int], interval_s: float = 0.02) -> None:
        self._roots = list(pids)
        self.interval_s = interval_s
        self._baseline: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._banked = 0.0
        self._rss_peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self) -> None:
        with self._lock:
            stats = {pid: stat for pid in self._last if (stat := _read(f"/proc/{pid}/stat")) is not None}
            pending = list(stats)
            while pending:  # each process's stat is read once a poll, its children's too
                found = [child for pid in pending for child in children_of(pid) if child not in stats]
                pending = []
                for child in found:
                    stat = _read(f"/proc/{child}/stat")
                    if stat is not None:
                        stats[child] = stat
                        pending.append(child)
            rss = sum(_stat_rss_bytes(stats[pid]) for pid in self._roots if pid in stats)
            self._rss_peak = max(self._rss_peak, rss)
            for pid, stat in stats.items():
                cpu = _stat_cpu_seconds(stat)
                before = self._last.get(pid)
                if before is not None and cpu + 1.0 / CLOCK_TICKS < before:  # a reused pid: a new process
                    self._banked += max(0.0, before - self._baseline.pop(pid, 0.0))
                    before = None
                self._last[pid] = cpu if before is None else max(cpu, before)

    def start(self) -> CpuWatch:
        self._baseline = {pid: cpu_seconds(pid) for pid in self._roots if _read(f"/proc/{pid}/stat") is not None}
        self._last = dict(self._baseline)
        self._poll()
        self._thread = threading.Thread(target=self._run, name="flowd-bench-cpu-watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._poll()

    def cpu_s(self) -> float:
        """CPU seconds used since `start()` so far."""
        with self._lock:
            return self._banked + sum(max(0.0, cpu - self._baseline.get(pid, 0.0)) for pid, cpu in self._last.items())

    def rss_peak_bytes(self) -> int:
        """The highest total RSS of the given processes seen since `start()`."""
        with self._lock:
            return self._rss_peak

    def stop(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._poll()
        return self.cpu_s()


@dataclass(slots=True)
class SocketState:
    sockets: int = 0
    rx_queue_bytes: int = 0
    drops: int = 0


def socket_inodes(pids: Iterable[int], proc: str = "/proc") -> frozenset[int] | None:
    """Inodes of the sockets `pids` hold open (/proc/<pid>/fd/N -> "socket:[inode]"). None when
    a process's fds cannot be read (another user's process, hidepid) or no process was read:
    the caller then matches sockets by port alone. A process gone since it was listed is skipped."""
    inodes: set[int] = set()
    read_any = False
    for pid in pids:
        fds = f"{proc}/{pid}/fd"
        try:
            names = os.listdir(fds)
        except FileNotFoundError:
            continue
        except OSError:
            return None
        read_any = True
        for name in names:
            try:
                target = os.readlink(f"{fds}/{name}")
            except OSError:
                continue  # closed since the listing
            if target.startswith("socket:[") and target.endswith("]"):
                inodes.add(int(target[8:-1]))
    return frozenset(inodes) if read_any else None


def udp_sockets(port: int, paths: Iterable[str] = PROC_NET_UDP, *, inodes: frozenset[int] | None = None) -> SocketState:
    """The UDP sockets bound to local `port` (SO_REUSEPORT groups have several) that are among
    `inodes`, the collector's own; every socket on the port when `inodes` is None. By port alone,
    another socket on the same port (another address, IPv6 beside IPv4) would be charged its drops."""
    state = SocketState()
    for path in paths:
        for line in (_read(path) or "").splitlines()[1:]:
            columns = line.split()
            if len(columns) < 13:
                continue
            try:
                if int(columns[1].rpartition(":")[2], 16) != port:
                    continue
                if inodes is not None and int(columns[9]) not in inodes:
                    continue
                state.rx_queue_bytes += int(columns[4].partition(":")[2], 16)
                state.drops += int(columns[12])
            except ValueError:
                continue
            state.sockets += 1
    return state


def collector_sockets(port: int, pids: Iterable[int]) -> SocketState:
    """The UDP sockets on `port` that processes `pids` hold (by port alone if their fds are unreadable)."""
    return udp_sockets(port, inodes=socket_inodes(pids))


def loadavg() -> tuple[float, float, float]:
    text = _read("/proc/loadavg") or "0 0 0"
    one, five, fifteen = (float(v) for v in text.split()[:3])
    return one, five, fifteen


def rmem_max() -> int:
    text = _read("/proc/sys/net/core/rmem_max")
    return int(text) if text else 0
