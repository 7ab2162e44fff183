"""`flowd decode` as an operator runs it: files that cannot be read are named, not tracebacks."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from flowd.capture import read_datagrams
from flowd.cli import main
from tests.shared_data import CORPUS

NFV5 = CORPUS / "akvorado" / "netflow" / "nfv5.pcap"


def test_missing_file_is_named_and_the_others_still_decode(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    missing = tmp_path / "missing.pcap"
    assert main(["decode", str(NFV5), str(missing)]) == 1
    out, err = capsysbinary.readouterr()
    assert len([orjson.loads(line) for line in out.splitlines()]) == 29
    text = err.decode()
    assert f"flowd: {missing}: cannot read it: No such file or directory" in text
    assert "Traceback" not in text
    assert "flows=29" in text


def test_directory_and_cut_pcap_header_are_named(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(NFV5.read_bytes()[:10])
    assert main(["decode", str(tmp_path), str(cut)]) == 1
    out, err = capsysbinary.readouterr()
    assert out == b""
    text = err.decode()
    assert f"flowd: {tmp_path}: cannot read it: Is a directory" in text
    assert f"flowd: {cut}: pcap file header cut short (10 of 24 bytes)" in text


def test_readable_files_exit_0(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["decode", str(NFV5)]) == 0
    assert len(capsysbinary.readouterr().out.splitlines()) == 29


def _pcap(linktype: int, frames: list[bytes]) -> bytes:
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    return header + b"".join(struct.pack("<IIII", 1_700_000_000, 0, len(f), len(f)) + f for f in frames)


def _ipv4_udp(payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 50000, 2055, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([192, 0, 2, 9]), bytes(4))
    return ip + udp


def _ipv6_udp(payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 50000, 2055, 8 + len(payload), 0) + payload
    return struct.pack("!IHBB", 6 << 28, len(udp), 17, 64) + bytes(15) + b"\x09" + bytes(16) + udp


@pytest.mark.parametrize(
    ("linktype", "link_header", "network", "exporter"),
    [
        # tcpdump -i any (4.99+) writes cooked v2: protocol first, then ifindex, ARPHRD, type, address
        (276, struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, bytes(8)), _ipv4_udp, "192.0.2.9"),
        (276, struct.pack("!HHIHBB8s", 0x86DD, 0, 2, 1, 0, 6, bytes(8)), _ipv6_udp, "::9"),
        # cooked v1 with the VLAN tag libpcap writes back after the header
        (
            113,
            struct.pack("!HHH8sH", 0, 1, 6, bytes(8), 0x8100) + struct.pack("!HH", 42, 0x0800),
            _ipv4_udp,
            "192.0.2.9",
        ),
    ],
)
def test_linux_cooked_captures(
    tmp_path: Path, linktype: int, link_header: bytes, network: Callable[[bytes], bytes], exporter: str
) -> None:
    """Found by an audit: a `tcpdump -i any` capture (Linux cooked v2) gave no datagram and no
    error, and a cooked v1 frame with a VLAN tag was skipped."""
    payload = next(iter(read_datagrams(NFV5))).payload
    path = tmp_path / "any.pcap"
    path.write_bytes(_pcap(linktype, [link_header + network(payload)]))
    (datagram,) = read_datagrams(path)
    assert (datagram.payload, datagram.source, datagram.destination[1]) == (payload, (exporter, 50000), 2055)
