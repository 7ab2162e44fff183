"""`output.raw_fields`: which raw `netflow.*`/`sflow.*` fields flow documents keep.

The worker's output is compared with the documents the same datagrams make with every raw field,
less the fields the setting leaves out, computed here by a plain predicate over the full
documents (not by the filter under test). The traffic mixes the document paths and kinds: NetFlow
v5, v9 and IPFIX from the corpus (with options), sFlow flow and counter samples, and an sFlow drop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson
import pytest

from flowd.config import EnrichSettings, load_settings
from flowd.decode import TemplateCache
from flowd.enrich.chain import build_enricher
from flowd.errors import ConfigError
from flowd.output.raw_fields import RawFieldFilter
from flowd.output.table import DocumentTable, FieldGroup
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.ingress import IngressQueue
from flowd.server.metrics import WorkerStats
from flowd.server.pipeline import Pipeline
from tests.corpus_units import UNITS_BY_NAME, corpus_available, unit_datagrams
from tests.test_pipeline import EXPORTER, EncodedMemorySink, netflow_v5
from tests.test_sflow_corpus import MALFORMED, SFLOW_FILES, corpus_datagrams
from tests.test_sflow_drops import discarded
from tests.test_sflow_properties import datagram, ipv4_tcp_frame, raw_header

FLOW_KINDS = {"netflow_flow", "sflow_flow"}
TCP_AND_TOS = ("netflow.tcp_control_bits", "netflow.ip_class_of_service")
CORPUS_UNITS = ("lcn:nf9_cisco_asa_1", "lcn:nf9_cisco_nbar_opt260", "lcn:nf9_cisco_nbar_262", "lcn:ipfix_mikrotik")


def traffic() -> list[tuple[bytes, tuple[str, int]]]:
    datagrams = [(netflow_v5(ident, records=5), EXPORTER) for ident in range(8)]
    if corpus_available():
        for name in CORPUS_UNITS:
            datagrams += [(d.payload, ("192.0.2.20", 2055)) for d in unit_datagrams(UNITS_BY_NAME[name])]
        for name, _, _ in SFLOW_FILES:
            if name not in MALFORMED:
                datagrams += [(d.payload, ("192.0.2.30", 6343)) for d in corpus_datagrams(name)]
    drop = datagram(discarded(raw_header(ipv4_tcp_frame()), reason=258))
    return [*datagrams, (drop, ("192.0.2.40", 6343))]


async def worker_output(patterns: list[str]) -> list[dict[str, Any]]:
    """What a `flowd run` worker writes of `traffic()` with `output.raw_fields = patterns`."""
    stats = WorkerStats()
    ingress = IngressQueue(batch_size=64, capacity=10_000)
    sink = EncodedMemorySink()
    pipeline = Pipeline(
        ingress,
        BatchDecoder(TemplateCache(), stats),
        sink,
        stats,
        enricher=build_enricher(EnrichSettings(oui_lookup=False)),
        raw_fields=RawFieldFilter.from_patterns(patterns),
    )
    pipeline.start()
    for payload, exporter in traffic():
        assert ingress.append(payload, exporter, 1_764_072_000.5)
    await asyncio.wait_for(pipeline.drain(), timeout=30)
    documents = [orjson.loads(line) for body, _ in sink.bodies for line in body.splitlines()]
    return documents + [d for batch in sink.batches for d in batch]


def expected(documents: list[dict[str, Any]], names: set[str], prefixes: tuple[str, ...]) -> list[dict[str, Any]]:
    def kept(key: str) -> bool:
        raw = key.startswith("netflow.") or key.startswith("sflow.")
        identity = key == "netflow.type" or key.startswith("netflow.exporter.")
        return not raw or identity or key in names or any(key.startswith(p) for p in prefixes)

    return [{k: v for k, v in d.items() if kept(k)} if d["event.action"] in FLOW_KINDS else d for d in documents]


def canonical(documents: list[dict[str, Any]]) -> list[bytes]:
    return sorted(orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in documents)


@pytest.fixture(scope="module")
def everything() -> list[dict[str, Any]]:
    return asyncio.run(worker_output(["*"]))


def test_the_default_keeps_every_raw_field(everything: list[dict[str, Any]]) -> None:
    kinds = {d["event.action"] for d in everything}
    assert {"netflow_flow", "sflow_drop"} <= kinds
    if corpus_available():
        assert {"sflow_flow", "sflow_counters"} <= kinds
    assert all(any(k.startswith(("netflow.", "sflow.")) for k in d if k != "netflow.type") for d in everything)
    assert any("netflow.tcp_control_bits" in d for d in everything)


@pytest.mark.parametrize(
    ("patterns", "names", "prefixes"),
    [
        ([], set(), ()),
        (
            ["netflow.tcp_control_bits", "netflow.ip_class_of_service"],
            {"netflow.tcp_control_bits", "netflow.ip_class_of_service"},
            (),
        ),
        (["sflow.*", " netflow.bgp_source_as_number "], {"netflow.bgp_source_as_number"}, ("sflow.",)),
    ],
)
def test_flow_documents_keep_only_the_listed_raw_fields(
    everything: list[dict[str, Any]], patterns: list[str], names: set[str], prefixes: tuple[str, ...]
) -> None:
    trimmed = asyncio.run(worker_output(patterns))
    assert canonical(trimmed) == canonical(expected(everything, names, prefixes))
    flows = [d for d in trimmed if d["event.action"] in FLOW_KINDS]
    assert flows and all(d["netflow.type"] == "netflow_flow" for d in flows if "netflow.exporter.version" in d)
    if not prefixes:
        assert not any(k.startswith("sflow.") for d in flows for k in d)
    # ECS and enrichment fields are all still there.
    assert all("network.community_id" in d and "source.ip" in d for d in flows)


def test_the_filter_drops_raw_fields_from_flow_tables_before_they_render(everything: list[dict[str, Any]]) -> None:
    """The saving is in not rendering the columns: the trimmed output is much smaller."""
    trimmed = asyncio.run(worker_output([]))
    flows_full = [d for d in everything if d["event.action"] in FLOW_KINDS]
    flows_trimmed = [d for d in trimmed if d["event.action"] in FLOW_KINDS]
    size = sum(len(orjson.dumps(d)) for d in flows_trimmed) / sum(len(orjson.dumps(d)) for d in flows_full)
    assert size < 0.8


# --- configuration ------------------------------------------------------------------------------


def test_raw_fields_from_toml_and_environment(tmp_path: Any) -> None:
    path = tmp_path / "flowd.toml"
    path.write_text('[output]\nraw_fields = ["netflow.tcp_control_bits", "sflow.*"]\n')
    assert load_settings(path, {}).settings.output.raw_fields == ["netflow.tcp_control_bits", "sflow.*"]
    assert load_settings(None, {}).settings.output.raw_fields == ["*"]
    loaded = load_settings(None, {"FLOWD_OUTPUT_RAW_FIELDS": ""})
    assert loaded.settings.output.raw_fields == []
    assert RawFieldFilter.from_patterns(["*"]) is None
    assert RawFieldFilter.from_patterns(["netflow.tcp_control_bits", "*"]) is None


@pytest.mark.parametrize(("value", "fields"), [("false", []), ("FALSE", []), ("true", ["*"])])
def test_elastiflow_keep_orig_data(value: str, fields: list[str]) -> None:
    loaded = load_settings(None, {"ELASTIFLOW_KEEP_ORIG_DATA": value})
    assert loaded.settings.output.raw_fields == fields
    assert loaded.sources["output.raw_fields"] == "env:ELASTIFLOW_KEEP_ORIG_DATA"
    # flowd's own variable wins, as for every key.
    both = load_settings(None, {"ELASTIFLOW_KEEP_ORIG_DATA": value, "FLOWD_OUTPUT_RAW_FIELDS": "sflow.*"})
    assert both.settings.output.raw_fields == ["sflow.*"]


@pytest.mark.parametrize(
    "pattern", ["tcp_control_bits", "source.ip", "netflow.*bits", "netflow.tcp*", "netflow", "sflow.x.*.y", "maybe"]
)
def test_patterns_that_name_no_raw_field_stop_start_up(pattern: str) -> None:
    with pytest.raises(ConfigError, match=r"output\.raw_fields: .* (is not|names no raw field)"):
        load_settings(None, {"FLOWD_OUTPUT_RAW_FIELDS": pattern})


@pytest.mark.parametrize("pattern", ["ipfix.*", "ipfix.octet_delta_count", "source.ip"])
def test_a_pattern_outside_the_raw_namespaces_is_told_where_ipfix_elements_are(pattern: str) -> None:
    """IPFIX elements are kept under netflow.…, as Filebeat names them: "ipfix.*" is a natural
    guess, and the refusal says where they are instead of asking for a prefix ending in ".*"."""
    with pytest.raises(ConfigError, match=r"names no raw field: they are netflow\.… \(NetFlow v5/v9 and IPFIX alike"):
        load_settings(None, {"FLOWD_OUTPUT_RAW_FIELDS": pattern})


def test_a_keep_orig_data_that_is_not_a_boolean_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="ELASTIFLOW_KEEP_ORIG_DATA"):
        load_settings(None, {"ELASTIFLOW_KEEP_ORIG_DATA": "maybe"})


def test_constants_and_field_groups_are_trimmed_as_columns_are() -> None:
    """Raw fields can reach a table as a constant or in a field group, not only as a column."""
    table = DocumentTable(3)
    table.set_constant("event.action", "netflow_flow")
    table.set_constant("netflow.exporter.version", 10)
    table.set_constant("netflow.flow_end_reason", 2)
    table.set_constant("netflow.sampling_interval", 0)
    table.add("netflow.octet_delta_count", np.array([1, 2, 3]))
    table.add("source.port", np.array([7, 8, 9]))
    raw_and_ecs = FieldGroup({"sflow.src_vlan": 4, "network.vlan.id": "4"})
    raw_only = FieldGroup({"netflow.tcp_control_bits": 2})
    table.add_groups([raw_and_ecs, raw_only, None], np.array([0, 1, 2]))
    full = table.to_dicts()

    filter_ = RawFieldFilter.from_patterns(["netflow.flow_end_reason"])
    assert filter_ is not None
    filter_.trim_table(table)
    assert canonical(table.to_dicts()) == canonical(expected(full, {"netflow.flow_end_reason"}, ()))
    assert [orjson.loads(line) for line in table.to_ndjson().splitlines()] == table.to_dicts()

    options = DocumentTable(1)
    options.set_constant("event.action", "sflow_counters")
    options.set_constant("sflow.if_in_octets", 5)
    options.add("sflow.if_index", np.array([3]))
    filter_.trim_table(options)
    assert options.to_dicts() == [{"sflow.if_index": 3, "event.action": "sflow_counters", "sflow.if_in_octets": 5}]
