"""IPv4 and IPv6 listeners on one port (the README's advice for exporters that send over IPv6)."""

from __future__ import annotations

import socket

import pytest

from flowd.server.udp import bind_socket
from tests.loopback import ipv6_loopback


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv4_and_ipv6_wildcards_share_a_port_each_taking_its_own_family() -> None:
    """Without SO_REUSEPORT the second bind fails unless the IPv6 socket is IPv6-only, and a
    dual-stack one would take IPv4 traffic as mapped addresses."""
    v4 = bind_socket("0.0.0.0", 0, socket.SOCK_DGRAM, reuse_port=False)
    port = v4.getsockname()[1]
    v6 = bind_socket("::", port, socket.SOCK_DGRAM, reuse_port=False)
    try:
        v4.setblocking(True)
        v6.setblocking(True)
        v4.settimeout(5)
        v6.settimeout(5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"over ipv4", ("127.0.0.1", port))
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"over ipv6", ("::1", port))
        data, source = v4.recvfrom(64)
        assert (data, source[0]) == (b"over ipv4", "127.0.0.1")
        data, source = v6.recvfrom(64)
        assert (data, source[0]) == (b"over ipv6", "::1")
    finally:
        v4.close()
        v6.close()
