"""Paced replay of pre-built datagrams from several sender processes.

Each sender process owns a share of the exporters, one UDP socket per exporter (on loopback
each bound to its own 127.0.0.x address, so collectors see distinct exporter addresses), and
sends their datagrams round-robin at `rate / senders` datagrams per second. Pacing is by a
schedule, not by sleeping per datagram: at any moment a sender may be at most `burst`
datagrams ahead of the schedule, which keeps bursts far below a 4 MiB receive buffer.
Every run is bounded twice: by a datagram count and by wall time (the schedule's length plus
a margin, in case a sender cannot keep up; the result then shows the lower rate achieved).
Sockets are plain `socket.sendto`; scapy only built the bytes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import multiprocessing
import os
import socket
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowd.bench.traffic import Traffic

SEND_BUFFER_BYTES = 1 << 20
BURST_DATAGRAMS = 32
OVERRUN_MARGIN = 1.5
"""A sender stops at 1.5 x the scheduled duration + 1 s even if it has not sent its share."""
START_DELAY_S = 0.2


@dataclass(slots=True)
class SendResult:
    datagrams: int = 0
    flows: int = 0
    packets: int = 0
    bytes: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    """CPU seconds the sender processes used (they share the machine with the collector)."""

    @property
    def rate_dps(self) -> float:
        return self.datagrams / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def flow_rate(self) -> float:
        return self.flows / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add(self, other: SendResult) -> None:
        self.datagrams += other.datagrams
        self.flows += other.flows
        self.packets += other.packets
        self.bytes += other.bytes
        self.errors += other.errors
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)
        self.cpu_s += other.cpu_s


def source_address(target_host: str, exporter: int) -> str:
    """127.0.0.x for a loopback IPv4 target (one address per exporter), else the wildcard."""
    address = ipaddress.ip_address(target_host)
    if address.version == 4 and address.is_loopback:
        return f"127.0.{1 + exporter // 250}.{1 + exporter % 250}"
    return "::" if address.version == 6 else "0.0.0.0"


def _open_socket(target_host: str, exporter: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in target_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    sock.bind((source_address(target_host, exporter), 0))
    return sock


def _sender(
    traffic: Traffic,
    share: list[int],
    target: tuple[str, int],
    rate: float,
    count: int,
    start_at: float,
    connection: Connection,
) -> None:
    """One sender process: exporters `share` of `traffic`, `count` datagrams at `rate` per second."""
    result = SendResult(errors=1)  # what it reports if it fails: it may have sent datagrams it did not count
    sockets = [_open_socket(target[0], traffic.streams[i].index) for i in share]
    try:
        streams = [traffic.streams[i].datagrams for i in share]
        cycle = max(len(s) for s in streams)
        # One cycle, round-robin over this sender's exporters, as (socket, payload, flows, packets).
        schedule = [
            (sockets[k], s[n % len(s)].payload, s[n % len(s)].flows, s[n % len(s)].packets)
            for n in range(cycle)
            for k, s in enumerate(streams)
        ]
        cpu_before = time.process_time()
        while time.time() < start_at:
            time.sleep(min(0.01, max(0.0, start_at - time.time())))
        started = time.perf_counter()
        deadline = started + (count / rate) * OVERRUN_MARGIN + 1.0
        sent = flows = packets = nbytes = errors = 0
        position = 0
        length = len(schedule)
        while sent < count:
            now = time.perf_counter()
            if now > deadline:
                break
            due = min(count, int((now - started) * rate) + BURST_DATAGRAMS)
            if sent >= due:
                time.sleep(max(0.0, min(0.002, (sent - BURST_DATAGRAMS + 1) / rate - (now - started))))
                continue
            while sent < due:
                sock, payload, record_count, packet_count = schedule[position]
                position = position + 1 if position + 1 < length else 0
                try:
                    sock.sendto(payload, target)
                except OSError:
                    errors += 1
                    sent += 1
                    continue
                sent += 1
                flows += record_count
                packets += packet_count
                nbytes += len(payload)
        result = SendResult(
            datagrams=sent - errors,
            flows=flows,
            packets=packets,
            bytes=nbytes,
            errors=errors,
            elapsed_s=time.perf_counter() - started,
            cpu_s=time.process_time() - cpu_before,
        )
    finally:
        for sock in sockets:
            sock.close()
        connection.send(asdict(result))
        connection.close()


def replay(
    traffic: Traffic,
    target: tuple[str, int],
    *,
    rate_dps: float,
    duration_s: float,
    max_datagrams: int,
    senders: int = 2,
) -> SendResult:
    """Send min(rate x duration, max_datagrams) datagrams at `rate_dps`; the totals actually sent."""
    total = max(1, min(max_datagrams, int(rate_dps * duration_s)))
    senders = max(1, min(senders, len(traffic.streams)))
    context = multiprocessing.get_context("fork")  # the children share the built traffic
    start_at = time.time() + START_DELAY_S
    processes: list[tuple[Any, Connection]] = []
    for k in range(senders):
        share = list(range(k, len(traffic.streams), senders))
        count = total // senders + (1 if k < total % senders else 0)
        receiver, child = context.Pipe(duplex=False)
        process = context.Process(
            target=_sender,
            args=(traffic, share, target, rate_dps / senders, count, start_at, child),
            name=f"flowd-bench-sender-{k}",
            daemon=True,
        )
        process.start()
        child.close()
        processes.append((process, receiver))
    result = SendResult()
    limit = START_DELAY_S + duration_s * OVERRUN_MARGIN + 15.0
    for process, receiver in processes:
        reported = False
        if receiver.poll(limit):
            with contextlib.suppress(EOFError):
                result.add(SendResult(**receiver.recv()))
                reported = True
        if not reported:  # a sender that died or hung sent what nobody counted: the trial cannot pass
            result.errors += 1
        process.join(timeout=5)
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, 9)
            process.join(timeout=5)
    return result
