"""Traffic from a real sFlow agent: pmacct's `pmacctd` with its `sfprobe` plugin replays a capture
we build with scapy, sends sFlow v5 to a socket on loopback, and every flow sample flowd decodes
must be the packet of the capture it was taken from: addresses, ports, protocol, length.

What pmacctd 1.7.7's sfprobe sends (src/sfprobe_plugin/sfprobe_plugin.c, sflow_sampler.c), and so
what is checked here:

- One flow sample (format 1) per sampled packet, in capture order, with sequence numbers 1, 2, ...
  Each holds a raw packet header record (format 1, header protocol 1 = Ethernet) with the first
  min(length, 128) bytes of the frame, and an extended switch record. Datagrams are at most
  1400 bytes: six samples with 128-byte headers fill one. Counter samples come every 20 s, so a
  run this short has none.
- `frame_length` is the captured length **plus 4**: pmacctd assumes libpcap removed the Ethernet
  FCS, adds it back and says so in `stripped` = 4. So frame_length - stripped is the length of
  the packet in the capture, and `network.bytes` = frame_length x sampling rate counts the FCS.
- Sampling happens in the plugin (the core hands it every packet): with `sampling_rate: N` the
  next sample is a random 1 to 2N-1 packets after the last one (InMon's sflowtool sampler, mean
  N; `random()` is seeded with a constant, so every run picks the same packets), and the sample
  pool counts every packet the plugin saw. So a sample's `sample_pool` is the 1-based
  position of its packet in the capture, at rate 1 as at rate 4, and `sampling_rate` is N.
- `sfprobe_ifindex` with `sfprobe_direction: in` gives the input ifIndex; the output interface is
  0x3FFFFFFF ("internal"). `sfprobe_agentip` and `sfprobe_agentsubid` are the datagram header's
  agent address and sub-agent id.
- The last, partly filled datagram is never sent (see tests/pmacct_agent.py), so the capture ends
  with `FILLERS` packets of our own after the ones under test, and pmacctd is stopped once a
  sample of a filler has arrived: by then every sample of a packet under test has been sent.
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flowd.decode import TemplateCache, decode_datagram
from flowd.model import KIND_SFLOW_FLOW, FlowRecord
from flowd.output.sflow_documents import sflow_document
from tests.pmacct_agent import ProbeRun, needs_pmacctd, run_pmacctd

pytestmark = [pytest.mark.integration, needs_pmacctd]

PACKETS = 300
"""Packets under test, at the start of the capture."""
FILLERS = 96
"""Packets after them: more than 6 samples (one datagram) x (2 x 4 - 1) packets skipped at most."""
AGENT_IP = "127.0.0.1"
AGENT_SUB_ID = 7
IFINDEX = 11
FCS = 4
HEADER_BYTES = 128
"""sfprobe copies at most this much of each frame (its snaplen)."""


@dataclass(frozen=True)
class Expected:
    """What a sample of one capture packet must decode to."""

    src_ip: str
    dst_ip: str
    src_port: int | None
    dst_port: int | None
    protocol: int
    length: int
    ip_version: int
    vlan: int | None
    icmp: tuple[int, int] | None


def _build_capture() -> tuple[list[Any], list[Expected]]:
    """PACKETS varied Ethernet frames (IPv4/IPv6, TCP/UDP/ICMP, some 802.1Q, some with an IPv6
    hop-by-hop header, 54 to ~1480 bytes), then FILLERS distinct UDP frames of 300 bytes."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrHopByHop
    from scapy.layers.l2 import Dot1Q, Ether
    from scapy.packet import Raw

    rng = random.Random(20240611)
    frames: list[Any] = []
    expected: list[Expected] = []
    for index in range(PACKETS + FILLERS):
        filler = index >= PACKETS
        ether = Ether(src=f"02:00:00:00:{index >> 8:02x}:{index & 0xFF:02x}", dst="02:00:00:00:ff:01")
        vlan = None if filler or rng.random() < 0.85 else rng.randrange(1, 4095)
        link = ether / Dot1Q(vlan=vlan) if vlan is not None else ether
        if filler:
            src, dst, version, kind = "198.51.100.1", "198.51.100.2", 4, "udp"
        elif rng.random() < 0.4:
            src = str(ipaddress.IPv6Address(0x20010DB8 << 96 | rng.getrandbits(64)))
            dst = str(ipaddress.IPv6Address(0x2001_0DB8_FFFF << 80 | rng.getrandbits(48)))
            version, kind = 6, rng.choice(["tcp", "tcp", "udp", "udp", "icmp"])
        else:
            src = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            dst = f"{rng.choice([192, 172, 203])}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            version, kind = 4, rng.choice(["tcp", "tcp", "udp", "udp", "icmp"])
        if version == 4:
            ip: Any = IP(src=src, dst=dst, ttl=rng.randrange(1, 256), tos=rng.choice([0, 0, 0x10, 0xB8]))
        else:
            ip = IPv6(src=src, dst=dst, hlim=rng.randrange(1, 256))
            if rng.random() < 0.15:
                ip = ip / IPv6ExtHdrHopByHop()
        src_port: int | None = None
        dst_port: int | None = None
        icmp: tuple[int, int] | None = None
        if kind == "tcp":
            src_port, dst_port = rng.randrange(1024, 65536), rng.choice([22, 80, 443, 8080, rng.randrange(1, 65536)])
            l4: Any = TCP(sport=src_port, dport=dst_port, flags=rng.choice(["S", "SA", "PA", "FA", "R"]))
            protocol = 6
        elif kind == "udp":
            src_port = 40000 + index if filler else rng.randrange(0, 65536)
            dst_port = 9 if filler else rng.choice([53, 123, 514, 4739, rng.randrange(1, 65536)])
            l4 = UDP(sport=src_port, dport=dst_port)
            protocol = 17
        elif version == 4:
            icmp = (rng.choice([0, 3, 8, 11]), 0)
            l4 = ICMP(type=icmp[0], code=icmp[1])
            protocol = 1
        else:
            icmp = (128, 0)
            l4 = ICMPv6EchoRequest()
            protocol = 58
        frame = link / ip / l4
        sizes = [0, rng.randrange(1, 80), rng.randrange(80, 1400), 1400]
        payload = 300 - len(frame) if filler else rng.choice(sizes)
        frame = frame / Raw(rng.randbytes(payload))
        frames.append(frame)
        expected.append(Expected(src, dst, src_port, dst_port, protocol, len(bytes(frame)), version, vlan, icmp))
    return frames, expected


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Expected]]:
    from scapy.utils import wrpcap

    frames, expected = _build_capture()
    path = tmp_path_factory.mktemp("pmacctd-capture") / "traffic.pcap"
    wrpcap(str(path), frames)
    path.chmod(0o644)
    path.parent.chmod(0o755)
    return path, expected


def _flow_samples(datagrams: list[bytes]) -> list[FlowRecord]:
    samples: list[FlowRecord] = []
    for data in datagrams:
        result = decode_datagram(data, (AGENT_IP, 0), TemplateCache(), 0.0)
        assert not result.errors, result.errors
        samples.extend(record for record in result.flows if record.kind == KIND_SFLOW_FLOW)
    return samples


def _past_packets_under_test(datagrams: list[bytes]) -> bool:
    """A sample of a filler has arrived: every packet under test has been exported."""
    return any(record.fields["sample_pool"] > PACKETS for record in _flow_samples(datagrams[-1:]))


def _run(tmp_path: Path, pcap: Path, rate: int) -> ProbeRun:
    config = {
        "plugins": "sfprobe[probe]",
        "sampling_rate": str(rate),
        "sfprobe_agentip": AGENT_IP,
        "sfprobe_agentsubid": str(AGENT_SUB_ID),
        "sfprobe_ifindex[probe]": str(IFINDEX),
        "sfprobe_direction[probe]": "in",
    }
    run = run_pmacctd(tmp_path, pcap, config, "sfprobe_receiver", _past_packets_under_test, timeout=10.0)
    assert run.finished, f"pmacctd sent {len(run.datagrams)} datagrams, none past the packets under test:\n{run.log}"
    assert "ERROR" not in run.log, run.log
    return run


def _check_sample(record: FlowRecord, packet: Expected, rate: int) -> None:
    fields = record.fields
    where = f"sample {fields['sample_sequence']} (pool {fields['sample_pool']}): {fields}"
    assert (
        ipaddress.ip_address(fields["src_ip"]),
        ipaddress.ip_address(fields["dst_ip"]),
        fields.get("src_port"),
        fields.get("dst_port"),
        fields["protocol"],
    ) == (
        ipaddress.ip_address(packet.src_ip),
        ipaddress.ip_address(packet.dst_ip),
        packet.src_port,
        packet.dst_port,
        packet.protocol,
    ), where
    assert fields["stripped"] == FCS, where
    assert fields["frame_length"] - fields["stripped"] == packet.length, where
    assert fields["header_length"] == min(packet.length, HEADER_BYTES), where
    assert fields["header_protocol"] == 1, where
    assert fields["ip_version"] == packet.ip_version, where
    assert fields.get("vlan") == packet.vlan, where
    if packet.icmp is not None:
        assert (fields["icmp_type"], fields["icmp_code"]) == packet.icmp, where
    assert fields["sampling_rate"] == rate, where
    assert fields["drops"] == 0, where
    assert fields["input_ifindex"] == IFINDEX, where
    assert fields["output_internal"] is True, where
    assert fields["agent_address"] == AGENT_IP, where
    assert record.sampling_rate == rate

    doc = sflow_document(record)
    assert doc["flowd.sampling_rate"] == rate
    assert doc["network.bytes"] == fields["frame_length"] * rate == (packet.length + FCS) * rate
    assert doc["network.packets"] == rate
    assert doc["flowd.raw_bytes"] == fields["frame_length"]
    assert doc["source.ip"] == fields["src_ip"]
    assert doc["destination.ip"] == fields["dst_ip"]
    assert doc["network.iana_number"] == str(packet.protocol)
    assert doc["network.type"] == f"ipv{packet.ip_version}"
    assert doc["observer.ip"] == AGENT_IP
    assert doc["sflow.sub_agent_id"] == AGENT_SUB_ID
    assert doc["observer.ingress.interface.id"] == IFINDEX
    if packet.src_port is not None:
        assert (doc["source.port"], doc["destination.port"]) == (packet.src_port, packet.dst_port)


def _check_run(run: ProbeRun, expected: list[Expected], rate: int) -> list[FlowRecord]:
    """Every flow sample is the capture packet at position sample_pool - 1, in order, with no
    sequence gaps; returns the samples of the packets under test."""
    samples = sorted(_flow_samples(run.datagrams), key=lambda record: record.fields["sample_sequence"])
    sequences = [record.fields["sample_sequence"] for record in samples]
    assert sequences == list(range(1, len(samples) + 1)), "pmacctd's flow samples are missing or repeated"
    pools = [record.fields["sample_pool"] for record in samples]
    assert pools == sorted(set(pools)), "a packet was sampled twice or out of order"
    for record in samples:
        _check_sample(record, expected[record.fields["sample_pool"] - 1], rate)
    # Matched by content too, not only by position: each sample's packet is the next one in the
    # capture with its 5-tuple and length (all packets here differ in those).
    keys = [(p.src_ip, p.dst_ip, p.src_port, p.dst_port, p.protocol, p.length) for p in expected]
    assert len(set(keys)) == len(keys)
    position = 0
    for record in samples:
        f = record.fields
        key = (str(f["src_ip"]), str(f["dst_ip"]), f.get("src_port"), f.get("dst_port"), f["protocol"])
        while keys[position][:5] != key or keys[position][5] != f["frame_length"] - FCS:
            position += 1
        assert position == f["sample_pool"] - 1
        position += 1
    return [record for record in samples if record.fields["sample_pool"] <= PACKETS]


def test_every_packet_sampled_once_at_rate_1(tmp_path: Path, capture: tuple[Path, list[Expected]]) -> None:
    pcap, expected = capture
    run = _run(tmp_path, pcap, 1)
    under_test = _check_run(run, expected, 1)
    seen = Counter(record.fields["sample_pool"] for record in under_test)
    assert sorted(seen) == list(range(1, PACKETS + 1)), "packets under test with no sample"
    assert set(seen.values()) == {1}
    for record in under_test:
        assert record.fields["sample_sequence"] == record.fields["sample_pool"]
    truncated = sum(1 for packet in expected[:PACKETS] if packet.length > HEADER_BYTES)
    assert 0 < truncated < PACKETS  # some headers cut at 128 bytes, some whole


def test_sampling_rate_4_scales_and_samples_about_a_quarter(
    tmp_path: Path, capture: tuple[Path, list[Expected]]
) -> None:
    pcap, expected = capture
    rate = 4
    run = _run(tmp_path, pcap, rate)
    under_test = _check_run(run, expected, rate)
    pools = [record.fields["sample_pool"] for record in _flow_samples(run.datagrams)]
    pools.sort()
    # pmacct's software sampler: the next sample is 1 to 2N-1 packets after the last one.
    gaps = [later - earlier for earlier, later in zip([0, *pools], pools, strict=False)]
    assert all(1 <= gap <= 2 * rate - 1 for gap in gaps), gaps
    # About PACKETS / rate samples (mean gap N, standard deviation of the count about 4 here).
    assert PACKETS // (2 * rate) <= len(under_test) <= PACKETS // 2, len(under_test)
    assert len(under_test) < PACKETS
