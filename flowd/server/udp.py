"""UDP listeners: thin asyncio adapters that append each datagram to the ingress queue.

Every worker binds every configured address with SO_REUSEPORT, so the kernel spreads exporters
over workers by 4-tuple hash and one exporter's templates and data meet in one process.
`DrainingReceiver` does only what must happen per datagram: the allowlist check, two counter
increments and the append. Kernel drops are read from /proc/net/udp{,6} (the `drops` column of
our sockets, found by inode): datagrams are read with recvfrom, so SO_RXQ_OVFL ancillary data
never reaches us.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from flowd.config_values import split_address
from flowd.decode.memo import MEMO_CLEARS
from flowd.server.ingress import IngressQueue

log = logging.getLogger("flowd.udp")

MAX_ALLOWLIST_VERDICTS = 65_536
PROC_NET_UDP = ("/proc/net/udp", "/proc/net/udp6")


class ExporterAllowlist:
    """Exporter networks allowed to send; verdicts are cached per address (bounded)."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._verdicts: dict[str, bool] = {}

    def __call__(self, address: str) -> bool:
        verdict = self._verdicts.get(address)
        if verdict is None:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                verdict = False
            else:
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                verdict = any(ip.version == n.version and ip in n for n in self.networks)
            if len(self._verdicts) >= MAX_ALLOWLIST_VERDICTS:
                self._verdicts.clear()
                MEMO_CLEARS["allowlist_verdicts"] += 1
            self._verdicts[address] = verdict
        return verdict


@dataclass(slots=True)
class ListenerStats:
    """Plain counters of one listener, copied into the worker's metrics once a second."""

    name: str
    datagrams: int = 0
    bytes: int = 0
    ingress_drops: int = 0
    allowlist_drops: int = 0
    receive_buffer_bytes: int = 0
    receive_seconds: float = 0.0
    """Time spent reading the socket (`flowd_stage_seconds{stage="receive"}`)."""
    inodes: list[int] = field(default_factory=list)


MAX_DATAGRAM_BYTES = 65_535
READS_PER_WAKE = 256
"""Datagrams read each time the socket turns readable, at most (then the loop runs other work)."""
FINAL_DRAIN_S = 2.0
"""At shutdown, the longest a socket's queued datagrams are read for (a 32 MiB buffer of small
datagrams takes well under a second)."""


class DrainingReceiver:
    """Reads what waits on a UDP socket each time it turns readable, up to `READS_PER_WAKE`.

    asyncio's datagram endpoint (libuv's UDP handle under uvloop) reads at most 32 datagrams per
    loop turn, so a worker whose pipeline hands the loop a turn every few milliseconds could
    receive only some ten thousand datagrams a second however idle the socket's reader was; the
    kernel then drops. Draining the socket per wake ties the receive rate to the datagrams
    waiting instead of to the number of loop turns.
    """

    def __init__(
        self, sock: socket.socket, ingress: IngressQueue, stats: ListenerStats, allowlist: ExporterAllowlist | None
    ) -> None:
        self.sock = sock
        self.ingress = ingress
        self.stats = stats
        self.allowlist = allowlist
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._read)

    def _read(self) -> None:
        started = time.perf_counter()
        self._drain()
        self.stats.receive_seconds += time.perf_counter() - started

    def _drain(self, force: bool = False) -> bool:
        """Read up to `READS_PER_WAKE` datagrams; True when the socket had no more."""
        receive = self.sock.recvfrom
        append = self.ingress.append
        allowlist = self.allowlist
        stats = self.stats
        received_at = time.time()  # one clock read per wake: these datagrams all waited for it
        for _ in range(READS_PER_WAKE):
            try:
                data, address = receive(MAX_DATAGRAM_BYTES)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as error:  # an ICMP error queued on the socket: reported once, read past
                log.debug("%s: %s", stats.name, error)
                continue
            if allowlist is not None and not allowlist(address[0]):
                stats.allowlist_drops += 1
                continue
            stats.datagrams += 1
            stats.bytes += len(data)
            if not append(data, address, received_at, force=force):
                stats.ingress_drops += 1
        return False

    def finish(self) -> None:
        """Stop reading, after taking what the kernel already queued on the socket (closing it
        would discard that, counted nowhere). It goes into the ingress queue even past its
        capacity: the socket's buffer bounds it, and the drain decodes it."""
        if self.sock.fileno() < 0:
            return
        self._loop.remove_reader(self.sock.fileno())
        deadline = time.monotonic() + FINAL_DRAIN_S
        while not self._drain(force=True) and time.monotonic() < deadline:
            pass

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.finish()
            self.sock.close()


def bind_socket(host: str, port: int, kind: int, *, reuse_port: bool = True) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT (IPv6 sockets are v6-only, so 0.0.0.0 and
    :: can share a port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def set_receive_buffer(sock: socket.socket, requested: int) -> int:
    """Ask for `requested` bytes of SO_RCVBUF and return what the kernel granted (Linux reports
    double the usable size, and clamps the request to net.core.rmem_max)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, requested)
    except OSError as error:
        log.warning("SO_RCVBUF %d refused: %s", requested, error)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return granted // 2 if os.uname().sysname == "Linux" else granted


async def open_udp_listener(
    name: str,
    address: str,
    ingress: IngressQueue,
    *,
    receive_buffer_bytes: int,
    allowlist: ExporterAllowlist | None,
    warn_buffer: bool = True,
) -> tuple[DrainingReceiver, ListenerStats]:
    host, port = split_address(address, name)
    sock = bind_socket(host, port, socket.SOCK_DGRAM)
    granted = set_receive_buffer(sock, receive_buffer_bytes)
    if granted < receive_buffer_bytes and warn_buffer:
        log.warning(
            "%s: asked for a %d-byte receive buffer, the kernel granted %d; raise net.core.rmem_max "
            "(sysctl -w net.core.rmem_max=%d) to absorb bursts",
            name,
            receive_buffer_bytes,
            granted,
            receive_buffer_bytes,
        )
    stats = ListenerStats(name, receive_buffer_bytes=granted, inodes=[os.fstat(sock.fileno()).st_ino])
    return DrainingReceiver(sock, ingress, stats, allowlist), stats


def parse_proc_net_udp(text: str) -> dict[int, int]:
    """/proc/net/udp{,6} -> {socket inode: drops}; the header names the columns."""
    drops: dict[int, int] = {}
    for line in text.splitlines()[1:]:
        columns = line.split()
        if len(columns) < 13:
            continue
        try:
            drops[int(columns[9])] = int(columns[12])
        except ValueError:
            continue
    return drops


def read_kernel_drops(paths: Iterable[str] = PROC_NET_UDP) -> dict[int, int]:
    drops: dict[int, int] = {}
    for path in paths:
        try:
            with open(path, encoding="ascii") as handle:
                drops.update(parse_proc_net_udp(handle.read()))
        except OSError:
            continue
    return drops
