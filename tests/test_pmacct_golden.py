"""flowd against pmacct's own expected output for its NetFlow v9 / IPFIX regression tests.

Each `shared/corpus/pmacct/<test>/output-flow-00.json` is newline-delimited JSON written by
nfacctd (pmacct's NetFlow/IPFIX collector) after *aggregation*: one line per distinct
combination of the test's configured primitives, with `bytes` and `packets` summed over the
flows that fell into it (`flows` is null: not counted). Many primitives come from enrichment we
do not do (BGP/BMP communities and AS paths, pre-tag `label`, `mpls_vpn_rd` from maps,
`custom_primitives`, `fwd_status` text, ...), so the comparison re-aggregates both sides on the
primitives every test has and we decode: (`peer_ip_src`, `ip_src`, `ip_dst`, `port_src`,
`port_dst`, `ip_proto`), summing `bytes`/`packets` on pmacct's side and `network.bytes` /
`network.packets` of our flow documents on ours.

What pmacct does, as read from these files:
- `peer_ip_src` is not the address in the pcap: pmacct's test harness replays the capture from
  its own addresses (172.21.1.101, .102, fd25::101), one per pcap (`PEERS` below).
- `ip_proto` is the protocol name (getprotobynumber style: tcp, udp, icmp, ipv6-icmp, vrrp).
- Cisco SRv6 templates (400, 500, 502) carry the 5-tuple twice: outer IPv6 addresses, ports
  and protocol (4 = IPv4-in-IPv6, 41 = IPv6-in-IPv6), then the inner ones. pmacct reports the
  *inner* 5-tuple as ip_src/ip_dst/ports/ip_proto and the outer addresses and protocol as
  tunnel_ip_src/tunnel_ip_dst/tunnel_ip_proto.
- Templates with both IPv4 and IPv6 address fields (template 313 in 400/501/502), of which the
  exporter fills only one family: pmacct reports the filled one (never 0.0.0.0 or ::).
- Sampling: pmacct renormalises counters with the exporter's sampling options. In 104 the
  options record (template 257) says selectorAlgorithm 3 (random n-out-of-N), samplingSize 1,
  samplingPopulation 256 (samplingPacketInterval 1), and every pmacct bytes/packets value is
  exactly 256 x the raw counters: the rate is samplingPopulation / samplingSize. In 400, 501 and
  502 the same sampler has population 1, and 500 has no population: factor 1, pmacct's numbers
  equal the raw counters. Test 102 ("sampling-reload") carries no sampling information in the
  export and its output-flow-00 equals the raw counters exactly (its sampling is pmacct
  configuration, applied after the reload that output-flow-01 shows; not compared here).
  So in every test pmacct's values are the *scaled* ones: compared with our `network.bytes`
  and `network.packets` (raw counters x the sampling rate we derived), not `flowd.raw_*`.
"""

from __future__ import annotations

import ipaddress
import json
from collections import defaultdict
from typing import Any

import pytest

from flowd.capture import read_datagrams
from tests.corpus_units import CORPUS, corpus_available

pytestmark = pytest.mark.skipif(not corpus_available(), reason="shared corpus not found (set FLOWD_CORPUS)")

PEERS: dict[str, dict[str, str]] = {
    "100-IPFIXv10-CISCO": {"traffic-00.pcap": "172.21.1.101"},
    "101-NFv9-CISCO-cust_primitives": {"traffic-00.pcap": "172.21.1.101"},
    "102-NFv9-CISCO-f2rd-pretag-sampling-reload": {"traffic-00.pcap": "172.21.1.101"},
    "104-IPFIXv10-IPv6-CISCO-sampling_option": {"traffic-00.pcap": "fd25::101"},
    "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources": {"traffic-00.pcap": "172.21.1.101", "traffic-01.pcap": "fd25::101"},
    "400-IPFIXv10-BMP-CISCO-SRv6-multiple-sources": {
        "traffic-00.pcap": "172.21.1.101",
        "traffic-01.pcap": "172.21.1.102",
    },
    "500-IPFIXv10-BGP-CISCO-SRv6": {"traffic-00.pcap": "172.21.1.101"},
    "501-IPFIXv10-BGP-IPv6-CISCO-MPLS": {"traffic-00.pcap": "fd25::101"},
    "502-IPFIXv10-BGP-IPv6-CISCO-SRv6-lcomms": {"traffic-00.pcap": "fd25::101"},
}
"""pmacct test -> {pcap: the peer_ip_src pmacct's replay gave it}."""

PROTOCOLS = {
    "icmp": 1,
    "igmp": 2,
    "ipencap": 4,
    "tcp": 6,
    "udp": 17,
    "ipv6": 41,
    "gre": 47,
    "ipv6-icmp": 58,
    "vrrp": 112,
}

Key = tuple[str, str, str, int, int, int]


def _address(value: Any) -> str:
    return str(ipaddress.ip_address(str(value)))


def pmacct_totals(test: str) -> dict[Key, list[int]]:
    """pmacct's output-flow-00.json summed on our key: key -> [bytes, packets, lines]."""
    totals: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0])
    for line in (CORPUS / "pmacct" / test / "output-flow-00.json").read_text().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        proto = entry["ip_proto"]
        number = int(proto) if str(proto).isdigit() else PROTOCOLS[proto]
        key = (
            _address(entry["peer_ip_src"]),
            _address(entry["ip_src"]),
            _address(entry["ip_dst"]),
            int(entry["port_src"]),
            int(entry["port_dst"]),
            number,
        )
        total = totals[key]
        total[0] += entry["bytes"]
        total[1] += entry["packets"]
        total[2] += 1
    return dict(totals)


def flowd_totals(test: str) -> dict[Key, list[int]]:
    """Our flow documents of the test's pcaps summed on the same key: key -> [bytes, packets, records]."""
    from flowd.decode import TemplateCache, decode_datagram
    from flowd.output.documents import flow_document

    totals: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0])
    templates = TemplateCache()
    for pcap, peer in PEERS[test].items():
        for datagram in read_datagrams(CORPUS / "pmacct" / test / pcap):
            result = decode_datagram(datagram.payload, datagram.source, templates, datagram.timestamp)
            for record in result.flows:
                doc = flow_document(record)
                key = (
                    _address(peer),
                    _address(doc.get("source.ip", "0.0.0.0")),
                    _address(doc.get("destination.ip", "0.0.0.0")),
                    int(doc.get("source.port", 0)),
                    int(doc.get("destination.port", 0)),
                    int(doc.get("network.iana_number", 0)),
                )
                total = totals[key]
                total[0] += int(doc["network.bytes"])
                total[1] += int(doc["network.packets"])
                total[2] += 1
    return dict(totals)


def _describe(key: Key, value: list[int] | None) -> str:
    peer, src, dst, sport, dport, proto = key
    counts = "absent" if value is None else f"bytes {value[0]} packets {value[1]} ({value[2]} rows)"
    return f"[{peer}] {_endpoint(src, sport)} -> {_endpoint(dst, dport)} proto {proto}: {counts}"


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def test_every_pmacct_test_is_covered() -> None:
    found = {path.parent.name for path in (CORPUS / "pmacct").glob("*/output-flow-00.json")}
    assert found == set(PEERS)
    for test, pcaps in PEERS.items():
        assert {p.name for p in (CORPUS / "pmacct" / test).glob("*.pcap")} == set(pcaps)


@pytest.mark.parametrize("test", list(PEERS))
def test_flowd_aggregates_match_pmacct(test: str) -> None:
    theirs = pmacct_totals(test)
    ours = flowd_totals(test)
    problems = []
    for key in sorted(set(theirs) | set(ours), key=repr):
        mine, other = ours.get(key), theirs.get(key)
        if mine is None or other is None or mine[:2] != other[:2]:
            problems.append(f"flowd {_describe(key, mine)}\n      pmacct {_describe(key, other)}")
    assert not problems, f"{test}: {len(problems)} of {len(theirs)} pmacct keys differ:\n  " + "\n  ".join(problems)


def test_pmacct_output_is_parsed() -> None:
    """Guards the parsing: the row counts are the ones in the corpus."""
    rows = {test: sum(v[2] for v in pmacct_totals(test).values()) for test in PEERS}
    assert rows == {
        "100-IPFIXv10-CISCO": 12,
        "101-NFv9-CISCO-cust_primitives": 51,
        "102-NFv9-CISCO-f2rd-pretag-sampling-reload": 35,
        "104-IPFIXv10-IPv6-CISCO-sampling_option": 3,
        "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources": 23,
        "400-IPFIXv10-BMP-CISCO-SRv6-multiple-sources": 76,
        "500-IPFIXv10-BGP-CISCO-SRv6": 43,
        "501-IPFIXv10-BGP-IPv6-CISCO-MPLS": 74,
        "502-IPFIXv10-BGP-IPv6-CISCO-SRv6-lcomms": 74,
    }
