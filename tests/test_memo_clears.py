"""Memo caches that start over when full say so: `flowd_memo_cache_clears{cache}`.

Each cache only saves time, so one whose working set outgrew it shows only as throughput
falling; the count of its clears is what tells an operator which one thrashes. Each case drives
a cache through the path that uses it, with its cap made tiny, and counts the clears."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP

from flowd.config import EnrichSettings, load_settings
from flowd.decode import TemplateCache, decode_datagram, headers, records
from flowd.decode.batch import RecordBatch
from flowd.decode.memo import MEMO_CACHES, MEMO_CLEARS
from flowd.decode.sequence import SequenceTracker
from flowd.enrich import address_ends, applications
from flowd.enrich.chain import EnrichmentChain
from flowd.output import ecs, table, timestamps
from flowd.output.batch_documents import batch_table
from flowd.server import udp
from flowd.server.app import Worker
from flowd.server.ingress import IngressQueue
from flowd.server.metrics import Aggregator, build_registry, parse_samples
from tests.test_pipeline import netflow_v5


def compiled_layout(n: int) -> None:
    fields = (records.TemplateField(8, 4), records.TemplateField(12, 4), records.TemplateField(1, n + 1))
    records.compile_template(256, fields)


def sampled_header(n: int) -> None:
    packet = bytes(IP(src=f"198.51.100.{n}", dst=f"198.51.100.{n}") / UDP(sport=53, dport=53))
    fields: dict[str, Any] = {}
    headers.parse_sampled_header(headers.HEADER_PROTOCOL_IPV4, packet, 0, len(packet), fields)
    assert fields["src_ip"] == f"198.51.100.{n}"


def address_groups() -> Lookup:
    """Enriches a decoded table (the path that numbers address groups) of sources 10.0.0.1 to
    .n+1, each in its own named network: two more groups (as source, as destination) for each."""
    names = {f"10.0.0.{n}/32": f"net{n}" for n in (1, 2, 3)}
    chain = EnrichmentChain(EnrichSettings(oui_lookup=False, network_names=names))

    def lookup(n: int) -> None:
        datagram = netflow_v5(n, records=n + 1)
        (batch,) = decode_datagram(datagram, ("192.0.2.1", 2055), TemplateCache(), 0.0).flows.parts
        assert isinstance(batch, RecordBatch)
        asyncio.run(chain.enrich_table(batch_table(batch)))

    return lookup


def application_groups() -> Lookup:
    """Enriches a flow to port 22, 80 or 443: ssh, http or https."""
    chain = EnrichmentChain(EnrichSettings(oui_lookup=False))

    def lookup(n: int) -> None:
        document = {"network.transport": "tcp", "source.port": 50000, "destination.port": (22, 80, 443)[n]}
        asyncio.run(chain.enrich([document]))

    return lookup


def allowlist_verdicts() -> Lookup:
    allowlist = udp.ExporterAllowlist(["192.0.2.0/24"])
    return lambda n: allowlist(f"192.0.2.{n}")


Lookup = Callable[[int], object]
"""The n-th distinct key looked up through the cache's own path."""

# cache, {(module, attribute): value while the case runs}, a fresh lookup
CASES: list[tuple[str, dict[tuple[Any, str], Any], Callable[[], Lookup]]] = [
    (
        "compiled_layouts",
        {(records, "MAX_DISTINCT_LAYOUTS"): 2, (records, "_COMPILED"): {}, (records, "_compiled_fields"): 0},
        lambda: compiled_layout,
    ),
    (
        "record_address_text",
        {(records, "_ADDRESS_CACHE_MAX"): 2, (records, "_ipv4_strings"): {}},
        lambda: lambda n: records.ipv4_string(bytes([192, 0, 2, n])),
    ),
    (
        "header_address_text",
        {(headers, "MAX_CACHED_ADDRESSES"): 2, (headers, "_ADDRESS_TEXT"): {}},
        lambda: sampled_header,
    ),
    (
        "timestamp_prefixes",
        {(timestamps, "_MAX_CACHED_SECONDS"): 2, (timestamps, "_SECOND_PREFIXES"): {}},
        lambda: lambda n: timestamps.iso_from_ms(1_700_000_000_000 + n * 1000),
    ),
    (
        "field_groups",
        {(table, "MAX_SHARED_GROUPS"): 2, (table, "_SHARED_GROUPS"): {}},
        lambda: lambda n: table.FieldGroup.shared({"network.application": f"app{n}"}),
    ),
    (
        "field_key_sets",
        {(table, "MAX_KEY_SETS"): 1, (table, "_KEY_SETS"): {}},  # cleared past the cap, not at it
        lambda: lambda n: table.FieldGroup({f"key{n}": n}),
    ),
    (
        "exporter_hashes",
        {(ecs, "MAX_EXPORTER_WORDS"): 1, (ecs, "_exporter_words"): {}},
        lambda: lambda n: ecs.exporter_word(f"192.0.2.{n}"),
    ),
    (
        "enrich_address_groups",  # checked as a batch starts: 4 groups, then 6 (over the cap)
        {(address_ends, "MAX_ADDRESS_GROUPS"): 5},
        address_groups,
    ),
    (
        "application_groups",
        {(applications, "MAX_APPLICATION_GROUPS"): 2},
        application_groups,
    ),
    ("allowlist_verdicts", {(udp, "MAX_ALLOWLIST_VERDICTS"): 2}, allowlist_verdicts),
]


def test_every_named_cache_has_a_case() -> None:
    assert [case[0] for case in CASES] == list(MEMO_CACHES)


@pytest.mark.parametrize(("cache", "caps", "make_lookup"), CASES, ids=[case[0] for case in CASES])
def test_a_full_memo_cache_counts_its_clear(
    monkeypatch: pytest.MonkeyPatch, cache: str, caps: dict[tuple[Any, str], Any], make_lookup: Callable[[], Lookup]
) -> None:
    for (module, name), value in caps.items():
        monkeypatch.setattr(module, name, copy.copy(value))  # an empty cache of its own
    lookup = make_lookup()
    before = dict(MEMO_CLEARS)
    lookup(0)
    lookup(0)  # a hit: nothing to make room for
    lookup(1)
    assert dict(MEMO_CLEARS) == before
    lookup(2)  # the third distinct key finds the cache full
    assert dict(MEMO_CLEARS) == {**before, cache: before[cache] + 1}


def test_clears_reach_metrics_as_a_counter_per_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's report carries its clears; the supervisor serves them, every cache named from the start."""
    monkeypatch.setattr(timestamps, "_MAX_CACHED_SECONDS", 1)
    monkeypatch.setattr(timestamps, "_SECOND_PREFIXES", {})
    for second in range(4):
        timestamps.iso_from_ms(second * 1000)
    clears = MEMO_CLEARS["timestamp_prefixes"]
    assert clears >= 3

    settings = load_settings(None).settings
    settings.templates.path = str(tmp_path / "templates.json")
    worker = Worker(settings, 0, None)
    stand_in = SimpleNamespace(
        documents=asyncio.Queue(2),
        enricher=None,
        decoder=SimpleNamespace(sequences=SequenceTracker()),
        documents_waiting=lambda: 0,
    )
    worker._update_stats(IngressQueue(64, 1024), stand_in)  # type: ignore[arg-type]
    aggregator = Aggregator()
    aggregator.update(0, worker.stats.snapshot())
    from prometheus_client import generate_latest

    served = parse_samples(generate_latest(build_registry(aggregator)).decode())["flowd_memo_cache_clears_total"]
    by_cache = {labels["cache"]: value for labels, value in served}
    assert set(by_cache) == set(MEMO_CACHES)
    assert by_cache["timestamp_prefixes"] == clears
