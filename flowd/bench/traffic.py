"""Realistic export traffic for the pps harness, built with scapy and kept as bytes.

Each exporter (a router or switch) gets its own source address and port on the sending side,
its own observation domain / source id and its own templates; its stream starts with its
templates and repeats them every `template_refresh` data datagrams, as routers refresh templates
over UDP (Cisco's default: every 20 packets; RFC 7011 section 8.4 asks for periodic resends).
Flows follow the shape of an enterprise edge: internal hosts in 10/8 and public peers drawn
with Zipf-like popularity, mostly TCP to a few service ports (443 dominant) from ephemeral
client ports, some UDP (DNS, QUIC, NTP) and ICMP, log-normal packet counts and packet sizes,
about 10% IPv6. sFlow v5 carries flow samples with 128-byte sampled headers (Ethernet/IP/L4
frames built with scapy) at 1-in-1024 sampling; scapy has no sFlow layer, so the XDR framing of
sFlow v5 (sflow.org/sflow_version_5.txt) is packed with struct around scapy's frames.

Everything is built once, before a run; the senders replay the bytes. Templates and datagrams
carry no per-send state (sequence numbers repeat when a pool is replayed; collectors count
that as sequence gaps, not as loss).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.netflow import (
    GetNetflowRecordV9,
    NetflowDataflowsetV9,
    NetflowFlowsetV9,
    NetflowHeader,
    NetflowHeaderV5,
    NetflowHeaderV9,
    NetflowHeaderV10,
    NetflowRecordV5,
    NetflowTemplateFieldV9,
    NetflowTemplateV9,
)
from scapy.packet import Raw

from flowd.bench import IPV4_RECORD_FIELDS, IPV6_SHARE, PROTOCOLS

_template_field: Callable[..., Any] = NetflowTemplateFieldV9  # scapy is untyped
_record_class: Callable[..., Any] = GetNetflowRecordV9

UPTIME_MS = 86_400_000
TEMPLATE_V4 = 256
TEMPLATE_V6 = 257
SFLOW_HEADER_BYTES = 128
SFLOW_SAMPLING_RATE = 1024
RECORDS_PER_DATAGRAM = {"v5": 30, "v9": 22, "ipfix": 20, "sflow": 6}
"""About 1,400-byte datagrams: v5 records are 48 bytes, the v9 IPv4 template's 62, IPFIX's 70."""
V6_RECORDS_PER_DATAGRAM = 14

_COMMON_V4 = IPV4_RECORD_FIELDS
_COMMON_V6 = (
    (27, 16),
    (28, 16),
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 1),
    (5, 1),
    (10, 4),
    (14, 4),
    (1, 8),
    (2, 8),
    (29, 1),
    (30, 1),
)
V9_TIMES = ((22, 4), (21, 4))  # FIRST_SWITCHED, LAST_SWITCHED: sysUptime milliseconds
IPFIX_TIMES = ((152, 8), (153, 8))  # flowStartMilliseconds, flowEndMilliseconds
SERVICES: tuple[tuple[int, int, int], ...] = (
    # (port, protocol, weight)
    (443, 6, 45),
    (443, 17, 9),
    (80, 6, 10),
    (53, 17, 10),
    (123, 17, 2),
    (22, 6, 2),
    (25, 6, 1),
    (993, 6, 2),
    (8080, 6, 2),
    (3478, 17, 2),
    (5222, 6, 1),
    (3306, 6, 1),
    (445, 6, 1),
    (1194, 17, 1),
)
PUBLIC_PREFIXES = (0x08080000, 0x34000000, 0x68100000, 0x97650000, 0xB9C70000, 0x17000000, 0x8EFA0000, 0x0D200000)
PUBLIC_ASNS = (15169, 16509, 13335, 54113, 32934, 8075, 20940, 2906, 3356, 174)


@dataclass(slots=True, frozen=True)
class Datagram:
    payload: bytes
    flows: int
    """Flow records (NetFlow/IPFIX) or flow samples (sFlow) in the datagram; 0 for templates."""
    packets: int
    """Sum of the records' packet counters (sFlow: one per sample), what pmacct's print plugin sums."""


@dataclass(slots=True)
class ExporterStream:
    index: int
    datagrams: list[Datagram]
    """One replay cycle: templates first, then data with template refreshes."""


@dataclass(slots=True)
class Traffic:
    protocol: str
    streams: list[ExporterStream] = field(default_factory=list)
    build_s: float = 0.0

    @property
    def data_datagrams(self) -> int:
        return sum(1 for s in self.streams for d in s.datagrams if d.flows)

    @property
    def mean_flows_per_datagram(self) -> float:
        sent = [d for s in self.streams for d in s.datagrams]
        return sum(d.flows for d in sent) / max(1, len(sent))

    @property
    def mean_datagram_bytes(self) -> float:
        sent = [d for s in self.streams for d in s.datagrams]
        return sum(len(d.payload) for d in sent) / max(1, len(sent))


@dataclass(slots=True)
class Flow:
    source: str
    destination: str
    source_port: int
    destination_port: int
    protocol: int
    tcp_flags: int
    packets: int
    octets: int
    input_interface: int
    output_interface: int
    source_as: int
    destination_as: int
    start_ms: int
    """Milliseconds before export time at which the flow started."""
    duration_ms: int
    ipv6: bool


class FlowMix:
    """Draws flows with realistic distributions from a seeded generator."""

    def __init__(self, seed: int, internal_hosts: int = 5_000, public_hosts: int = 20_000) -> None:
        self.rng = random.Random(seed)
        self.internal = [0x0A000000 + self.rng.randrange(1, 1 << 24) for _ in range(internal_hosts)]
        self.public = [self.rng.choice(PUBLIC_PREFIXES) + self.rng.randrange(1, 1 << 16) for _ in range(public_hosts)]
        self._internal_cdf = _zipf_cdf(internal_hosts, 1.1)
        self._public_cdf = _zipf_cdf(public_hosts, 1.2)
        self._service_cdf = list(itertools.accumulate(w for _, _, w in SERVICES))

    def _pick(self, population: list[int], cdf: list[float]) -> int:
        return population[bisect.bisect_left(cdf, self.rng.random() * cdf[-1])]

    def flow(self, ipv6: bool = False) -> Flow:
        rng = self.rng
        inside = self._pick(self.internal, self._internal_cdf)
        outside = self._pick(self.public, self._public_cdf)
        client_port = rng.randrange(32_768, 61_000)
        if rng.random() < 0.02:
            protocol, service_port, client_port, flags = 1, (8 << 8) | 0, 0, 0  # ICMP echo: type<<8|code
        else:
            index = bisect.bisect_left(self._service_cdf, rng.random() * self._service_cdf[-1])
            service_port, protocol, _ = SERVICES[index]
            flags = rng.choice((0x1B, 0x1B, 0x1B, 0x1F, 0x02, 0x18, 0x10)) if protocol == 6 else 0
        packets = max(1, int(rng.lognormvariate(1.6, 1.4)))
        size = min(1500, max(40, int(rng.lognormvariate(6.0, 0.9))))
        outbound = rng.random() < 0.5
        src, dst = (inside, outside) if outbound else (outside, inside)
        sport, dport = (client_port, service_port) if outbound else (service_port, client_port)
        return Flow(
            source=_text_address(src, ipv6),
            destination=_text_address(dst, ipv6),
            source_port=sport,
            destination_port=dport,
            protocol=protocol,
            tcp_flags=flags,
            packets=packets,
            octets=packets * size,
            input_interface=rng.randrange(1, 49),
            output_interface=rng.randrange(1, 49),
            source_as=0 if outbound else rng.choice(PUBLIC_ASNS),
            destination_as=rng.choice(PUBLIC_ASNS) if outbound else 0,
            start_ms=rng.randrange(1_000, 60_000),
            duration_ms=rng.randrange(0, 30_000) if packets > 1 else 0,
            ipv6=ipv6,
        )


def _zipf_cdf(count: int, exponent: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank**exponent) for rank in range(1, count + 1)))


def _text_address(value: int, ipv6: bool) -> str:
    if ipv6:
        return f"2001:db8:{(value >> 16) & 0xFFFF:x}:{value & 0xFFFF:x}::{(value >> 8) & 0xFF:x}"
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))


# --- NetFlow v5 -------------------------------------------------------------------------------


def _v5_datagram(mix: FlowMix, export_s: int, sequence: int, count: int) -> Datagram:
    flows = [mix.flow() for _ in range(count)]
    records = [
        NetflowRecordV5(
            src=f.source,
            dst=f.destination,
            nexthop="192.0.2.254",
            input=f.input_interface,
            output=f.output_interface,
            dpkts=f.packets,
            dOctets=f.octets,
            first=UPTIME_MS - f.start_ms,
            last=UPTIME_MS - f.start_ms + f.duration_ms,
            srcport=f.source_port,
            dstport=f.destination_port,
            tcpFlags=f.tcp_flags,
            prot=f.protocol,
            src_as=f.source_as & 0xFFFF,
            dst_as=f.destination_as & 0xFFFF,
            src_mask=24,
            dst_mask=24,
        )
        for f in flows
    ]
    header = NetflowHeader(version=5) / NetflowHeaderV5(
        count=count, sysUptime=UPTIME_MS, unixSecs=export_s, flowSequence=sequence
    )
    # Stacking 30 records with `/` is quadratic in scapy; the records' bytes are the same.
    payload = bytes(header) + b"".join(bytes(record) for record in records)
    return Datagram(payload, count, sum(f.packets for f in flows))


# --- NetFlow v9 and IPFIX ---------------------------------------------------------------------


def _template_flowset(ipfix: bool) -> Any:
    times = IPFIX_TIMES if ipfix else V9_TIMES
    templates = [
        NetflowTemplateV9(
            templateID=template_id,
            template_fields=[_template_field(fieldType=t, fieldLength=n) for t, n in layout + times],
        )
        for template_id, layout in ((TEMPLATE_V4, _COMMON_V4), (TEMPLATE_V6, _COMMON_V6))
    ]
    return NetflowFlowsetV9(flowSetID=2 if ipfix else 0, templates=templates)


def _message(ipfix: bool, export_s: int, sequence: int, domain: int, sets: Any) -> bytes:
    """Header and sets; the IPFIX message length is set here because scapy computes it before
    the data set's padding is added."""
    body = bytes(sets)
    if ipfix:
        header = NetflowHeader(version=10) / NetflowHeaderV10(
            length=16 + len(body), ExportTime=export_s, flowSequence=sequence, ObservationDomainID=domain
        )
        return bytes(header) + body
    header = NetflowHeader(version=9) / NetflowHeaderV9(
        sysUptime=UPTIME_MS, unixSecs=export_s, packageSequence=sequence, SourceID=domain
    )
    return bytes(header / sets)


def _v9_record(record_class: Any, flow: Flow, ipfix: bool, export_ms: int) -> Any:
    values: dict[str, Any] = {
        "L4_SRC_PORT": flow.source_port,
        "L4_DST_PORT": flow.destination_port,
        "PROTOCOL": flow.protocol,
        "TCP_FLAGS": flow.tcp_flags,
        "TOS": 0,
        "INPUT_SNMP": flow.input_interface,
        "OUTPUT_SNMP": flow.output_interface,
        "IN_BYTES": flow.octets,
        "IN_PKTS": flow.packets,
    }
    if flow.ipv6:
        values.update(IPV6_SRC_ADDR=flow.source, IPV6_DST_ADDR=flow.destination, IPV6_SRC_MASK=48, IPV6_DST_MASK=48)
    else:
        values.update(
            IPV4_SRC_ADDR=flow.source,
            IPV4_DST_ADDR=flow.destination,
            IPV4_NEXT_HOP="192.0.2.254",
            SRC_AS=flow.source_as,
            DST_AS=flow.destination_as,
            SRC_MASK=24,
            DST_MASK=24,
        )
    if ipfix:
        values.update(
            flowStartMilliseconds=export_ms - flow.start_ms,
            flowEndMilliseconds=export_ms - flow.start_ms + flow.duration_ms,
        )
    else:
        first = UPTIME_MS - flow.start_ms
        values.update(FIRST_SWITCHED=first, LAST_SWITCHED=first + flow.duration_ms)
    return record_class(**values)


def _v9_stream(
    mix: FlowMix, ipfix: bool, index: int, data_datagrams: int, template_refresh: int, export_s: int, ipv6_share: float
) -> ExporterStream:
    domain = 1000 + index
    flowset = _template_flowset(ipfix)
    classes = {tid: _record_class(flowset, templateID=tid) for tid in (TEMPLATE_V4, TEMPLATE_V6)}
    datagrams = []
    # What the next message's header says was sent before it: data records for IPFIX (RFC 7011
    # 3.1; template records do not count), export packets for v9 (RFC 3954 5.1).
    sequence = 0
    for number in range(data_datagrams):
        if number % max(1, template_refresh) == 0:
            datagrams.append(Datagram(_message(ipfix, export_s, sequence, domain, flowset), 0, 0))
            sequence += 0 if ipfix else 1
        ipv6 = math.floor((number + 1) * ipv6_share + 1e-9) > math.floor(number * ipv6_share + 1e-9)  # 9, 19, ...
        count = V6_RECORDS_PER_DATAGRAM if ipv6 else RECORDS_PER_DATAGRAM["ipfix" if ipfix else "v9"]
        flows = [mix.flow(ipv6) for _ in range(count)]
        record_class = classes[TEMPLATE_V6 if ipv6 else TEMPLATE_V4]
        records = [_v9_record(record_class, f, ipfix, export_s * 1000) for f in flows]
        data_set = NetflowDataflowsetV9(templateID=TEMPLATE_V6 if ipv6 else TEMPLATE_V4, records=records)
        payload = _message(ipfix, export_s, sequence, domain, data_set)
        sequence += count if ipfix else 1
        datagrams.append(Datagram(payload, count, sum(f.packets for f in flows)))
    return ExporterStream(index, datagrams)


# --- sFlow v5 ---------------------------------------------------------------------------------


def _xdr(data_format: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!II", data_format, len(body)) + body


_HOP_LIMITS = (64, 128, 255)
"""Initial TTLs of common stacks (Linux/macOS, Windows, network gear), less the hops travelled."""
_DSCP_MARKS = (0, 0, 0, 0, 0, 0, 0x28, 0x48, 0xB8)
"""Mostly best effort, some AF11/AF21 and EF traffic (the TOS byte: DSCP << 2)."""


def _sampled_frame(flow: Flow, rng: random.Random) -> bytes:
    """The packet a switch would sample: its IP length is the packet's, its TTL and DSCP vary."""
    size = max(64, min(1514, flow.octets // max(1, flow.packets)))
    hops = rng.choice(_HOP_LIMITS) - rng.randrange(1, 24)
    tos = rng.choice(_DSCP_MARKS)
    if flow.ipv6:
        network: Any = IPv6(src=flow.source, dst=flow.destination, hlim=hops, tc=tos, fl=rng.randrange(1 << 20))
    else:
        network = IP(src=flow.source, dst=flow.destination, ttl=hops, tos=tos, id=rng.randrange(1 << 16))
    if flow.protocol == 6:
        transport: Any = TCP(sport=flow.source_port, dport=flow.destination_port, flags=flow.tcp_flags or 0x10)
    elif flow.protocol == 17:
        transport = UDP(sport=flow.source_port, dport=flow.destination_port)
    else:
        transport = ICMP(type=8)
    frame = Ether(src="02:00:5e:00:53:01", dst=f"02:00:5e:00:{rng.randrange(256):02x}:02") / network / transport
    return bytes(frame / Raw(b"\x00" * max(0, size - len(frame))))


def _routing_records(flow: Flow, rng: random.Random) -> bytes:
    """Extended router and gateway records as a BGP router adds them: the next hop and prefix
    lengths, then the BGP next hop, AS numbers, a one-segment AS path ending at the flow's
    destination AS, and a few communities."""
    next_hop = struct.pack("!I4s", 1, bytes([192, 0, 2, 1 + flow.output_interface % 8]))
    router = next_hop + struct.pack("!II", rng.choice((16, 20, 24)), rng.choice((16, 22, 24)))
    path = [64600 + flow.output_interface % 4, *([174] if flow.destination_as % 3 else []), flow.destination_as]
    communities = [(64500 << 16) | rng.choice((100, 200, 300))][: flow.destination_as % 3]
    gateway = (
        next_hop
        + struct.pack("!IIII", 64500, flow.source_as, 64600 + flow.input_interface % 4, 1)
        + struct.pack(f"!II{len(path)}I", 2, len(path), *path)
        + struct.pack(f"!I{len(communities)}I", len(communities), *communities)
        + struct.pack("!I", 100)
    )
    return _xdr(1002, router) + _xdr(1003, gateway)


def _sflow_stream(
    mix: FlowMix, index: int, data_datagrams: int, ipv6_share: float, router_records: bool
) -> ExporterStream:
    agent = bytes([192, 0, 2, 1 + index % 250])
    rng = mix.rng
    datagrams = []
    sample_sequence = 0
    for number in range(data_datagrams):
        count = RECORDS_PER_DATAGRAM["sflow"]
        samples = []
        for _ in range(count):
            flow = mix.flow(ipv6=rng.random() < ipv6_share)
            frame = _sampled_frame(flow, rng)
            header = frame[:SFLOW_HEADER_BYTES]
            raw = struct.pack("!IIII", 1, len(frame) + 4, 4, len(header)) + header  # ethernet, FCS stripped
            switch = struct.pack("!IIII", 100, 0, 100, 0)
            records = _xdr(1, raw) + _xdr(1001, switch)
            if router_records:
                records += _routing_records(flow, rng)
            sample_sequence += 1
            body = (
                struct.pack(
                    "!8I",
                    sample_sequence,
                    flow.input_interface,
                    SFLOW_SAMPLING_RATE,
                    sample_sequence * SFLOW_SAMPLING_RATE,
                    0,
                    flow.input_interface,
                    flow.output_interface,
                    4 if router_records else 2,
                )
                + records
            )
            samples.append(_xdr(1, body))
        uptime = UPTIME_MS + number * 100
        header_bytes = struct.pack("!II4sIIII", 5, 1, agent, index, number + 1, uptime, count)
        datagrams.append(Datagram(header_bytes + b"".join(samples), count, count))
    return ExporterStream(index, datagrams)


def build_traffic(
    protocol: str,
    *,
    exporters: int = 16,
    datagrams_per_exporter: int = 64,
    template_refresh: int = 20,
    seed: int = 1,
    ipv6_share: float = IPV6_SHARE,
    router_records: bool = False,
) -> Traffic:
    """Every exporter's replay cycle for one protocol (see the module docstring); `ipv6_share`
    of the NetFlow v9/IPFIX datagrams and sFlow samples carry IPv6 (v5 has none);
    `router_records` gives sFlow samples the extended router and gateway records of a BGP router."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; one of {', '.join(PROTOCOLS)}")
    started = time.perf_counter()
    export_s = int(time.time())
    traffic = Traffic(protocol)
    for index in range(exporters):
        mix = FlowMix(seed * 1_000 + index)
        if protocol == "v5":
            stream = ExporterStream(
                index,
                [
                    _v5_datagram(mix, export_s, n * RECORDS_PER_DATAGRAM["v5"], RECORDS_PER_DATAGRAM["v5"])
                    for n in range(datagrams_per_exporter)
                ],
            )
        elif protocol == "sflow":
            stream = _sflow_stream(mix, index, datagrams_per_exporter, ipv6_share, router_records)
        else:
            stream = _v9_stream(
                mix, protocol == "ipfix", index, datagrams_per_exporter, template_refresh, export_s, ipv6_share
            )
        traffic.streams.append(stream)
    traffic.build_s = time.perf_counter() - started
    return traffic


def template_datagrams(count: int, exporters: int = 10) -> list[list[bytes]]:
    """NetFlow v9 template datagrams defining `count` distinct templates over `exporters` source
    ids (per exporter socket): for the RSS-with-many-templates measurement. Each template has
    the common IPv4 layout plus a distinguishing number of padding fields."""
    per_exporter = -(-count // exporters)
    out: list[list[bytes]] = []
    made = 0
    for exporter in range(exporters):
        datagrams: list[bytes] = []
        batch: list[Any] = []
        for number in range(per_exporter):
            if made >= count:
                break
            layout = _COMMON_V4 + V9_TIMES + ((210, 1 + number % 7),)  # paddingOctets of varying length
            fields = [_template_field(fieldType=t, fieldLength=n) for t, n in layout]
            batch.append(NetflowTemplateV9(templateID=256 + number, template_fields=fields))
            made += 1
            if len(batch) == 15 or number == per_exporter - 1 or made == count:
                flowset = NetflowFlowsetV9(flowSetID=0, templates=batch)
                datagrams.append(_message(False, int(time.time()), len(datagrams), 5000 + exporter, flowset))
                batch = []
        out.append(datagrams)
    return out
