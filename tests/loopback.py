"""What the loopback interface of the machine running the tests offers."""

from __future__ import annotations

import socket


def ipv6_loopback() -> bool:
    """Whether ::1 can be bound (containers and CI runners may have IPv6 off)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True
