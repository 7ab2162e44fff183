"""Sampled packet header parser (sFlow v5 raw packet header records, and the like).

Theory of operation: an sFlow agent copies the first N bytes of a sampled frame (sFlow v5,
"sampled_header", header_protocol codes from the sflow.org spec). The copy is a snapshot and is
commonly cut off in the middle of a header, so nothing here raises: each layer is parsed while
its bytes are present and the fields found so far are kept. Results are written into the
caller's flat `fields` dict (snake_case keys), so the sFlow decoder adds no dict merge per sample.

Layers: Ethernet II with 802.1Q/802.1ad tags (outermost VLAN as `vlan`, the next as
`customer_vlan`; a priority tag, VID 0, gives no VLAN id), 802.3 frames with a length instead
of a type (no `ether_type`; the LLC header is not decoded), MPLS label stacks (`mpls_labels`),
IPv4 (options skipped by IHL; non-first fragments carry no L4 header), IPv6 with extension
headers (hop-by-hop, routing, fragment, destination options, AH, mobility), TCP, UDP, SCTP,
ICMP and ICMPv6, and the frame inside a VXLAN tunnel (UDP 4789, RFC 7348), whose values are
reported again with an `inner_` prefix.
"""

from __future__ import annotations

import struct
from socket import AF_INET6, inet_ntoa, inet_ntop
from typing import Any

from flowd.decode.memo import MEMO_CLEARS

HEADER_PROTOCOL_ETHERNET = 1
HEADER_PROTOCOL_IPV4 = 11
HEADER_PROTOCOL_IPV6 = 12
HEADER_PROTOCOL_MPLS = 13

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_MPLS = (0x8847, 0x8848)
ETHERTYPE_VLAN = (0x8100, 0x88A8, 0x9100)
ETHERTYPE_MIN = 0x0600
"""Smaller values of the type/length field are an 802.3 frame's length (IEEE 802.3 3.2.6)."""

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_SCTP = 132
PROTO_UDPLITE = 136
VXLAN_PORT = 4789

IPV6_EXTENSION_HEADERS = frozenset((0, 43, 60, 135, 139, 140))
"""Extension headers with the generic (next header, length in 8-octet units - 1) layout (RFC 8200 4.x)."""
IPV6_FRAGMENT = 44
IPV6_AH = 51
MAX_IPV6_EXTENSIONS = 12
MAX_VLAN_TAGS = 8
MAX_MPLS_LABELS = 16

_U16 = struct.Struct("!H")
_ETHERNET = struct.Struct("!6s6sH")
_U32 = struct.Struct("!I")
_IPV4 = struct.Struct("!BBHHHBB2x4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_PORTS = struct.Struct("!HH")
_TCP_FLAGS = struct.Struct("!12xH")

Fields = dict[str, Any]

MAX_CACHED_ADDRESSES = 65536
_ADDRESS_TEXT: dict[bytes, str] = {}
"""Packed IPv4/IPv6 address -> text. Sampled traffic repeats addresses, and a dict hit costs a
fifth of `inet_ntoa` (far less than `inet_ntop`); bounded by clearing when full."""


def _address_text(packed: bytes) -> str:
    if len(_ADDRESS_TEXT) >= MAX_CACHED_ADDRESSES:
        _ADDRESS_TEXT.clear()
        MEMO_CLEARS["header_address_text"] += 1
    text = _ADDRESS_TEXT[packed] = inet_ntoa(packed) if len(packed) == 4 else inet_ntop(AF_INET6, packed)
    return text


def parse_sampled_header(protocol: int, data: bytes | memoryview, start: int, end: int, fields: Fields) -> None:
    """Parse the header snapshot `data[start:end]` of sFlow `header_protocol` into `fields`."""
    if protocol == HEADER_PROTOCOL_ETHERNET:
        parse_ethernet(data, start, end, fields, True)
    elif protocol == HEADER_PROTOCOL_IPV4:
        parse_ipv4(data, start, end, fields, True)
    elif protocol == HEADER_PROTOCOL_IPV6:
        parse_ipv6(data, start, end, fields, True)
    elif protocol == HEADER_PROTOCOL_MPLS:
        parse_mpls(data, start, end, fields, True)


def parse_ethernet(data: bytes | memoryview, pos: int, end: int, fields: Fields, tunnels: bool = True) -> None:
    """Ethernet II (or 802.3 with an LLC header, which stops here) and what it carries."""
    if pos + 14 > end:
        if pos + 12 <= end:
            fields["dst_mac"] = data[pos : pos + 6].hex(":")
            fields["src_mac"] = data[pos + 6 : pos + 12].hex(":")
        return
    dst, src, ethertype = _ETHERNET.unpack_from(data, pos)
    fields["dst_mac"] = dst.hex(":")
    fields["src_mac"] = src.hex(":")
    pos += 14
    if ethertype in ETHERTYPE_VLAN:
        tags = 0
        while ethertype in ETHERTYPE_VLAN and pos + 4 <= end and tags < MAX_VLAN_TAGS:
            tci = (data[pos] << 8) | data[pos + 1]
            # IEEE 802.1Q 9.6: VID 0 is a priority tag, "no VLAN identifier": not a VLAN id.
            if tags == 0:
                if tci & 0x0FFF:
                    fields["vlan"] = tci & 0x0FFF
                fields["vlan_priority"] = tci >> 13
            elif tags == 1 and tci & 0x0FFF:
                fields["customer_vlan"] = tci & 0x0FFF
            tags += 1
            ethertype = (data[pos + 2] << 8) | data[pos + 3]
            pos += 4
        if ethertype in ETHERTYPE_VLAN:
            return
    if ethertype < ETHERTYPE_MIN:
        return  # IEEE 802.3 3.2.6: a length, an LLC header follows (not decoded)
    fields["ether_type"] = ethertype
    if ethertype == ETHERTYPE_IPV4:
        parse_ipv4(data, pos, end, fields, tunnels)
    elif ethertype == ETHERTYPE_IPV6:
        parse_ipv6(data, pos, end, fields, tunnels)
    elif ethertype in ETHERTYPE_MPLS:
        parse_mpls(data, pos, end, fields, tunnels)


def parse_mpls(data: bytes | memoryview, pos: int, end: int, fields: Fields, tunnels: bool = True) -> None:
    """An MPLS label stack (RFC 3032); the payload type is guessed from its first nibble."""
    labels: list[int] = []
    bottom = False
    while pos + 4 <= end and len(labels) < MAX_MPLS_LABELS:
        entry: int = _U32.unpack_from(data, pos)[0]
        labels.append(entry >> 12)
        pos += 4
        if entry & 0x100:
            bottom = True
            break
    if labels:
        fields["mpls_labels"] = labels
    if not bottom or pos >= end:
        return
    # RFC 4928: no payload type in the stack; IP is recognised by its version nibble.
    version = data[pos] >> 4
    if version == 4:
        parse_ipv4(data, pos, end, fields, tunnels)
    elif version == 6:
        parse_ipv6(data, pos, end, fields, tunnels)


def parse_ipv4(data: bytes | memoryview, pos: int, end: int, fields: Fields, tunnels: bool = True) -> None:
    """IPv4 (RFC 791); options are skipped by IHL, and only a first fragment has an L4 header."""
    if pos + 20 > end:
        return
    first, tos, total_length, ident, fragment, ttl, proto, src, dst = _IPV4.unpack_from(data, pos)
    if first >> 4 != 4:
        return
    fields["ip_version"] = 4
    fields["src_ip"] = _ADDRESS_TEXT.get(src) or _address_text(src)
    fields["dst_ip"] = _ADDRESS_TEXT.get(dst) or _address_text(dst)
    fields["protocol"] = proto
    fields["ip_tos"] = tos
    fields["ttl"] = ttl
    fields["ip_length"] = total_length
    header_length = (first & 0x0F) * 4
    if fragment & 0x3FFF:
        fields["ip_id"] = ident
        fields["fragment_offset"] = (fragment & 0x1FFF) * 8
        fields["more_fragments"] = bool(fragment & 0x2000)
        if fragment & 0x1FFF:
            return
    if header_length < 20:
        return
    if header_length <= total_length < end - pos:
        end = pos + total_length  # Ethernet pads short frames; the padding is not L4 payload.
    parse_transport(data, pos + header_length, end, proto, fields, tunnels)


def parse_ipv6(data: bytes | memoryview, pos: int, end: int, fields: Fields, tunnels: bool = True) -> None:
    """IPv6 (RFC 8200) and its extension header chain, up to the upper-layer header."""
    if pos + 40 > end:
        return
    first, payload_length, next_header, hop_limit, src, dst = _IPV6.unpack_from(data, pos)
    if first >> 28 != 6:
        return
    fields["ip_version"] = 6
    fields["src_ip"] = _ADDRESS_TEXT.get(src) or _address_text(src)
    fields["dst_ip"] = _ADDRESS_TEXT.get(dst) or _address_text(dst)
    fields["ip_tos"] = (first >> 20) & 0xFF
    fields["ttl"] = hop_limit
    fields["ip_length"] = payload_length + 40
    fields["ipv6_flow_label"] = first & 0xFFFFF
    if 0 < payload_length < end - pos - 40:
        end = pos + 40 + payload_length
    pos += 40
    for _ in range(MAX_IPV6_EXTENSIONS):
        if next_header in IPV6_EXTENSION_HEADERS:
            if pos + 2 > end:
                break
            next_header, length = data[pos], data[pos + 1]
            pos += (length + 1) * 8
        elif next_header == IPV6_FRAGMENT:
            if pos + 8 > end:
                break
            fragment: int = _U16.unpack_from(data, pos + 2)[0]
            next_header = data[pos]
            fields["ip_id"] = _U32.unpack_from(data, pos + 4)[0]
            fields["fragment_offset"] = fragment & 0xFFF8
            fields["more_fragments"] = bool(fragment & 1)
            pos += 8
            if fragment & 0xFFF8:
                fields["protocol"] = next_header
                return
        elif next_header == IPV6_AH:
            if pos + 2 > end:
                break
            next_header, length = data[pos], data[pos + 1]
            pos += (length + 2) * 4  # RFC 4302 2.2: AH length is in 4-octet units minus 2.
        else:
            fields["protocol"] = next_header
            parse_transport(data, pos, end, next_header, fields, tunnels)
            return
    # The chain was cut off or is longer than we follow: the upper-layer protocol is unknown.
    fields["ipv6_next_header"] = next_header


def parse_transport(
    data: bytes | memoryview, pos: int, end: int, proto: int, fields: Fields, tunnels: bool = True
) -> None:
    """Ports and TCP flags, or ICMP type/code; a VXLAN payload is parsed with `inner_` keys."""
    if proto == PROTO_TCP:
        if pos + 4 <= end:
            fields["src_port"], fields["dst_port"] = _PORTS.unpack_from(data, pos)
            if pos + 14 <= end:
                # RFC 3540 NS bit is the low bit of the data-offset byte; 9 flag bits in all.
                fields["tcp_flags"] = _TCP_FLAGS.unpack_from(data, pos)[0] & 0x1FF
    elif proto == PROTO_UDP:
        if pos + 4 <= end:
            src_port, dst_port = _PORTS.unpack_from(data, pos)
            fields["src_port"] = src_port
            fields["dst_port"] = dst_port
            if dst_port == VXLAN_PORT and tunnels and pos + 16 <= end:
                parse_vxlan(data, pos + 8, end, fields)
    elif proto in (PROTO_ICMP, PROTO_ICMPV6):
        if pos + 2 <= end:
            fields["icmp_type"] = data[pos]
            fields["icmp_code"] = data[pos + 1]
    elif (proto in (PROTO_SCTP, PROTO_UDPLITE)) and pos + 4 <= end:
        fields["src_port"], fields["dst_port"] = _PORTS.unpack_from(data, pos)


def parse_vxlan(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """VXLAN (RFC 7348): flags with the I bit, 24-bit VNI, then an inner Ethernet frame."""
    if not data[pos] & 0x08:
        return
    fields["vxlan_vni"] = _U32.unpack_from(data, pos + 4)[0] >> 8
    inner: Fields = {}
    parse_ethernet(data, pos + 8, end, inner, False)  # one level only: no tunnel in a tunnel
    for key, value in inner.items():
        fields["inner_" + key] = value
