"""Community ID v1 against the published baseline of corelight/community-id-spec
(baseline/baseline_deflt.json for seed 0, baseline/baseline_seed1.json for seed 1).

For ICMP/ICMPv6 the baseline lists the port equivalents; for request/reply types the first is the
type and the second its counterpart, so passing (type, anything) must reproduce them; for
one-way types they are (type, code).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowd.config import EnrichSettings
from flowd.enrich import community_id as community_id_module
from flowd.enrich.chain import EnrichmentChain
from flowd.enrich.community_id import community_id, community_ids_bulk, seed_bytes

# (proto, saddr, daddr, sport, dport, seed 0, seed 1)
BASELINE = [
    (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 136,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 136, 135,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 135, 136,
     "1:zavyT/cezQr1fmImYCwYnMXbgck=", "1:2hSqmsDZ2kdcY9kbiUzOEBic0iM="),
    (58, "3ffe:501:1800:2345::2", "3ffe:507:0:1:200:86ff:fe05:80da", 3, 0,
     "1:2ObVBgIn28oZvibYZhZMBgh7WdQ=", "1:lVEtCZpYu84Xqaa++3lXFyuu2n4="),
    (58, "3ffe:501:410:0:2c0:dfff:fe47:33e", "3ffe:507:0:1:200:86ff:fe05:80da", 1, 4,
     "1:hLZd0XGWojozrvxqE0dWB1iM6R0=", "1:W8MHwXpWzpoSTD+cGcaJr4u0ys8="),
    (58, "3ffe:507:0:1:200:86ff:fe05:80da", "3ffe:501:0:1001::2", 128, 129,
     "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=", "1:GfZxjAkDk2MkegpBYHV6tadtFXQ="),
    (58, "3ffe:501:0:1001::2", "3ffe:507:0:1:200:86ff:fe05:80da", 129, 128,
     "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=", "1:GfZxjAkDk2MkegpBYHV6tadtFXQ="),
    (58, "fe80::200:86ff:fe05:80da", "ff02::2", 133, 134,
     "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=", "1:L7Ka0ZMYu+J3bL4ulW2PrqyXNo8="),
    (58, "fe80::260:97ff:fe07:69ea", "ff02::1", 134, 133,
     "1:pkvHqCL88/tg1k4cPigmZXUtL00=", "1:K/ee5UCqAMAQXDorP5nSa2CGLjc="),
    (1, "192.168.0.89", "192.168.0.1", 8, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    (1, "192.168.0.1", "192.168.0.89", 0, 8, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    (1, "10.0.0.1", "10.0.0.2", 11, 0, "1:YHxtAirCG//0OzkcVAukqKQN9xM=", "1:XjUibYHaafLQ3pxQeiMI8g25q20="),
    (6, "2001:470:e5bf:dead:4957:2174:e82c:4887", "2607:f8b0:400c:c03::1a", 63943, 25,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=", "1:eJYTW6AOzFLlSUoESovMjnu7rMw="),
    (6, "2607:f8b0:400c:c03::1a", "2001:470:e5bf:dead:4957:2174:e82c:4887", 25, 63943,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=", "1:eJYTW6AOzFLlSUoESovMjnu7rMw="),
    (132, "192.168.170.8", "192.168.170.56", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=", "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg="),
    (132, "192.168.170.56", "192.168.170.8", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=", "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg="),
    (6, "128.232.110.120", "66.35.250.204", 34855, 80,
     "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
    (6, "66.35.250.204", "128.232.110.120", 80, 34855,
     "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
    (17, "192.168.1.52", "8.8.8.8", 54585, 53, "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
    (17, "8.8.8.8", "192.168.1.52", 53, 54585, "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
    (46, "10.1.12.1", "10.1.12.2", None, None, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=", "1:rYir8gphR31noO9iDRQmF/BteEI="),
    (46, "10.1.12.2", "10.1.12.1", None, None, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=", "1:rYir8gphR31noO9iDRQmF/BteEI="),
]  # fmt: skip


def packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


@pytest.mark.parametrize(("proto", "saddr", "daddr", "sport", "dport", "seed0", "seed1"), BASELINE)
def test_baseline(
    proto: int, saddr: str, daddr: str, sport: int | None, dport: int | None, seed0: str, seed1: str
) -> None:
    for seed, expected in ((0, seed0), (1, seed1)):
        actual = community_id(packed(saddr), packed(daddr), proto, sport or 0, dport or 0, seed_bytes(seed))
        assert actual == expected


def test_icmp_request_reply_types_ignore_the_code() -> None:
    # Echo request type 8 with code 0; the baseline's second value is the counterpart type (0).
    a, b = packed("192.168.0.89"), packed("192.168.0.1")
    assert community_id(a, b, 1, 8, 0, seed_bytes(0)) == community_id(a, b, 1, 8, 5, seed_bytes(0))


def test_icmp_router_advertisement_pairs_with_the_solicitation() -> None:
    """Type 10 from A to B and type 9 from B to A are one conversation (the specification's
    reference code and Zeek map 9 <-> 10); the value is the hash of the spec's input, by hand."""
    a, b = packed("10.0.0.1"), packed("10.0.0.2")
    hashed = bytes(2) + a + b + bytes([1, 0]) + (10).to_bytes(2, "big") + (9).to_bytes(2, "big")
    expected = "1:" + base64.b64encode(hashlib.sha1(hashed).digest()).decode()
    assert community_id(a, b, 1, 10, 0, seed_bytes(0)) == expected
    assert community_id(b, a, 1, 9, 0, seed_bytes(0)) == expected
    rows = np.array([list(b), list(a)], dtype=np.uint8), np.array([list(a), list(b)], dtype=np.uint8)
    for use_numpy in (False, True):
        with mock.patch.object(community_id_module, "WORTH_FROM", 1 if use_numpy else 10**9):
            bulk = community_ids_bulk(
                rows[0],
                rows[1],
                np.array([1, 1]),
                (np.array([9, 10]), np.array([10, 9]), np.array([False, False])),
                seed_bytes(0),
            )
        assert ["1:" + bytes(row).decode() for row in bulk] == [expected, expected]


def run_chain(documents: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    chain = EnrichmentChain(EnrichSettings(community_id_seed=seed, oui_lookup=False))
    asyncio.run(chain.enrich(documents))
    return documents


def test_chain_uses_ports_and_netflow_icmp_encoding() -> None:
    documents = run_chain(
        [
            {"source.ip": "66.35.250.204", "destination.ip": "128.232.110.120", "source.port": 80,
             "destination.port": 34855, "network.iana_number": "6", "network.transport": "tcp"},
            # NetFlow v5 puts ICMP type * 256 + code into the destination port.
            {"source.ip": "192.168.0.1", "destination.ip": "192.168.0.89", "source.port": 0,
             "destination.port": 0 * 256 + 0, "network.iana_number": "1", "network.transport": "icmp"},
            # IPFIX sends the type and code elements.
            {"source.ip": "10.0.0.1", "destination.ip": "10.0.0.2", "netflow.icmp_type_ipv4": 11,
             "netflow.icmp_code_ipv4": 0, "network.iana_number": "1"},
            {"source.ip": "fe80::200:86ff:fe05:80da", "destination.ip": "ff02::2",
             "netflow.icmp_type_code_ipv6": 133 * 256, "network.iana_number": "58"},
        ],
        seed=1,
    )  # fmt: skip
    assert [d["network.community_id"] for d in documents] == [
        "1:3V71V58M3Ksw/yuFALMcW0LAHvc=",
        "1:03g6IloqVBdcZlPyX8r0hgoE7kA=",
        "1:XjUibYHaafLQ3pxQeiMI8g25q20=",
        "1:L7Ka0ZMYu+J3bL4ulW2PrqyXNo8=",
    ]


def test_no_community_id_without_protocol_or_for_mixed_families() -> None:
    documents = run_chain(
        [
            {"source.ip": "10.0.0.1", "destination.ip": "10.0.0.2"},
            {"source.ip": "10.0.0.1", "destination.ip": "2001:db8::1", "network.iana_number": "6"},
            {"source.ip": "not an address", "destination.ip": "10.0.0.2", "network.iana_number": "6"},
        ]
    )
    assert all("network.community_id" not in d for d in documents)


def test_seed_must_fit_in_16_bits() -> None:
    with pytest.raises(ValueError):
        seed_bytes(65536)


_flows = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.booleans()),
    min_size=1,
    max_size=40,
)


@given(_flows, st.sampled_from((4, 16)), st.integers(0, 0xFFFF), st.booleans(), st.booleans())
@settings(max_examples=200, deadline=None)
def test_bulk_equals_one_flow_with_ties_and_one_way_flows(
    flows: list[tuple[int, int, int, int, bool]], length: int, seed: int, with_ports: bool, sha1_in_numpy: bool
) -> None:
    """`community_ids_bulk` (IPv4 hashed from words, IPv6 from bytes) equals `community_id`.
    Addresses come from four per family, so equal addresses and port tie-breaks occur. A one-way
    flow is ICMP destination unreachable (type 3, kept in the order seen); without ports, GRE.
    The batch's SHA-1 is `hashlib`'s per flow or `sha1_batch`'s (large batches), whichever
    `sha1_in_numpy` picks; `community_id` always hashes with `hashlib`."""
    pool = [bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), bytes([192, 0, 2, 1]), bytes([10, 0, 1, 0])]
    if length == 16:
        pool = [bytes(12) + p if i % 2 else p * 4 for i, p in enumerate(pool)]
    rows = [
        (s, d, 3 if one_way and with_ports else sport, dport, one_way and with_ports)
        for s, d, sport, dport, one_way in flows
    ]
    protocols = [47 if not with_ports else 1 if one_way else 6 for *_, one_way in rows]
    with mock.patch.object(community_id_module, "WORTH_FROM", 1 if sha1_in_numpy else len(rows) + 1):
        text = _bulk(rows, pool, length, protocols, with_ports, seed)
    got = ["1:" + row.tobytes().decode("ascii") for row in text]
    expected = [
        community_id(pool[s], pool[d], protocol, sport, dport, seed_bytes(seed))
        for (s, d, sport, dport, _), protocol in zip(rows, protocols, strict=True)
    ]
    assert got == expected


def _bulk(
    rows: list[tuple[int, int, int, int, bool]],
    pool: list[bytes],
    length: int,
    protocols: list[int],
    with_ports: bool,
    seed: int,
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return community_ids_bulk(
        np.frombuffer(b"".join(pool[s] for s, *_ in rows), dtype=np.uint8).reshape(-1, length),
        np.frombuffer(b"".join(pool[d] for _, d, *_ in rows), dtype=np.uint8).reshape(-1, length),
        np.array(protocols, dtype=np.int64),
        (
            np.array([r[2] for r in rows], dtype=np.int64),
            np.array([r[3] for r in rows], dtype=np.int64),
            np.array([r[4] for r in rows], dtype=np.bool_),
        )
        if with_ports
        else None,
        seed_bytes(seed),
    )


def test_sflow_icmp_samples_hash_their_sampled_type_and_code() -> None:
    """Found by an audit: sFlow documents carry the sampled header's ICMP type and code as
    `sflow.icmp_type`/`sflow.icmp_code` and no destination port, and every ICMP sample hashed as
    type 0. Frames built with scapy, sent through a worker's batch decoder (walked in numpy, and
    one datagram alone) and both enrichment paths, against the baseline (seed 0)."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
    from scapy.layers.l2 import Ether

    from flowd.config import EnrichSettings
    from flowd.decode import TemplateCache
    from flowd.enrich.chain import build_enricher
    from flowd.output.table import DocumentTable
    from flowd.server.batch_decoder import BatchDecoder
    from flowd.server.metrics import WorkerStats
    from tests.test_sflow_properties import datagram, flow_sample, raw_header

    frames = {
        "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=": Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="192.168.0.89", dst="192.168.0.1")
        / ICMP(type=8),
        "1:YHxtAirCG//0OzkcVAukqKQN9xM=": Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / ICMP(type=11),
        "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=": Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IPv6(src="3ffe:507:0:1:200:86ff:fe05:80da", dst="3ffe:501:0:1001::2")
        / ICMPv6EchoRequest(),
    }
    payload = datagram(*(flow_sample(raw_header(bytes(frame))) for frame in frames.values()))
    chain = build_enricher(EnrichSettings(geoip_lookup=False, asn_lookup=False, oui_lookup=False))
    for copies in (8, 1):  # eight datagrams are walked at once; one goes through decode_sflow
        decoder = BatchDecoder(TemplateCache(), WorkerStats())
        parts = decoder.decode_parts([(payload, ("192.0.2.9", 6343), 1_700_000_000.0)] * copies)
        found: list[str] = []
        for part in parts:  # a table per layout: IPv4 and IPv6 samples apart
            if isinstance(part, DocumentTable):
                dicts = part.to_dicts()
                asyncio.run(chain.enrich_table(part))
                tabled = [d["network.community_id"] for d in part.to_dicts()]
            else:
                dicts, tabled = part, None
            asyncio.run(chain.enrich(dicts))
            one_by_one = [d["network.community_id"] for d in dicts]
            assert tabled in (None, one_by_one)
            found += one_by_one
        assert sorted(found) == sorted(list(frames) * copies)
