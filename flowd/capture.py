"""Read export datagrams from files: pcap, pcapng, raw payload files and IPFIX files (RFC 5655).

Only what `flowd decode` and the replay tools need: UDP payloads over Ethernet or Linux cooked
capture v1 and v2 (with 802.1Q tags), or raw IP; IPv4 fragments other than the first are skipped.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

from flowd.errors import FlowdError

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
"""Linux cooked capture v2: what `tcpdump -i any` writes since tcpdump 4.99 / libpcap 1.10."""
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NULL = 0
PCAPNG_PACKET_BLOCKS = (2, 3, 6)
"""Obsolete, simple and enhanced packet blocks (only enhanced ones are decoded)."""
RAW_EXPORTER = ("192.0.2.1", 50000)
"""Made-up exporter for payload files, which carry no addresses; one per invocation so
templates from an earlier file apply to the next."""


@dataclass(frozen=True, slots=True)
class Datagram:
    payload: bytes
    source: tuple[str, int]
    destination: tuple[str, int]
    timestamp: float
    transport: str = "udp"


class CaptureError(FlowdError):
    """A file that cannot be read as a capture at all (missing, unreadable, header cut short)."""


@dataclass(frozen=True, slots=True)
class CaptureCut:
    """Where a capture stops being readable before its end: a capture stopped abruptly, or cut
    with `head -c`, ends inside a record. What comes before it is read as usual."""

    offset: int
    """Byte offset of the first record (or record header) that cannot be read."""
    size: int
    records: int
    """Whole records read before it."""
    unit: str
    """What a record is in this format: "packet record", "IPFIX message"."""
    reason: str

    def describe(self, path: str | Path) -> str:
        return (
            f"{path}: the capture stops being readable at byte {self.offset} of {self.size} ({self.reason});"
            f" {self.records} whole {self.unit}{'' if self.records == 1 else 's'} read before it"
        )


Reader = Generator[Datagram, None, CaptureCut | None]
"""Yields a file's datagrams; returns where the file stopped being readable, if before its end."""


class Capture(Iterator[Datagram]):
    """The datagrams of one file, in order. Once they have all been taken, `cut` tells whether
    the file ended inside a record, so a caller can say so instead of stopping in silence."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self.cut: CaptureCut | None = None

    def __iter__(self) -> Capture:
        return self

    def __next__(self) -> Datagram:
        try:
            return next(self._reader)
        except StopIteration as stop:
            self.cut = stop.value
            raise


PCAP_HEADER_BYTES = 24


def read_datagrams(path: str | Path) -> Capture:
    """Every datagram in one file, whatever its format. The file is read, and its header
    checked, when this is called, so `CaptureError` (naming the file) comes before any datagram;
    a file that ends inside a record gives what precedes it, and says where in `Capture.cut`."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise CaptureError(f"{path}: cannot read it: {error.strerror or error}") from error
    head = data[:4]
    if head in PCAP_MAGICS:
        if len(data) < PCAP_HEADER_BYTES:  # the link type is in the last word of the header
            raise CaptureError(f"{path}: pcap file header cut short ({len(data)} of {PCAP_HEADER_BYTES} bytes)")
        return Capture(_read_pcap(data))
    if head == PCAPNG_MAGIC:
        return Capture(_read_pcapng(data))
    if head[:2] == b"\x00\x0a" and str(path).endswith((".ipfix", ".ipfx")):
        return Capture(_read_ipfix_file(data))
    return Capture(_read_payload(data))


def _read_payload(data: bytes) -> Reader:
    yield Datagram(data, RAW_EXPORTER, ("192.0.2.2", 0), 0.0, "raw")
    return None


CUT_SHORT = "a record cut short"


def _read_ipfix_file(data: bytes) -> Reader:
    """RFC 5655: IPFIX messages back to back; the message length word delimits each."""
    pos = messages = 0
    while pos + 16 <= len(data):
        length = struct.unpack_from("!H", data, pos + 2)[0]
        if length < 16:  # RFC 7011 section 3.1: the length includes the 16-byte header
            return CaptureCut(pos, len(data), messages, "IPFIX message", f"a message length of {length}")
        if pos + length > len(data):
            break
        export_time = struct.unpack_from("!I", data, pos + 4)[0]
        yield Datagram(data[pos : pos + length], RAW_EXPORTER, ("192.0.2.2", 4739), float(export_time), "file")
        pos += length
        messages += 1
    return CaptureCut(pos, len(data), messages, "IPFIX message", CUT_SHORT) if pos < len(data) else None


def _read_pcap(data: bytes) -> Reader:
    endian, resolution = PCAP_MAGICS[data[:4]]
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    record = struct.Struct(endian + "IIII")
    pos = 24
    records = 0
    cut = None
    while pos + 16 <= len(data):
        seconds, fraction, caplen, _ = record.unpack_from(data, pos)
        if pos + 16 + caplen > len(data):
            cut = CaptureCut(pos, len(data), records, "packet record", CUT_SHORT)
        pos += 16
        frame = data[pos : pos + caplen]  # a record cut short still gives what it holds
        pos += caplen
        records += 1
        found = _udp_payload(frame, linktype)
        if found is not None:
            yield Datagram(found[0], found[1], found[2], seconds + fraction * resolution)
    if cut is None and pos < len(data):  # the last record header itself is cut
        cut = CaptureCut(pos, len(data), records, "packet record", CUT_SHORT)
    return cut


def _read_pcapng(data: bytes) -> Reader:
    pos = packets = 0
    endian = "<"
    linktypes: list[int] = []
    resolutions: list[float] = []
    while pos + 12 <= len(data):
        block_type = struct.unpack_from(endian + "I", data, pos)[0]
        if block_type == 0x0A0D0D0A:
            endian = "<" if data[pos + 8 : pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            linktypes, resolutions = [], []
        length = struct.unpack_from(endian + "I", data, pos + 4)[0]
        if length < 12:  # pcapng section 3.1: the length includes type and both length words
            return CaptureCut(pos, len(data), packets, "packet record", f"a block length of {length}")
        if pos + length > len(data):
            break
        body = data[pos + 8 : pos + length - 4]
        if block_type == 1:
            linktypes.append(struct.unpack_from(endian + "H", body, 0)[0])
            resolutions.append(_pcapng_resolution(body[8:], endian))
        elif block_type == 6 and len(body) >= 20:
            iface, high, low, caplen = struct.unpack_from(endian + "IIII", body, 0)
            if iface < len(linktypes):
                frame = body[20 : 20 + caplen]
                found = _udp_payload(frame, linktypes[iface])
                if found is not None:
                    stamp = ((high << 32) | low) * resolutions[iface]
                    yield Datagram(found[0], found[1], found[2], stamp)
        if block_type in PCAPNG_PACKET_BLOCKS:
            packets += 1
        pos += length
    return CaptureCut(pos, len(data), packets, "packet record", CUT_SHORT) if pos < len(data) else None


def _pcapng_resolution(options: bytes, endian: str) -> float:
    pos = 0
    while pos + 4 <= len(options):
        code, length = struct.unpack_from(endian + "HH", options, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:
            value = options[pos + 4]
            return float(2 ** -(value & 0x7F)) if value & 0x80 else float(10**-value)
        pos += 4 + ((length + 3) & ~3)
    return 1e-6


def _udp_payload(frame: bytes, linktype: int) -> tuple[bytes, tuple[str, int], tuple[str, int]] | None:
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        return _after_vlan_tags(frame, 14, struct.unpack_from("!H", frame, 12)[0])
    if linktype == LINKTYPE_LINUX_SLL:  # protocol in the last 2 of 16 bytes
        if len(frame) < 16:
            return None
        return _after_vlan_tags(frame, 16, struct.unpack_from("!H", frame, 14)[0])
    if linktype == LINKTYPE_LINUX_SLL2:  # protocol in the first 2 of 20 bytes
        if len(frame) < 20:
            return None
        return _after_vlan_tags(frame, 20, struct.unpack_from("!H", frame, 0)[0])
    if linktype == LINKTYPE_NULL:
        return _ip_udp(frame, 4, 0)
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return _ip_udp(frame, 0, 0)
    return None


def _after_vlan_tags(
    frame: bytes, offset: int, ethertype: int
) -> tuple[bytes, tuple[str, int], tuple[str, int]] | None:
    """802.1Q/802.1ad tags, which libpcap also writes back after a cooked header."""
    while ethertype in (0x8100, 0x88A8, 0x9100) and len(frame) >= offset + 4:
        ethertype = struct.unpack_from("!H", frame, offset + 2)[0]
        offset += 4
    return _ip_udp(frame, offset, ethertype)


def _ip_udp(frame: bytes, offset: int, ethertype: int) -> tuple[bytes, tuple[str, int], tuple[str, int]] | None:
    if len(frame) < offset + 1:
        return None
    version = frame[offset] >> 4
    if (ethertype in (0, 0x0800)) and version == 4 and len(frame) >= offset + 20:
        header_len = (frame[offset] & 0x0F) * 4
        fragment = struct.unpack_from("!H", frame, offset + 6)[0]
        if frame[offset + 9] != 17 or fragment & 0x1FFF:
            return None
        source = socket.inet_ntoa(frame[offset + 12 : offset + 16])
        destination = socket.inet_ntoa(frame[offset + 16 : offset + 20])
        udp = offset + header_len
    elif (ethertype in (0, 0x86DD)) and version == 6 and len(frame) >= offset + 40:
        if frame[offset + 6] != 17:
            return None
        source = socket.inet_ntop(socket.AF_INET6, frame[offset + 8 : offset + 24])
        destination = socket.inet_ntop(socket.AF_INET6, frame[offset + 24 : offset + 40])
        udp = offset + 40
    else:
        return None
    if len(frame) < udp + 8:
        return None
    sport, dport, length = struct.unpack_from("!HHH", frame, udp)
    end = udp + length if length >= 8 else len(frame)
    return frame[udp + 8 : end], (source, sport), (destination, dport)
