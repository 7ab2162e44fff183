"""Sampling rates configured per exporter (`enrich.sampling_rates`, `enrich.default_sampling_rates`).

The datagrams are built here with struct, so the expected volumes are the counters written into
them times the rate the configuration gives each exporter, worked out by hand: an exporter that
announces no rate takes the default of its longest matching network, one that announces a rate
keeps it unless a rate replaces it. Both document paths (`flowd run`'s tables written as NDJSON,
and dicts as `flowd decode --enrich` makes them) must agree.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowd.bench.traffic import build_traffic
from flowd.config import EnrichSettings, load_settings
from flowd.decode import TemplateCache, decode_datagram
from flowd.enrich.chain import EnrichmentChain
from flowd.enrich.sampling import SamplingRates
from flowd.errors import ConfigError
from flowd.output.documents import flow_document
from flowd.output.table import DocumentsView, DocumentTable, split_lines
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.metrics import WorkerStats
from tests.test_ipfix_features import ipfix_message, ipfix_set, template

EXPORT_TIME = 1_700_000_000
UNANNOUNCED = ("192.0.2.1", 2055)
"""Sends NetFlow v5 with an empty sampling field."""
ANNOUNCES_50 = ("198.51.100.7", 2055)
"""Sends NetFlow v5 whose header says 1 in 50 (mode 1, interval 50)."""
ELSEWHERE = ("203.0.113.9", 2055)

_V5_HEADER = struct.Struct("!HHIIIIBBH")
_V5_RECORD = struct.Struct("!4s4s4sHHIIIIHHBBBBHHBBH")
COUNTERS = [(1500, 3), (64_000, 50), (40, 1)]
"""(octets, packets) of each flow in every v5 datagram."""


def v5_datagram(flows: Sequence[tuple[Any, ...]], sampling: int = 0) -> bytes:
    """NetFlow v5 with a record per (source, destination[, octets, packets]) flow, TCP to port 443
    (700 octets in 5 packets unless given); `sampling` is the header's mode and interval field."""
    records = []
    for i, (source, destination, *counters) in enumerate(flows):
        octets, packets = counters or (700, 5)
        records.append(
            _V5_RECORD.pack(
                socket.inet_aton(source), socket.inet_aton(destination), bytes(4), 1, 2, packets, octets,
                1_000, 2_000, 40_000 + i, 443, 0, 0x18, 6, 0, 0, 0, 24, 24, 0,
            )
        )  # fmt: skip
    return _V5_HEADER.pack(5, len(flows), 5_000, EXPORT_TIME, 0, 1, 0, 0, sampling) + b"".join(records)


COUNTED_FLOWS = [("198.51.100.1", "10.0.0.1", octets, packets) for octets, packets in COUNTERS]


def chain(**rates: dict[str, int]) -> EnrichmentChain:
    return EnrichmentChain(EnrichSettings(oui_lookup=False, **rates))


def canonical(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def enriched_both_ways(enricher: EnrichmentChain, batch: list[tuple[bytes, tuple[str, int]]]) -> list[dict[str, Any]]:
    """The flow documents of `batch` enriched as a worker does (tables, written to NDJSON) and as
    dicts; the two agree."""
    loop = asyncio.new_event_loop()
    try:
        decoder = BatchDecoder(TemplateCache(), WorkerStats())
        received = [(data, exporter, float(EXPORT_TIME)) for data, exporter in batch]
        from_tables, tables = [], 0
        for part in decoder.decode_parts(received):
            if isinstance(part, DocumentTable):
                tables += 1
                loop.run_until_complete(enricher.enrich_table(part))
                from_tables += [orjson.loads(line) for line in split_lines(part.to_ndjson())]
            else:  # the few records a worker keeps as dicts
                loop.run_until_complete(enricher.enrich(part))
                from_tables += part
        cache = TemplateCache()
        as_dicts = [
            flow_document(record)
            for data, exporter in batch
            for record in decode_datagram(data, exporter, cache, float(EXPORT_TIME)).flows
        ]
        loop.run_until_complete(enricher.enrich(as_dicts))
    finally:
        loop.close()
    assert tables, "the worker's decoder made no tables"
    assert sorted(map(canonical, from_tables)) == sorted(map(canonical, as_dicts))
    return as_dicts


def volumes(documents: list[dict[str, Any]], exporter: str) -> list[tuple[int, int, int, int, int]]:
    return [
        (d["flowd.sampling_rate"], d["network.bytes"], d["network.packets"], d["flowd.raw_bytes"], d["source.bytes"])
        for d in documents
        if d["observer.ip"] == exporter
    ]


def expected(rate: int) -> list[tuple[int, int, int, int, int]]:
    return [(rate, octets * rate, packets * rate, octets, octets * rate) for octets, packets in COUNTERS]


BATCH = [
    (v5_datagram(COUNTED_FLOWS), UNANNOUNCED),
    (v5_datagram(COUNTED_FLOWS, 1 << 14 | 50), ANNOUNCES_50),
    (v5_datagram(COUNTED_FLOWS), ELSEWHERE),
]


def test_nothing_configured_keeps_what_exporters_announce() -> None:
    documents = enriched_both_ways(chain(), BATCH)
    assert volumes(documents, UNANNOUNCED[0]) == expected(1)
    assert volumes(documents, ANNOUNCES_50[0]) == expected(50)
    assert volumes(documents, ELSEWHERE[0]) == expected(1)


def test_defaults_apply_to_exporters_announcing_no_rate_longest_prefix_first() -> None:
    enricher = chain(default_sampling_rates={"0.0.0.0/0": 10, "192.0.2.0/24": 1000, "198.51.100.0/24": 4000})
    documents = enriched_both_ways(enricher, BATCH)
    assert volumes(documents, UNANNOUNCED[0]) == expected(1000)
    assert volumes(documents, ANNOUNCES_50[0]) == expected(50)  # it announced a rate: the default does not apply
    assert volumes(documents, ELSEWHERE[0]) == expected(10)
    # the raw counters stay as sent
    assert [d["netflow.octet_delta_count"] for d in documents if d["observer.ip"] == UNANNOUNCED[0]] == [
        octets for octets, _ in COUNTERS
    ]
    assert enricher.stats()["sampling_rates_configured"] == 2 * 2 * len(COUNTERS)  # two exporters, two paths


def test_a_configured_rate_replaces_the_announced_one() -> None:
    enricher = chain(
        sampling_rates={"198.51.100.7": 64, "192.0.2.0/24": 2},
        default_sampling_rates={"192.0.2.0/24": 1000},
    )
    documents = enriched_both_ways(enricher, BATCH)
    assert volumes(documents, ANNOUNCES_50[0]) == expected(64)  # not 50 × 64
    assert volumes(documents, UNANNOUNCED[0]) == expected(2)  # the replacement wins over the default
    assert volumes(documents, ELSEWHERE[0]) == expected(1)


def test_ipv6_exporters_and_biflow_counters() -> None:
    """An IPFIX biflow (RFC 5103 reverse counters) from an IPv6 exporter: both directions scale."""
    fields = ((8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 8), (2, 8), (1, 8, 29305), (2, 8, 29305))
    record = socket.inet_aton("10.0.0.3") + socket.inet_aton("192.0.2.80")
    record += struct.pack("!HHBQQQQ", 40000, 443, 6, 9000, 12, 700_000, 500)
    message = ipfix_message(ipfix_set(2, template(256, *fields)), ipfix_set(256, record * 4))
    exporter = ("2001:db8::17", 4739)
    documents = enriched_both_ways(chain(default_sampling_rates={"2001:db8::/32": 512}), [(message, exporter)])
    assert len(documents) == 4
    for document in documents:
        assert document["flowd.sampling_rate"] == 512
        assert (document["source.bytes"], document["source.packets"]) == (9000 * 512, 12 * 512)
        assert (document["destination.bytes"], document["destination.packets"]) == (700_000 * 512, 500 * 512)
        assert (document["network.bytes"], document["network.packets"]) == (709_000 * 512, 512 * 512)
        assert (document["flowd.raw_bytes"], document["flowd.raw_packets"]) == (709_000, 512)


def test_scaled_totals_saturate_at_the_largest_long() -> None:
    huge = 2**62
    fields = ((8, 4), (12, 4), (4, 1), (1, 8), (2, 8))
    record = socket.inet_aton("10.0.0.3") + socket.inet_aton("192.0.2.80") + struct.pack("!BQQ", 17, huge, 1)
    message = ipfix_message(ipfix_set(2, template(256, *fields)), ipfix_set(256, record))
    documents = enriched_both_ways(chain(sampling_rates={"192.0.2.9": 4}), [(message, ("192.0.2.9", 4739))])
    assert documents[0]["network.bytes"] == 2**63 - 1
    assert documents[0]["flowd.raw_bytes"] == huge
    assert documents[0]["network.packets"] == 4


def test_sflow_samples_take_the_replacing_rate() -> None:
    """A sample stands for `rate` packets: with the rate replaced, network.packets is that rate and
    network.bytes the sampled frame's length times it."""
    traffic = build_traffic("sflow", exporters=2, datagrams_per_exporter=4, seed=7)
    batch = [
        (datagram.payload, (f"127.0.0.{stream.index + 1}", 50_000))
        for stream in traffic.streams
        for datagram in stream.datagrams
    ]
    plain = enriched_both_ways(chain(), batch)
    agents = sorted({str(document["observer.ip"]) for document in plain})
    assert len(agents) == 2
    replaced = enriched_both_ways(chain(sampling_rates={agents[0]: 3}), batch)
    flows = [(p, r) for p, r in zip(plain, replaced, strict=True) if "flowd.sampling_rate" in p]
    assert flows and {p["flowd.sampling_rate"] for p, _ in flows} != {3}
    for before, after in flows:
        if after["observer.ip"] == agents[0]:
            assert after["flowd.sampling_rate"] == after["network.packets"] == 3
            assert after["network.bytes"] == before["flowd.raw_bytes"] * 3 == after["flowd.raw_bytes"] * 3
        else:
            assert after == before


def test_configuration_from_toml_and_environment(tmp_path: Any) -> None:
    path = tmp_path / "flowd.toml"
    path.write_text('[enrich]\nsampling_rates = { "192.0.2.0/24" = 1000, "2001:db8::1" = 64 }\n')
    loaded = load_settings(path, environ={"FLOWD_ENRICH_DEFAULT_SAMPLING_RATES": '{"0.0.0.0/0": 100}'})
    assert loaded.settings.enrich.sampling_rates == {"192.0.2.0/24": 1000, "2001:db8::1": 64}
    assert loaded.settings.enrich.default_sampling_rates == {"0.0.0.0/0": 100}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"192.0.2.0/33": 10}', "is not a network"),
        ('{"routers": 10}', "is not a network"),
        ('{"192.0.2.1": 0}', "must be an integer from 1"),
        ('{"192.0.2.1": 4294967296}', "must be an integer from 1"),
        ('{"192.0.2.1": "10"}', "expected a table of integers"),
        ('{"192.0.2.1": true}', "expected a table of integers"),
        ("[10]", "expected a table of integers"),
    ],
)
def test_invalid_rates_stop_start_up_naming_the_key(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load_settings(None, environ={"FLOWD_ENRICH_SAMPLING_RATES": value})
    assert "enrich.sampling_rates" in str(raised.value)


_MAX_LONG = 2**63 - 1
_documents = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "observer.ip": st.sampled_from(["192.0.2.1", "198.51.100.7", "2001:db8::1", "not-an-address", ""]),
            "flowd.sampling_rate": st.one_of(st.integers(0, 2**32), st.just("7")),
            "flowd.raw_bytes": st.integers(0, _MAX_LONG),
            "flowd.raw_packets": st.integers(0, 2**40),
            "network.bytes": st.integers(0, _MAX_LONG),
            "network.packets": st.integers(0, _MAX_LONG),
            "source.bytes": st.integers(0, _MAX_LONG),
            "destination.packets": st.one_of(st.integers(0, _MAX_LONG), st.none()),
        },
    ),
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(_documents)
def test_any_documents_take_the_configured_rates_without_failing(documents: list[dict[str, Any]]) -> None:
    """Whatever the documents hold (keys missing, rates of 0, values that are not numbers), the
    rates apply where they can and nothing raises: the enrichment of the whole batch hangs on it."""
    rates = SamplingRates({"192.0.2.0/24": 64}, {"198.51.100.0/24": 1000})
    before = [dict(document) for document in documents]
    rates.apply(DocumentsView(documents))
    for old, new in zip(before, documents, strict=True):
        rate = old.get("flowd.sampling_rate")
        exporter = old.get("observer.ip")
        expected = rate
        if type(rate) is int and exporter == "192.0.2.1":
            expected = 64
        elif type(rate) is int and rate <= 1 and exporter == "198.51.100.7":
            expected = 1000
        assert new.get("flowd.sampling_rate") == expected
        if expected == rate:
            assert new == old
            continue
        raw = old.get("flowd.raw_bytes")
        if "network.bytes" in old and raw is not None:
            assert new["network.bytes"] == min(raw * expected, _MAX_LONG)
        if "source.bytes" in old and rate:
            assert new["source.bytes"] == min(old["source.bytes"] // rate * expected, _MAX_LONG)
        assert set(new) == set(old)
