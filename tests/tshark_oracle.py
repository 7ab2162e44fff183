"""tshark as the independent oracle: write datagrams to a pcap and read tshark's two-pass decode."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from flowd.capture import Datagram

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (.ci/run installs it)")


def write_pcap(datagrams: Iterable[Datagram], path: Path) -> Path:
    """A raw-IP (linktype 101) pcap holding each datagram in its own UDP packet."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]
    for number, datagram in enumerate(datagrams):
        packet = _ip_udp_packet(datagram)
        out.append(struct.pack("<IIII", number + 1, 0, len(packet), len(packet)))
        out.append(packet)
    path.write_bytes(b"".join(out))
    return path


def _ip_udp_packet(datagram: Datagram) -> bytes:
    (src, sport), (dst, dport) = datagram.source, datagram.destination
    udp = struct.pack("!HHHH", sport, dport or 2055, 8 + len(datagram.payload), 0) + datagram.payload
    if ":" in src:
        header = struct.pack("!IHBB", 6 << 28, len(udp), 17, 64)
        if ":" not in dst:
            dst = "::ffff:" + dst
        return header + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + udp
    if ":" in dst:
        dst = "192.0.2.2"
    total = 20 + len(udp)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return header + udp


def tshark_layers(pcap: Path, decode_as: Iterable[str] = ()) -> list[dict[str, Any]]:
    """tshark -2 -T json: the `layers` object of every packet, in order."""
    assert TSHARK is not None
    command = [TSHARK, "-2", "-n", "-r", str(pcap), "-T", "json", "--no-duplicate-keys"]
    for rule in decode_as:
        command += ["-d", rule]
    output = subprocess.run(command, check=True, capture_output=True, timeout=300).stdout
    return [packet["_source"]["layers"] for packet in json.loads(output or b"[]")]
