"""IPFIX over TCP under back-pressure, with real connections on 127.0.0.1: a full ingress queue
pauses reading, and the paused connections are resumed one a poll once it has room."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from flowd.server import tcp
from flowd.server.ingress import IngressQueue
from flowd.server.metrics import WorkerStats
from tests.ports import free_port

MESSAGE = struct.pack("!HHIII", 10, 16, 0, 0, 0)
"""An IPFIX message of a header only."""


async def test_a_paused_connection_that_closes_leaves_the_paused_list_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: a connection that closed while paused stayed in the server's paused list
    until a resume poll came to it. Here three connections pause on a full queue and one of them
    is closed by flowd (a peer's own close is not seen while reading is paused): at the connection
    cap it is evicted, idle, for a new peer. It must be gone from the list once its connection_lost
    has run, and the two others then resume and read their next messages."""
    monkeypatch.setattr(tcp, "MAX_TCP_CONNECTIONS", 3)
    monkeypatch.setattr(tcp, "IDLE_BEFORE_EVICTION_S", 0.0)
    queue = IngressQueue(batch_size=4, capacity=4)
    for _ in range(4):
        queue.append(MESSAGE, ("192.0.2.2", 2055), 0.0)
    assert queue.full
    server = tcp.IpfixTcpServer("ipfix/tcp", queue, WorkerStats(), str)
    all_paused, lost, all_read = asyncio.Event(), asyncio.Event(), asyncio.Event()
    wait_for_room, ended, append = server.wait_for_room, server.ended, queue.append

    def waiting(connection: tcp.IpfixTcpReceiver) -> None:
        wait_for_room(connection)
        if len(server._paused) == 3:
            all_paused.set()

    def ending(peer: tuple[str, int]) -> None:
        ended(peer)
        lost.set()

    def appending(*args: Any, **kwargs: Any) -> bool:
        appended = append(*args, **kwargs)
        if queue.accepted == 4 + 3 + 2:  # the filling, a message from each, then the live two's second
            all_read.set()
        return appended

    monkeypatch.setattr(server, "wait_for_room", waiting)
    monkeypatch.setattr(server, "ended", ending)
    monkeypatch.setattr(queue, "append", appending)
    port = free_port()
    await server.start(f"127.0.0.1:{port}", None)
    clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    try:
        for _, writer in clients:
            writer.write(MESSAGE)
            await writer.drain()
        await asyncio.wait_for(all_paused.wait(), 5)
        for _, writer in clients:  # waits in the socket until its connection reads again
            writer.write(MESSAGE)
            await writer.drain()
        paused = list(server._paused)
        clients.append(await asyncio.open_connection("127.0.0.1", port))  # past the cap: the idlest goes
        await asyncio.wait_for(lost.wait(), 5)
        (evicted,) = [connection for connection in paused if connection not in server.connections]
        live = [connection for connection in paused if connection is not evicted]
        assert evicted not in server._paused and list(server._paused) == live

        assert evicted.resume() is False  # closed: nothing to resume, and the others wait as they were
        assert list(server._paused) == live

        resumed: list[tuple[tcp.IpfixTcpReceiver, bool]] = []
        resume = tcp.IpfixTcpReceiver.resume

        def resuming(connection: tcp.IpfixTcpReceiver) -> bool:
            result = resume(connection)
            resumed.append((connection, result))
            return result

        monkeypatch.setattr(tcp.IpfixTcpReceiver, "resume", resuming)
        while queue.pop() is not None:  # the decoder takes all that waits
            pass
        await asyncio.wait_for(all_read.wait(), 5)
        assert resumed == [(connection, True) for connection in live]
        assert not server._paused
    finally:
        for _, writer in clients:
            writer.close()
        await server.stop_receiving()
