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


def _scapy_capture(tmp_path: Path, kind: str) -> tuple[Path, list[int]]:
    """Three NetFlow v5 datagrams of two records each, written by scapy as pcap or pcapng;
    with the byte offset where each packet record starts."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap, wrpcapng

    from tests.test_pipeline import netflow_v5

    packets = [
        Ether() / IP(src="192.0.2.9", dst="192.0.2.1") / UDP(sport=50000, dport=2055) / netflow_v5(n) for n in range(3)
    ]
    path = tmp_path / f"three.{kind}"
    (wrpcap if kind == "pcap" else wrpcapng)(str(path), packets)
    data = path.read_bytes()
    frame = bytes(packets[-1])
    last = data.rindex(frame) - (16 if kind == "pcap" else 28)  # its record or block header
    if kind == "pcap":
        starts = [24 + n * (16 + len(frame)) for n in range(3)]
    else:
        length = len(data) - last  # every block of the three is as long (same frame length)
        starts = [last - (2 - n) * length for n in range(3)]
    assert starts[-1] == last
    return path, starts


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
@pytest.mark.parametrize("into", [10, 40], ids=["in_header", "in_frame"])
def test_a_capture_cut_inside_its_last_record_says_where_once(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], kind: str, into: int
) -> None:
    """`head -c` or a capture stopped abruptly: what precedes the cut is decoded, and stderr says
    where the file stops being readable and how many records came before it; the exit status
    stays 0 (the file could be read)."""
    whole, starts = _scapy_capture(tmp_path, kind)
    assert main(["decode", str(whole)]) == 0
    out, err = capsysbinary.readouterr()
    assert len(out.splitlines()) == 6
    assert b"stops being readable" not in err

    cut = tmp_path / f"cut.{kind}"
    data = whole.read_bytes()[: starts[2] + into]
    cut.write_bytes(data)
    assert main(["decode", str(cut)]) == 0
    out, err = capsysbinary.readouterr()
    documents = [orjson.loads(line) for line in out.splitlines()]
    assert len(documents) >= 4  # the two whole datagrams' flows (and what the cut one gave)
    text = err.decode()
    note = (
        f"flowd: {cut}: the capture stops being readable at byte {starts[2]} of {len(data)}"
        " (a record cut short); 2 whole packet records read before it\n"
    )
    assert text.count("stops being readable") == 1 and note in text, text
    assert "Traceback" not in text


def test_an_ipfix_file_cut_inside_a_message_says_where(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    source = CORPUS / "ipfixcol2" / "example_flows.ipfix"
    messages = [d.payload for d in read_datagrams(source)]
    cut = tmp_path / "cut.ipfix"
    offset = len(messages[0]) + len(messages[1])
    cut.write_bytes(source.read_bytes()[: offset + 20])
    assert main(["decode", str(cut)]) == 0
    text = capsysbinary.readouterr().err.decode()
    assert (
        f"flowd: {cut}: the capture stops being readable at byte {offset} of {offset + 20}"
        " (a record cut short); 2 whole IPFIX messages read before it\n"
    ) in text


def test_an_impossible_length_is_where_a_capture_stops(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A length word shorter than its own header cannot be stepped over: the file stops there."""
    whole, starts = _scapy_capture(tmp_path, "pcapng")
    pcapng = tmp_path / "zero.pcapng"
    pcapng.write_bytes(whole.read_bytes()[: starts[1]] + struct.pack("<II", 6, 0) + bytes(24))
    first = next(iter(read_datagrams(CORPUS / "ipfixcol2" / "example_flows.ipfix"))).payload
    ipfix = tmp_path / "zero.ipfix"
    ipfix.write_bytes(first + struct.pack("!HH", 10, 8) + bytes(12))
    assert main(["decode", str(pcapng), str(ipfix)]) == 0
    text = capsysbinary.readouterr().err.decode()
    assert (
        f"flowd: {pcapng}: the capture stops being readable at byte {starts[1]} of {starts[1] + 32}"
        " (a block length of 0); 1 whole packet record read before it\n"
    ) in text
    assert (
        f"flowd: {ipfix}: the capture stops being readable at byte {len(first)} of {len(first) + 16}"
        " (a message length of 8); 1 whole IPFIX message read before it\n"
    ) in text
