"""IPFIX over TCP (RFC 7011 section 10.4): a stream of messages, each delimited by the Length
field of its 16-byte header. The exporter key is the peer address and port, so the template
rules are those of UDP with the session as the scope.

`IpfixStreamSplitter` is the pure part (bytes in, whole messages out); `IpfixTcpReceiver` is the
asyncio adapter. TCP is reliable, so a full ingress queue pauses reading (the exporter's send
window closes) instead of dropping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from typing import Any, cast

from flowd.config_values import split_address
from flowd.errors import DecodeError
from flowd.server.ingress import IngressQueue
from flowd.server.metrics import WorkerStats
from flowd.server.rate_limited_log import RateLimitedLog
from flowd.server.udp import bind_socket

log = logging.getLogger("flowd.tcp")

IPFIX_VERSION = 10
IPFIX_HEADER_BYTES = 16
MAX_TCP_CONNECTIONS = 1024
MAX_SESSIONS_REMEMBERED = 65_536
IDLE_BEFORE_EVICTION_S = 60.0
"""At the connection cap, a connection that brought no whole message for this long gives its place
to a new one (a peer that sends nothing, or a byte at a time, cannot lock exporters out)."""
KEEPALIVE_IDLE_S = 60
"""TCP keepalive: peers that vanished (power loss, no FIN) are found and their connections closed."""
RESUME_POLL_S = 0.005


class IpfixStreamSplitter:
    """Splits a TCP byte stream into IPFIX messages; raises DecodeError when framing is lost."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.lost: DecodeError | None = None
        """Set once framing is lost."""

    def feed(self, data: bytes) -> list[bytes]:
        """The whole messages the stream holds so far. When framing is lost, the messages before
        the bad header are returned first and the next call raises (nothing after it can be
        trusted)."""
        if self.lost is not None:
            raise self.lost
        self._buffer += data
        messages: list[bytes] = []
        buffer = self._buffer
        position = 0
        while len(buffer) - position >= 4:
            version = (buffer[position] << 8) | buffer[position + 1]
            length = (buffer[position + 2] << 8) | buffer[position + 3]
            # RFC 7011 section 3.1: version 10; the length counts the 16-byte header too.
            problem = ""
            if version != IPFIX_VERSION:
                problem = f"IPFIX stream: version {version} at a message boundary"
            elif length < IPFIX_HEADER_BYTES:
                problem = f"IPFIX stream: message length {length}"
            if problem:
                self.lost = DecodeError(problem, reason="bad_stream")
                if messages:
                    return messages
                raise self.lost
            if len(buffer) - position < length:
                break
            messages.append(bytes(buffer[position : position + length]))
            position += length
        if position:
            del buffer[:position]
        return messages

    @property
    def pending(self) -> int:
        return len(self._buffer)


class IpfixTcpReceiver(asyncio.Protocol):
    def __init__(self, server: IpfixTcpServer) -> None:
        self.server = server
        self.splitter = IpfixStreamSplitter()
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.last_message_at = 0.0
        """When the last whole message came (or the connection opened)."""
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        self.last_message_at = time.monotonic()
        _keep_alive(transport.get_extra_info("socket"))
        if not self.server.admit(self):
            transport.close()

    def data_received(self, data: bytes) -> None:
        server = self.server
        try:
            messages = self.splitter.feed(data)
        except DecodeError as error:
            server.stats.inc("flowd_decode_errors", (server.exporter_label(self.peer[0]), "ipfix", error.reason))
            server.warn.warning(
                f"tcp|{self.peer[0]}", f"IPFIX/TCP from {self.peer[0]}:{self.peer[1]}: {error}; closing"
            )
            if self.transport is not None:
                self.transport.close()
            return
        now = time.time()
        if messages:
            self.last_message_at = time.monotonic()
        for message in messages:
            server.listener_datagrams += 1
            server.listener_bytes += len(message)
            server.ingress.append(message, self.peer, now, force=True)
        if self.splitter.lost is not None:  # the messages before the bad header are in; now close
            self.data_received(b"")
            return
        if server.ingress.full and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
            server.wait_for_room(self)

    def resume(self) -> bool:
        """Read again (False when the connection has closed meanwhile)."""
        self._paused = False
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.resume_reading()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self.server.ended(self.peer)
        self.transport = None


def _keep_alive(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)


class IpfixTcpServer:
    """One listening socket and its connections; counts go to the worker's stats."""

    def __init__(self, name: str, ingress: IngressQueue, stats: WorkerStats, exporter_label: Any) -> None:
        self.name = name
        self.ingress = ingress
        self.stats = stats
        self.exporter_label = exporter_label
        self.warn = RateLimitedLog(log)
        self.connections: set[IpfixTcpReceiver] = set()
        self.ended_sessions: dict[tuple[str, int], float] = {}
        """Peer -> when its session ended: its templates are dropped once its messages are decoded."""
        self.listener_datagrams = 0
        self.listener_bytes = 0
        self.closing = False
        self._server: asyncio.Server | None = None
        self._paused: deque[IpfixTcpReceiver] = deque()
        """Connections waiting for room in the ingress queue, first paused first."""
        self._resuming: asyncio.TimerHandle | None = None

    async def start(self, address: str, allowlist: Any) -> None:
        host, port = split_address(address, self.name)
        sock = bind_socket(host, port, socket.SOCK_STREAM)
        self.allowlist = allowlist
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: IpfixTcpReceiver(self), sock=sock, backlog=128)

    def admit(self, connection: IpfixTcpReceiver) -> bool:
        if self.allowlist is not None and not self.allowlist(connection.peer[0]):
            self.stats.inc("flowd_allowlist_drops", (self.name,))
            return False
        if len(self.connections) >= MAX_TCP_CONNECTIONS:
            idlest = min(self.connections, key=lambda c: c.last_message_at)
            if time.monotonic() - idlest.last_message_at < IDLE_BEFORE_EVICTION_S:
                self.stats.inc("flowd_tcp_connections_refused", ("limit",))
                self.warn.warning("tcp|limit", f"{self.name}: {MAX_TCP_CONNECTIONS} connections open, refusing more")
                return False
            self.stats.inc("flowd_tcp_connections_refused", ("idle_evicted",))
            self.warn.warning("tcp|idle", f"{self.name}: closing idle {idlest.peer[0]}:{idlest.peer[1]} for a new peer")
            self.connections.discard(idlest)
            if idlest.transport is not None:
                idlest.transport.close()
        self.connections.add(connection)
        self.stats.inc("flowd_tcp_connections")
        return True

    def forget(self, connection: IpfixTcpReceiver) -> None:
        """`connection` has closed: it leaves the open set and the paused list at once, not
        when a resume poll comes to it (it and its unsplit bytes were kept until then)."""
        self.connections.discard(connection)
        with contextlib.suppress(ValueError):
            self._paused.remove(connection)

    def wait_for_room(self, connection: IpfixTcpReceiver) -> None:
        """`connection` stopped reading because the ingress queue is full."""
        self._paused.append(connection)
        if self._resuming is None:
            self._resuming = asyncio.get_running_loop().call_later(RESUME_POLL_S, self._resume_next)

    def _resume_next(self) -> None:
        """Let one paused connection read again once the queue has room, then the next a poll
        later. Each reading connection may queue one read's messages past the capacity (TCP is
        paused, never dropped), so resuming them all at once let the queue grow by up to 1,024
        reads (`force` in `IngressQueue.append`); one at a time keeps that to the few reading."""
        self._resuming = None
        if self.closing:
            self._paused.clear()
            return
        if not self.ingress.full:
            while self._paused and not self._paused.popleft().resume():
                pass  # closed while it waited
        if self._paused:
            self._resuming = asyncio.get_running_loop().call_later(RESUME_POLL_S, self._resume_next)

    def ended(self, peer: tuple[str, int]) -> None:
        if len(self.ended_sessions) >= MAX_SESSIONS_REMEMBERED:
            del self.ended_sessions[next(iter(self.ended_sessions))]
        self.ended_sessions[peer] = time.monotonic()

    def session_peers(self) -> set[tuple[str, int]]:
        """Peers of this run's sessions still holding state: open ones, and those ended but not yet
        forgotten (`take_ended`). At shutdown every session has ended, so all are here; data
        parked on them cannot meet a template after that (RFC 7011 section 8)."""
        return {connection.peer for connection in self.connections} | set(self.ended_sessions)

    def take_ended(self, before: float) -> set[tuple[str, int]]:
        """Peers whose session ended before `before` (their messages decoded by then) and that
        have not connected again from the same port."""
        open_peers = {connection.peer for connection in self.connections}
        taken = {peer for peer, at in self.ended_sessions.items() if at < before}
        for peer in taken:
            del self.ended_sessions[peer]
        return taken - open_peers

    async def stop_receiving(self) -> None:
        """Stop accepting and reading; messages already split stay queued for the drain."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
