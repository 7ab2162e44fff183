"""The sampled-header parser against packets built with scapy (scapy's own fields are the oracle).

Each test builds a frame, parses its bytes with `parse_sampled_header`, and compares what we
report with the values scapy put in. Snapshot truncation is checked for every packet at every
length: a cut-off header never raises, and whatever it yields agrees with the full parse.
"""

from __future__ import annotations

from typing import Any

import pytest
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.layers.sctp import SCTP
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet

from flowd.decode.headers import (
    HEADER_PROTOCOL_ETHERNET,
    HEADER_PROTOCOL_IPV4,
    HEADER_PROTOCOL_IPV6,
    HEADER_PROTOCOL_MPLS,
    parse_sampled_header,
)

SRC_MAC = "02:00:00:00:00:01"
DST_MAC = "02:00:00:00:00:02"
PAYLOAD = b"p" * 64


def parse(packet: Packet | bytes, protocol: int = HEADER_PROTOCOL_ETHERNET, cut: int | None = None) -> dict[str, Any]:
    data = bytes(packet)[:cut]
    fields: dict[str, Any] = {}
    parse_sampled_header(protocol, data, 0, len(data), fields)
    return fields


def ether() -> Packet:
    return Ether(src=SRC_MAC, dst=DST_MAC)


def test_ethernet_qinq_ipv4_tcp() -> None:
    packet = (
        ether()
        / Dot1AD(vlan=300, prio=5)
        / Dot1Q(vlan=42)
        / IP(src="198.51.100.7", dst="203.0.113.9", tos=0xB8, ttl=33)
        / TCP(sport=51515, dport=443, flags="SEC")
        / PAYLOAD
    )
    fields = parse(packet)
    ip, tcp = packet[IP], packet[TCP]
    assert fields == {
        "src_mac": SRC_MAC,
        "dst_mac": DST_MAC,
        "vlan": 300,
        "vlan_priority": 5,
        "customer_vlan": 42,
        "ether_type": 0x0800,
        "ip_version": 4,
        "src_ip": ip.src,
        "dst_ip": ip.dst,
        "protocol": 6,
        "ip_tos": 0xB8,
        "ttl": 33,
        "ip_length": len(ip),
        "src_port": tcp.sport,
        "dst_port": tcp.dport,
        "tcp_flags": int(tcp.flags),
    }
    assert fields["tcp_flags"] == 0x02 | 0x40 | 0x80


def test_tcp_ns_flag_is_the_ninth_bit() -> None:
    fields = parse(ether() / IP() / TCP(flags="NA"))
    assert fields["tcp_flags"] == 0x100 | 0x10


def test_ipv4_options_are_skipped_by_ihl() -> None:
    packet = ether() / IP(src="192.0.2.1", dst="192.0.2.2", options=b"\x01\x01\x01\x00" * 2) / UDP(sport=53, dport=9)
    fields = parse(packet)
    assert Ether(bytes(packet))[IP].ihl == 7
    assert (fields["src_port"], fields["dst_port"], fields["protocol"]) == (53, 9, 17)


def test_ipv4_fragments_carry_l4_only_in_the_first() -> None:
    packet = IP(src="192.0.2.1", dst="192.0.2.2", id=777) / UDP(sport=1000, dport=2000) / (b"x" * 3000)
    first, second, *_ = fragment(packet, fragsize=1480)  # type: ignore[no-untyped-call]
    head = parse(ether() / first)
    assert (head["src_port"], head["dst_port"], head["more_fragments"], head["fragment_offset"]) == (
        1000,
        2000,
        True,
        0,
    )
    assert head["ip_id"] == 777
    tail = parse(ether() / second)
    assert tail["fragment_offset"] == second.frag * 8 > 0
    assert (tail["protocol"], tail["src_ip"], tail["dst_ip"]) == (17, "192.0.2.1", "192.0.2.2")
    assert "src_port" not in tail and "dst_port" not in tail


def test_bare_ipv4_and_ipv6_header_protocols() -> None:
    v4 = parse(IP(src="192.0.2.1", dst="192.0.2.2") / ICMP(type=8, code=0), HEADER_PROTOCOL_IPV4)
    assert (v4["src_ip"], v4["icmp_type"], v4["icmp_code"]) == ("192.0.2.1", 8, 0)
    assert "src_mac" not in v4
    v6 = parse(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=5, dport=6), HEADER_PROTOCOL_IPV6)
    assert (v6["src_ip"], v6["dst_ip"], v6["protocol"], v6["src_port"], v6["dst_port"]) == (
        "2001:db8::1",
        "2001:db8::2",
        17,
        5,
        6,
    )


def test_ipv6_extension_header_chain() -> None:
    packet = (
        ether()
        / IPv6(src="2001:db8::a", dst="2001:db8::b", tc=0x28, fl=0x12345, hlim=7)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting(addresses=["2001:db8::c"])
        / IPv6ExtHdrDestOpt()
        / AH(nh=6, payloadlen=4, spi=1, seq=1, icv=b"\x00" * 12)  # scapy leaves nh/length to us
        / TCP(sport=2222, dport=22, flags="S")
    )
    fields = parse(packet)
    assert (fields["src_ip"], fields["dst_ip"], fields["ip_tos"], fields["ipv6_flow_label"], fields["ttl"]) == (
        "2001:db8::a",
        "2001:db8::b",
        0x28,
        0x12345,
        7,
    )
    assert (fields["protocol"], fields["src_port"], fields["dst_port"], fields["tcp_flags"]) == (6, 2222, 22, 0x02)


def test_ipv6_fragments() -> None:
    first = ether() / IPv6() / IPv6ExtHdrFragment(id=9, m=1, offset=0) / UDP(sport=7, dport=8)
    fields = parse(first)
    assert (fields["protocol"], fields["src_port"], fields["ip_id"], fields["more_fragments"]) == (17, 7, 9, True)
    later = ether() / IPv6() / IPv6ExtHdrFragment(id=9, m=0, offset=185, nh=17) / (b"z" * 40)
    fields = parse(later)
    assert (fields["protocol"], fields["fragment_offset"]) == (17, 185 * 8)
    assert "src_port" not in fields


def test_icmpv6() -> None:
    fields = parse(ether() / IPv6(src="fe80::1", dst="ff02::1") / ICMPv6EchoRequest(id=1, seq=2))
    assert (fields["protocol"], fields["icmp_type"], fields["icmp_code"]) == (58, 128, 0)


def test_mpls_label_stack() -> None:
    packet = (
        ether()
        / MPLS(label=16004, s=0, ttl=64)
        / MPLS(label=24001, s=1, ttl=64)
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / UDP(sport=1, dport=2)
    )
    fields = parse(packet)
    assert (fields["ether_type"], fields["mpls_labels"]) == (0x8847, [16004, 24001])
    assert (fields["src_ip"], fields["dst_ip"], fields["src_port"]) == ("10.0.0.1", "10.0.0.2", 1)
    bare = parse(MPLS(label=3, s=1) / IPv6(src="2001:db8::1") / TCP(), HEADER_PROTOCOL_MPLS)
    assert (bare["mpls_labels"], bare["src_ip"]) == ([3], "2001:db8::1")


def test_vxlan_inner_frame_is_reported_separately() -> None:
    inner = (
        Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")
        / Dot1Q(vlan=7)
        / IP(src="172.16.0.1", dst="172.16.0.2")
        / TCP(sport=3333, dport=80, flags="PA")
    )
    packet = ether() / IP(src="192.0.2.10", dst="192.0.2.20") / UDP(sport=49152, dport=4789) / VXLAN(vni=5001) / inner
    fields = parse(packet)
    assert (fields["src_ip"], fields["dst_ip"], fields["dst_port"], fields["vxlan_vni"]) == (
        "192.0.2.10",
        "192.0.2.20",
        4789,
        5001,
    )
    assert (fields["inner_src_mac"], fields["inner_vlan"]) == ("02:00:00:00:00:0a", 7)
    assert (fields["inner_src_ip"], fields["inner_dst_ip"], fields["inner_protocol"]) == ("172.16.0.1", "172.16.0.2", 6)
    assert (fields["inner_src_port"], fields["inner_dst_port"], fields["inner_tcp_flags"]) == (3333, 80, 0x18)


def test_sctp_ports() -> None:
    fields = parse(ether() / IP() / SCTP(sport=36412, dport=36412))
    assert (fields["protocol"], fields["src_port"], fields["dst_port"]) == (132, 36412, 36412)


def test_ethernet_padding_is_not_read_as_payload() -> None:
    # A 20-byte IP header + 2 bytes of "TCP" padded to Ethernet's 60-byte minimum: no ports.
    packet = ether() / IP(proto=6, len=22) / b"\x01\x02"
    data = bytes(packet) + b"\xff" * 20
    fields = parse(data)
    assert fields["protocol"] == 6 and "src_port" not in fields


def test_unknown_header_protocol_and_ethertype_yield_little() -> None:
    assert parse(b"\x00" * 64, protocol=2) == {}
    fields = parse(Ether(src=SRC_MAC, dst=DST_MAC, type=0x0806) / (b"\x00" * 28))
    assert fields == {"src_mac": SRC_MAC, "dst_mac": DST_MAC, "ether_type": 0x0806}


SNAPSHOT_PACKETS: list[tuple[str, bytes, int]] = [
    ("qinq-tcp", bytes(ether() / Dot1AD(vlan=1) / Dot1Q(vlan=2) / IP() / TCP() / PAYLOAD), HEADER_PROTOCOL_ETHERNET),
    (
        "ipv6-ext-udp",
        bytes(ether() / IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment() / UDP() / PAYLOAD),
        HEADER_PROTOCOL_ETHERNET,
    ),
    ("mpls-ipv4", bytes(ether() / MPLS(s=0) / MPLS(s=1) / IP() / UDP(dport=53) / PAYLOAD), HEADER_PROTOCOL_ETHERNET),
    (
        "vxlan",
        bytes(ether() / IP() / UDP(dport=4789) / VXLAN(vni=1) / ether() / IPv6() / TCP() / PAYLOAD),
        HEADER_PROTOCOL_ETHERNET,
    ),
    ("bare-ipv4-icmp", bytes(IP() / ICMP() / PAYLOAD), HEADER_PROTOCOL_IPV4),
    ("bare-ipv6-icmpv6", bytes(IPv6() / ICMPv6EchoRequest() / PAYLOAD), HEADER_PROTOCOL_IPV6),
]


@pytest.mark.parametrize(
    ("data", "protocol"), [row[1:] for row in SNAPSHOT_PACKETS], ids=[r[0] for r in SNAPSHOT_PACKETS]
)
def test_truncated_snapshots_yield_a_consistent_prefix(data: bytes, protocol: int) -> None:
    full = parse(data, protocol)
    for cut in range(len(data) + 1):
        fields = parse(data, protocol, cut)
        fields.pop("ipv6_next_header", None)  # only set when the extension chain is cut off
        for key, value in fields.items():
            if isinstance(value, list):  # a label stack cut off in the middle
                assert value == full[key][: len(value)], f"cut at {cut}: {key}"
            else:
                assert value == full[key], f"cut at {cut}: {key}"
