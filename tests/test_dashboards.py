"""The shipped dashboards: Kibana saved objects (dashboards/kibana/flowd.ndjson) and the Grafana
collector dashboard (dashboards/grafana/flowd-collector.json).

Static checks: both files are what dashboards/tools/ generates; every saved object parses with its
embedded JSON strings, ids are unique, every reference resolves inside the file, and every field a
visualization, map, saved search, control or the data view uses exists in flowd's index template
(`flowd.output.index_template.mappings()`, dynamic templates applied to values from corpus
documents) with a type that supports its aggregation.

Against a cluster (osmem-server from tests/es_server.py, or FLOWD_TEST_ES_URL): corpus traffic is
decoded, enriched by flowd's own enrichment chain (GeoIP/ASN test databases, configured interface
names, and a fixed reverse-DNS table standing in for a DNS server) and indexed through the real
index template; the aggregation behind every Lens layer, map layer and the saved search is then
translated to an Elasticsearch query the way Kibana builds it, run, and must return buckets.
The corpus has no address in the City test database, so a copy of some flows gets its source and
destination addresses replaced by test-database addresses before enrichment (the geo fields
themselves come from the lookup).

Grafana: the JSON parses, declares its datasource as an `__inputs` entry, every query parses as
PromQL (the promql-parser package) and names only metrics that a running `flowd run` serves on
/metrics.
"""

from __future__ import annotations

import asyncio
import fnmatch
import importlib.util
import itertools
import json
import re
import struct
import sys
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from flowd.config import ElasticsearchSettings, EnrichSettings
from flowd.enrich.chain import EnrichmentChain
from flowd.offline import DecodeSummary, decode_documents
from flowd.output.index_template import index_template, mappings
from tests.es_server import delete_target, es_request, es_url  # noqa: F401
from tests.shared_data import CORPUS as SHARED_CORPUS
from tests.shared_data import GEOIP as SHARED_GEOIP

ROOT = Path(__file__).resolve().parent.parent
KIBANA_FILE = ROOT / "dashboards" / "kibana" / "flowd.ndjson"
GRAFANA_FILE = ROOT / "dashboards" / "grafana" / "flowd-collector.json"
CORPUS = SHARED_CORPUS
GEOIP = SHARED_GEOIP
CORPUS_FILES = [
    "pmacct/100-IPFIXv10-CISCO/traffic-00.pcap",
    "akvorado/netflow/nfv5.pcap",
    "ndpi/sflow.pcap",
]
GEO_ADDRESSES = ["81.2.69.142", "89.160.20.112", "175.16.199.5", "2.125.160.216", "1.128.0.1"]
"""City test database hits (GB London, SE Linköping, CN Changchun, GB Boxford) and AS1221 Telstra."""

NUMERIC = {"long", "integer", "short", "byte", "double", "float", "scaled_float", "unsigned_long"}
ALLOWED_TYPES: dict[str, set[str]] = {
    "terms": {"keyword", "ip", "long"},
    "date_histogram": {"date"},
    "sum": NUMERIC,
    "avg": NUMERIC,
    "min": NUMERIC,
    "max": NUMERIC,
    "median": NUMERIC,
    "unique_count": {"keyword", "ip", "long"},
    "last_value": {"keyword", "ip", "date", *NUMERIC},
    "geo": {"geo_point"},
    "control": {"keyword", "ip"},
    "sort": {"date", "keyword", "ip", *NUMERIC},
}
LENS_DATA_TYPES = {"string": {"keyword"}, "ip": {"ip"}, "number": NUMERIC, "date": {"date"}}
REQUIRED_DASHBOARDS = {
    "[flowd] Overview",
    "[flowd] Top-N",
    "[flowd] Geo",
    "[flowd] Autonomous systems",
    "[flowd] Exporters and interfaces",
    "[flowd] Flow records",
    "[flowd] sFlow counters and drops",
}
CONTROL_FIELDS = {
    "observer.ip",
    "observer.ingress.interface.name",
    "observer.egress.interface.name",
    "network.direction",
    "network.transport",
}


def load_tool(name: str) -> ModuleType:
    path = ROOT / "dashboards" / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"flowd_dashboard_tools_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def saved_objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in KIBANA_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def by_type(kind: str) -> list[dict[str, Any]]:
    return [item for item in saved_objects() if item["type"] == kind]


def lens_layers(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    layers: dict[str, dict[str, Any]] = item["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
    return layers


def map_layers(item: dict[str, Any]) -> list[dict[str, Any]]:
    layers: list[dict[str, Any]] = json.loads(item["attributes"]["layerListJSON"])
    return layers


def search_source(item: dict[str, Any]) -> dict[str, Any]:
    source: dict[str, Any] = json.loads(item["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    return source


def controls(item: dict[str, Any]) -> dict[str, Any]:
    panels: dict[str, Any] = json.loads(item["attributes"]["controlGroupInput"]["panelsJSON"])
    return panels


# -- KQL (the subset the dashboards use) -----------------------------------------------------------

KQL_TOKEN = re.compile(r'\s*(\(|\)|:|"(?:[^"\\]|\\.)*"|[^\s():"]+)')


def kql_tokens(text: str) -> list[str]:
    tokens, position = [], 0
    text = text.strip()
    while position < len(text):
        match = KQL_TOKEN.match(text, position)
        assert match, f"KQL not understood at {text[position:]!r}"
        tokens.append(match.group(1))
        position = match.end()
    return tokens


class Kql:
    """`field : value`, `field : *`, `field : (a or b)`, and/or/not, parentheses → query DSL."""

    def __init__(self, text: str) -> None:
        self.tokens = kql_tokens(text)
        self.position = 0
        self.fields: set[str] = set()

    def parse(self) -> dict[str, Any]:
        if not self.tokens:
            return {"match_all": {}}
        query = self._or()
        assert self.position == len(self.tokens), f"trailing KQL {self.tokens[self.position :]}"
        return query

    def _peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> str:
        token = self._peek()
        assert token is not None and (expected is None or token == expected), f"KQL: wanted {expected}, got {token}"
        self.position += 1
        return token

    def _or(self) -> dict[str, Any]:
        parts = [self._and()]
        while (self._peek() or "").lower() == "or":
            self._take()
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else {"bool": {"should": parts, "minimum_should_match": 1}}

    def _and(self) -> dict[str, Any]:
        parts = [self._not()]
        while (self._peek() or "").lower() == "and":
            self._take()
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else {"bool": {"filter": parts}}

    def _not(self) -> dict[str, Any]:
        if (self._peek() or "").lower() == "not":
            self._take()
            return {"bool": {"must_not": [self._not()]}}
        if self._peek() == "(":
            self._take("(")
            inner = self._or()
            self._take(")")
            return inner
        field = self._take()
        self._take(":")
        self.fields.add(field)
        if self._peek() == "(":
            self._take("(")
            values = [self._value(field)]
            while (self._peek() or "").lower() == "or":
                self._take()
                values.append(self._value(field))
            self._take(")")
            return {"bool": {"should": values, "minimum_should_match": 1}}
        return self._value(field)

    def _value(self, field: str) -> dict[str, Any]:
        token = self._take()
        if token == "*":
            return {"exists": {"field": field}}
        value = json.loads(token) if token.startswith('"') else token
        return {"match": {field: value}}


def kql(text: str) -> dict[str, Any]:
    return Kql(text).parse()


def kql_fields(text: str) -> set[str]:
    parser = Kql(text)
    parser.parse()
    return parser.fields


# -- What each object uses ----------------------------------------------------------------------------


def field_usages(item: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field, usage) for every field the object names; usage is an aggregation or how it is used."""
    kind, attributes = item["type"], item["attributes"]
    if kind == "index-pattern":
        yield attributes["timeFieldName"], "date_histogram"
        for field in json.loads(attributes["fieldFormatMap"]):
            yield field, "exists"
        for field in json.loads(attributes["fieldAttrs"]):
            yield field, "exists"
    elif kind == "lens":
        state = attributes["state"]
        for field in kql_fields(state["query"]["query"]):
            yield field, "exists"
        for layer in lens_layers(item).values():
            for column in layer["columns"].values():
                operation, field = column["operationType"], column.get("sourceField")
                if column.get("filter"):
                    yield from ((name, "exists") for name in kql_fields(column["filter"]["query"]))
                if operation == "filters":
                    for entry in column["params"]["filters"]:
                        yield from ((name, "exists") for name in kql_fields(entry["input"]["query"]))
                elif field and field != "___records___":
                    yield field, operation
                    for secondary in column.get("params", {}).get("secondaryFields", []):
                        yield secondary, operation
                    if operation == "last_value":
                        yield column["params"]["sortField"], "sort"
    elif kind == "map":
        for field in kql_fields(json.loads(attributes["mapStateJSON"])["query"]["query"]):
            yield field, "exists"
        for layer in map_layers(item):
            source = layer["sourceDescriptor"]
            if "geoField" in source:
                yield source["geoField"], "geo"
            for metric in source.get("metrics", []):
                if "field" in metric:
                    yield metric["field"], metric["type"]
    elif kind == "search":
        for field in attributes["columns"]:
            yield field, "exists"
        for field, _ in attributes["sort"]:
            yield field, "sort"
        for field in kql_fields(search_source(item)["query"]["query"]):
            yield field, "exists"
    elif kind == "dashboard":
        for control in controls(item).values():
            yield control["explicitInput"]["fieldName"], "control"


# -- The index template's types ---------------------------------------------------------------------


def explicit_types(properties: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            yield from explicit_types(spec["properties"], path + ".")
        else:
            yield path, spec["type"]


def json_mapping_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list) and value:
        return json_mapping_type(value[0])
    return None


def template_field_type(field: str, samples: dict[str, Any]) -> str | None:
    """The type flowd's template gives `field`: explicit, else by the dynamic templates (in order)
    applied to a value the field has in corpus documents."""
    template = mappings()
    explicit = dict(explicit_types(template["properties"]))
    if field in explicit:
        return explicit[field]
    for entry in template.get("dynamic_templates", []):
        rule = next(iter(entry.values()))
        if "path_match" in rule and not fnmatch.fnmatchcase(field, rule["path_match"]):
            continue
        wanted = rule.get("match_mapping_type")
        if wanted is not None and (field not in samples or json_mapping_type(samples[field]) != wanted):
            continue
        mapping_type: str = rule["mapping"]["type"]
        return mapping_type
    return None


# -- Corpus documents ---------------------------------------------------------------------------------


class FixedNames:
    """A reverse-DNS resolver with a fixed table, in place of a DNS server (tests/test_enrich_dns.py
    tests the real resolver against dnsmasq)."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    async def resolve_many(self, addresses: Iterable[str]) -> dict[str, str]:
        return {address: self.names[address] for address in addresses if address in self.names}

    def stats(self) -> dict[str, int]:
        return {}

    async def close(self) -> None:
        return None


def discarded_packet_documents() -> list[dict[str, Any]]:
    """sFlow discarded-packet notifications (no capture in the corpus has them), built as
    sflow_drops.txt lays them out by the sFlow drop tests' builder, for the drop panels."""
    from flowd.decode import TemplateCache, decode_datagram
    from flowd.output.documents import flow_document
    from tests.test_sflow_drops import discarded
    from tests.test_sflow_properties import datagram, ipv4_tcp_frame, raw_header

    documents = []
    for index, reason in enumerate((258, 259, 1, 260, 258)):  # acl, no_buffer_space, host_unreachable, red, acl
        payload = datagram(discarded(raw_header(ipv4_tcp_frame()), reason=reason, input_ifindex=3 + index % 2))
        result = decode_datagram(payload, ("192.0.2.44", 6343), TemplateCache(), 1_764_072_000.0 + index)
        documents += [flow_document(record) for record in result.flows]
    assert {doc["event.action"] for doc in documents} == {"sflow_drop"}
    return documents


def denied_flow_documents() -> list[dict[str, Any]]:
    """IPFIX flow records a firewall denied (firewallEvent 3) and a router dropped
    (forwardingStatus 0x80), built as the IPFIX feature tests build records, for the denied panels."""
    from flowd.decode import TemplateCache, decode_datagram
    from flowd.output.documents import flow_document
    from tests.test_ipfix_features import ipfix_message, ipfix_set, template

    records = b"".join(
        bytes([192, 0, 2, host, 198, 51, 100, 7, event, status])
        for host, event, status in ((10, 3, 0), (11, 3, 0), (10, 0, 0x80), (12, 2, 0x40))
    )
    message = ipfix_message(ipfix_set(2, template(300, (8, 4), (12, 4), (233, 1), (89, 1))), ipfix_set(300, records))
    result = decode_datagram(message, ("192.0.2.45", 4739), TemplateCache(), 1_764_072_000.0)
    documents = [flow_document(record) for record in result.flows]
    assert [doc["event.type"][-1] for doc in documents] == ["denied", "denied", "denied", "end"]
    return documents


def corpus_documents() -> list[dict[str, Any]]:
    files = [CORPUS / name for name in CORPUS_FILES]
    missing = [str(path) for path in files if not path.exists()]
    if missing or not (GEOIP / "GeoIP2-City-Test.mmdb").exists():
        pytest.skip(f"shared corpus or GeoIP test databases not found: {missing}")
    documents = list(decode_documents(files, DecodeSummary()))
    flows = [doc for doc in documents if doc.get("event.action") == "netflow_flow"]
    relocated = []
    for index, doc in enumerate(flows[:20]):
        copy = dict(doc)
        copy["source.ip"] = GEO_ADDRESSES[index % len(GEO_ADDRESSES)]
        copy["destination.ip"] = GEO_ADDRESSES[(index + 2) % len(GEO_ADDRESSES)]
        copy["related.ip"] = [copy["source.ip"], copy["destination.ip"]]
        for key in [k for k in copy if k.startswith(("source.as.", "destination.as."))]:
            del copy[key]
        relocated.append(copy)
    exporter_ifindexes = {
        (doc["observer.ip"], doc[key])
        for doc in flows
        for key in ("observer.ingress.interface.id", "observer.egress.interface.id")
        if key in doc
    }
    settings = EnrichSettings(
        geoip_city_db=str(GEOIP / "GeoIP2-City-Test.mmdb"),
        geoip_asn_db=str(GEOIP / "GeoLite2-ASN-Test.mmdb"),
        oui_lookup=False,
        resolve_ip2host="endpoints",
        interface_names={f"{ip}:{ifindex}": f"if{ifindex}" for ip, ifindex in sorted(exporter_ifindexes)[1:]},
        network_names={"10.0.0.0/8": "net-10", "172.16.0.0/12": "net-172-16", "192.168.0.0/16": "net-192-168"},
        exporter_names={ip: f"router-{i}" for i, ip in enumerate(sorted({ip for ip, _ in exporter_ifindexes}))},
    )
    names = {address: f"host-{i}.example.net" for i, address in enumerate(GEO_ADDRESSES)}
    chain = EnrichmentChain(settings, resolver=FixedNames(names))  # type: ignore[arg-type]
    learned_ip, learned_ifindex = sorted(exporter_ifindexes)[0]  # as options data teaches it, with a description
    chain.interfaces.learn(learned_ip, learned_ifindex, f"if{learned_ifindex}", "uplink to the core")
    documents += relocated + discarded_packet_documents() + denied_flow_documents()

    async def enrich() -> None:
        await chain.enrich(documents)
        await chain.close()

    asyncio.run(enrich())
    return documents


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    return corpus_documents()


@pytest.fixture(scope="module")
def samples(documents: list[dict[str, Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for doc in documents:
        for key, value in doc.items():
            values.setdefault(key, value)
    return values


# -- Static checks ---------------------------------------------------------------------------------------


def test_committed_files_are_what_the_tools_generate() -> None:
    assert KIBANA_FILE.read_text(encoding="utf-8") == load_tool("build_kibana").render(), (
        "run python dashboards/tools/build_kibana.py"
    )
    assert GRAFANA_FILE.read_text(encoding="utf-8") == load_tool("build_grafana").render(), (
        "run python dashboards/tools/build_grafana.py"
    )


def test_every_saved_object_parses_and_ids_are_unique() -> None:
    lines = [line for line in KIBANA_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    objects = [json.loads(line) for line in lines]
    keys = [(item["type"], item["id"]) for item in objects]
    assert len(keys) == len(set(keys)), [key for key in keys if keys.count(key) > 1]
    assert len({item["id"] for item in objects}) == len(objects), "ids are unique across types too"
    embedded = {
        "index-pattern": ["fieldFormatMap", "fieldAttrs", "fields", "runtimeFieldMap"],
        "map": ["mapStateJSON", "layerListJSON", "uiStateJSON"],
        "dashboard": ["panelsJSON", "optionsJSON"],
    }
    for item in objects:
        assert set(item) >= {"id", "type", "attributes", "references"}, item["id"]
        assert item["attributes"]["title"], item["id"]
        assert item.get("coreMigrationVersion") and item.get("typeMigrationVersion"), item["id"]
        for key in embedded.get(item["type"], []):
            json.loads(item["attributes"][key])
        if "kibanaSavedObjectMeta" in item["attributes"]:
            search_source(item)
        if item["type"] == "dashboard":
            controls(item)
            json.loads(item["attributes"]["controlGroupInput"]["ignoreParentSettingsJSON"])
    counts = {kind: len(by_type(kind)) for kind in ("index-pattern", "lens", "map", "search", "dashboard")}
    assert counts["index-pattern"] == 1 and counts["search"] == 1 and counts["map"] == 2, counts
    assert counts["lens"] >= 40 and counts["dashboard"] == 7, counts


def test_every_reference_resolves_inside_the_file() -> None:
    objects = saved_objects()
    present = {(item["type"], item["id"]) for item in objects}
    for item in objects:
        names = [ref["name"] for ref in item["references"]]
        assert len(names) == len(set(names)), f"{item['id']}: duplicate reference names"
        for ref in item["references"]:
            assert (ref["type"], ref["id"]) in present, f"{item['id']} -> {ref}"
        if item["type"] == "lens":
            for layer_id in lens_layers(item):
                assert f"indexpattern-datasource-layer-{layer_id}" in names, item["id"]
            for layer in lens_layers(item).values():
                assert set(layer["columnOrder"]) == set(layer["columns"]), item["id"]
                for column in layer["columns"].values():
                    for reference in column.get("references", []):
                        assert reference in layer["columns"], f"{item['id']}: column reference {reference}"
                    order = column.get("params", {}).get("orderBy", {})
                    if order.get("type") == "column":
                        assert order["columnId"] in layer["columns"], f"{item['id']}: orderBy {order}"
        elif item["type"] == "map":
            for layer in map_layers(item):
                ref_name = layer["sourceDescriptor"].get("indexPatternRefName")
                if ref_name:
                    assert ref_name in names, item["id"]
        elif item["type"] == "search":
            assert search_source(item)["indexRefName"] in names
        elif item["type"] == "dashboard":
            for panel in json.loads(item["attributes"]["panelsJSON"]):
                assert f"{panel['panelIndex']}:{panel['panelRefName']}" in names, (item["id"], panel)
            for control_id in controls(item):
                assert f"controlGroup_{control_id}:optionsListDataView" in names, item["id"]


def test_split_time_series_rank_their_top_values_over_the_whole_range() -> None:
    """Lens nests a layer's aggregations in column order and puts a terms column above the first
    date histogram when one is added in its editor. A terms column below the date histogram ranks
    its top values per interval: more series than its size, each broken where it left an interval's
    top, and a counter rate of it null after every gap."""
    checked = 0
    for item in by_type("lens"):
        for layer in lens_layers(item).values():
            columns = layer["columns"]
            buckets = [columns[cid]["operationType"] for cid in layer["columnOrder"] if columns[cid]["isBucketed"]]
            if "date_histogram" in buckets and "terms" in buckets:
                checked += 1
                first_date = buckets.index("date_histogram")
                assert "terms" not in buckets[first_date:], f"{item['id']}: {buckets}"
    assert checked >= 10


def test_dashboards_panels_titles_units_and_controls() -> None:
    objects = {item["id"]: item for item in saved_objects()}
    boards = by_type("dashboard")
    assert {board["attributes"]["title"] for board in boards} == REQUIRED_DASHBOARDS
    panel_count = 0
    for board in boards:
        fields = {control["explicitInput"]["fieldName"] for control in controls(board).values()}
        assert fields == CONTROL_FIELDS, board["id"]
        for control in controls(board).values():
            assert control["type"] == "optionsListControl" and control["explicitInput"]["title"]
        panels = json.loads(board["attributes"]["panelsJSON"])
        cells = set()
        for panel in panels:
            grid = panel["gridData"]
            assert grid["x"] + grid["w"] <= 48, (board["id"], panel)
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, f"{board['id']}: panels overlap at {(x, y)}"
                    cells.add((x, y))
        refs = {ref["name"]: ref["id"] for ref in board["references"]}
        for panel in panels:
            target = objects[refs[f"{panel['panelIndex']}:{panel['panelRefName']}"]]
            assert target["attributes"]["title"], target["id"]
            panel_count += 1
    for item in by_type("lens"):
        for layer in lens_layers(item).values():
            for column in layer["columns"].values():
                assert column["label"], item["id"]
                if not column["isBucketed"]:
                    fmt = column["params"].get("format", {})
                    has_unit = fmt.get("id") == "bytes" or fmt.get("params", {}).get("suffix")
                    assert has_unit, f"{item['id']}: metric {column['label']!r} has no unit"
    assert panel_count >= 45


def test_every_field_exists_in_the_index_template_with_a_suitable_type(samples: dict[str, Any]) -> None:
    checked = 0
    problems = []
    for item in saved_objects():
        for field, usage in field_usages(item):
            field_type = template_field_type(field, samples)
            checked += 1
            if field_type is None:
                problems.append(f"{item['id']}: {field} ({usage}) is not in the index template")
            elif usage in ALLOWED_TYPES and field_type not in ALLOWED_TYPES[usage]:
                problems.append(f"{item['id']}: {usage} on {field}, a {field_type} field")
        if item["type"] == "lens":
            for layer in lens_layers(item).values():
                for column in layer["columns"].values():
                    field = column.get("sourceField")
                    if column["isBucketed"] and field and column["dataType"] in LENS_DATA_TYPES:
                        field_type = template_field_type(field, samples)
                        if field_type not in LENS_DATA_TYPES[column["dataType"]]:
                            problems.append(f"{item['id']}: {field} is {field_type}, column says {column['dataType']}")
    assert not problems, "\n".join(problems)
    assert checked > 150


def test_every_document_field_outside_the_raw_namespaces_is_mapped(documents: list[dict[str, Any]]) -> None:
    """Fields left to dynamic mapping become text with a .keyword child, which no panel can
    aggregate (event.reason was one): every ECS and flowd.* field of flow, counter and drop
    documents, enriched, has an explicit mapping."""
    properties = mappings()["properties"]

    def mapped(key: str) -> bool:
        node: dict[str, Any] = {"properties": properties}
        for part in key.split("."):
            node = node.get("properties", {}).get(part)  # type: ignore[assignment]
            if node is None:
                return False
        return "type" in node

    kinds = {doc["event.action"] for doc in documents}
    assert {"netflow_flow", "sflow_flow", "sflow_counters", "sflow_drop"} <= kinds
    keys = {key for doc in documents for key in doc if not key.startswith(("netflow.", "sflow."))}
    assert {"event.reason", "flowd.source_address_class", "source.geo.city_name", "source.geo.name"} <= keys
    assert {"observer.name", "observer.egress.interface.alias", "observer.ingress.interface.name"} <= keys
    assert sorted(key for key in keys if not mapped(key)) == []


# -- Against a cluster ---------------------------------------------------------------------------------


def metric_agg(column: dict[str, Any]) -> dict[str, Any] | None:
    """The Elasticsearch aggregation Lens runs for a metric column (None: doc_count, or computed
    by Kibana from other columns, like counter_rate)."""
    operation, field = column["operationType"], column.get("sourceField")
    if operation == "count":
        return None if field == "___records___" else {"value_count": {"field": field}}
    if operation in ("sum", "avg", "min", "max"):
        return {operation: {"field": field}}
    if operation == "unique_count":
        return {"cardinality": {"field": field}}
    if operation == "last_value":
        # Kibana uses top_metrics for numbers where available; top_hits is its fallback (osmem has no top_metrics).
        sort = column["params"]["sortField"]
        return {"top_hits": {"size": 1, "sort": [{sort: {"order": "desc"}}], "_source": {"includes": [field]}}}
    if operation in ("counter_rate", "differences", "cumulative_sum", "moving_average"):
        return None
    raise AssertionError(f"no translation for {operation}")


def bucket_agg(column: dict[str, Any], columns: dict[str, dict[str, Any]]) -> dict[str, Any]:
    operation, params = column["operationType"], column.get("params", {})
    if operation == "date_histogram":
        # "auto" is a function of the time picker's range; the corpus spans years, so an hour, no empty buckets.
        return {"date_histogram": {"field": column["sourceField"], "fixed_interval": "1h", "min_doc_count": 1}}
    if operation == "filters":
        return {"filters": {"filters": {f["label"]: kql(f["input"]["query"]) for f in params["filters"]}}}
    assert operation == "terms", operation
    order_spec = params["orderBy"]
    direction = params.get("orderDirection", "desc")
    if order_spec["type"] == "alphabetical":
        order: dict[str, str] = {"_key": direction}
    else:
        target = columns[order_spec["columnId"]]
        order = {"_count": direction} if metric_agg(target) is None else {order_spec["columnId"]: direction}
    fields = [column["sourceField"], *params.get("secondaryFields", [])]
    if len(fields) > 1:
        return {"multi_terms": {"terms": [{"field": f} for f in fields], "size": params["size"], "order": order}}
    body: dict[str, Any] = {"field": fields[0], "size": params["size"], "order": order}
    if params.get("missingBucket") and column["dataType"] == "string":
        body["missing"] = "(missing value)"
    return {"terms": body}


COUNT_SUFFIX = "__values"


def metric_aggs(columns: dict[str, dict[str, Any]], *, value_counts: bool = False) -> dict[str, Any]:
    """The metric columns' aggregations; with `value_counts`, also a `value_count` of each metric's
    field (an aggregation of a field no document has is 0, not empty: the count tells them apart)."""
    aggs = {}
    for column_id, column in columns.items():
        if column["isBucketed"]:
            continue
        agg = metric_agg(column)
        if agg is None:
            continue
        count: dict[str, Any] = {"value_count": {"field": column["sourceField"]}}
        if column.get("filter"):
            agg = {"filter": kql(column["filter"]["query"]), "aggs": {"value": agg}}
            count = {"filter": kql(column["filter"]["query"]), "aggs": {"value": count}}
        aggs[column_id] = agg
        if value_counts:
            aggs[column_id + COUNT_SUFFIX] = count
    return aggs


def lens_search(layer: dict[str, Any], query: str) -> dict[str, Any]:
    """Bucket columns nest in column order; metric columns go into the innermost bucket, and a
    terms column ordered by a metric also gets that metric as its own sub-aggregation (as Kibana's
    terms aggregation adds its `orderAgg`)."""
    columns = layer["columns"]
    buckets = [cid for cid in layer["columnOrder"] if columns[cid]["isBucketed"]]
    metrics = metric_aggs(columns)
    aggs = metric_aggs(columns, value_counts=True)
    for column_id in reversed(buckets):
        agg = bucket_agg(columns[column_id], columns)
        for key in agg.get("terms", agg.get("multi_terms", {})).get("order", {}):
            if key in metrics:
                aggs.setdefault(key, metrics[key])
        if aggs:
            agg["aggs"] = aggs
        aggs = {column_id: agg}
    return {"size": 0, "track_total_hits": True, "query": kql(query), "aggs": aggs}


def metric_value(column_id: str, bucket: dict[str, Any]) -> Any:
    value = bucket[column_id]
    if "value" in value and isinstance(value["value"], dict):
        value = value["value"]
    if "hits" in value:
        hits = value["hits"]["hits"]
        return hits[0]["_source"] if hits else None
    return value.get("value")


def leaf_buckets(aggs: dict[str, Any], answer: dict[str, Any], depth: int, buckets: list[str]) -> Iterator[Any]:
    if depth == len(buckets):
        yield answer
        return
    result = answer[buckets[depth]]["buckets"]
    items = result.values() if isinstance(result, dict) else result
    for item in items:
        if item["doc_count"] > 0:
            yield from leaf_buckets(aggs, item, depth + 1, buckets)


def check_lens_layer(url: str, index: str, item: dict[str, Any], layer: dict[str, Any]) -> int:
    body = lens_search(layer, item["attributes"]["state"]["query"]["query"])
    answer = es_request(url, "POST", f"/{index}/_search", body)
    assert "aggregations" in answer or not body["aggs"], f"{item['id']}: {answer}\n{json.dumps(body)}"
    assert answer["hits"]["total"]["value"] > 0, f"{item['id']}: no documents match {body['query']}"
    columns = layer["columns"]
    buckets = [cid for cid in layer["columnOrder"] if columns[cid]["isBucketed"]]
    leaves = list(leaf_buckets(body["aggs"], answer.get("aggregations", {}), 0, buckets))
    assert leaves, f"{item['id']} ({item['attributes']['title']}): no buckets\n{json.dumps(body)}"
    for column_id in metric_aggs(columns):
        counted = [metric_value(column_id + COUNT_SUFFIX, leaf) for leaf in leaves]
        values = [metric_value(column_id, leaf) for leaf in leaves]
        label = columns[column_id]["label"]
        assert any(count for count in counted), f"{item['id']}: no document has a value for {label}"
        assert any(value is not None for value in values), f"{item['id']}: {label} is empty"
    return len(leaves)


@pytest.fixture(scope="module")
def flow_index(es_url: str, documents: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:  # noqa: F811
    """The corpus documents in an index made from flowd's template (without data stream: osmem has none)."""
    name = f"flows-flowddash-{uuid.uuid4().hex[:8]}"
    settings = ElasticsearchSettings(data_stream="flows-flowddash")
    template = index_template(settings, data_stream=False, ilm_policy=None, logsdb=False)
    template["index_patterns"] = [name]
    answer = es_request(es_url, "PUT", f"/_index_template/{name}", template)
    assert answer.get("acknowledged"), answer
    lines = b"".join(orjson.dumps({"create": {}}) + b"\n" + orjson.dumps(doc) + b"\n" for doc in documents)
    request = urllib.request.Request(
        f"{es_url}/{name}/_bulk?refresh=true",
        data=lines,
        method="POST",
        headers={"content-type": "application/x-ndjson"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        result = orjson.loads(response.read())
    assert not result.get("errors"), [i for i in result["items"] if "error" in next(iter(i.values()))][:3]
    try:
        yield es_url, name
    finally:
        delete_target(es_url, name)
        es_request(es_url, "DELETE", f"/_index_template/{name}")


@pytest.mark.integration
def test_every_lens_layer_returns_buckets(flow_index: tuple[str, str]) -> None:
    url, index = flow_index
    mapping = next(iter(es_request(url, "GET", f"/{index}/_mapping").values()))["mappings"]
    assert mapping["properties"]["source"]["properties"]["geo"]["properties"]["location"]["type"] == "geo_point"
    layers = leaves = 0
    for item in by_type("lens"):
        for layer in lens_layers(item).values():
            leaves += check_lens_layer(url, index, item, layer)
            layers += 1
    assert layers >= 40 and leaves > layers


INTERFACE_INDEX_FIELDS = {"sflow.if_index", "observer.ingress.interface.id", "observer.egress.interface.id"}


def test_every_interface_split_names_its_exporter() -> None:
    """An ifIndex numbers an interface within one exporter or agent only (every router has its
    ifIndex 1): a bucket on one must have observer.ip in it or in an enclosing bucket, else the
    interfaces of different devices sharing a number are added up, or their counters maxed, as one."""
    checked = 0
    for item in by_type("lens"):
        for layer in lens_layers(item).values():
            columns = layer["columns"]
            enclosing: set[str] = set()
            for column_id in layer["columnOrder"]:
                column = columns[column_id]
                if column["operationType"] != "terms":
                    continue
                fields = {column["sourceField"], *column["params"].get("secondaryFields", [])}
                enclosing |= fields
                if fields & INTERFACE_INDEX_FIELDS:
                    checked += 1
                    assert "observer.ip" in enclosing, f"{item['id']}: {column['label']} without the exporter"
    assert checked >= 9


def interface_counter_documents() -> list[dict[str, Any]]:
    """Hourly sFlow generic interface counters (sFlow v5 counters_sample, if_counters) from two
    agents that both number the port 7: agent .60's counters are large and count 1 a second, agent
    .61's are small and count 100 a second."""

    from flowd.decode import TemplateCache, decode_datagram
    from flowd.output.documents import flow_document
    from tests.test_sflow_properties import counter_sample, datagram, xdr

    documents = []
    for agent, base, per_second in (("192.0.2.60", 3_000_000_000, 1), ("192.0.2.61", 1_000, 100)):
        for hour in range(5):
            value = base + per_second * 3600 * hour
            # ifIndex, ifType, ifSpeed, ifDirection, ifStatus, ifInOctets, ifInUcastPkts, ifInMulticastPkts,
            # ifInBroadcastPkts, ifInDiscards, ifInErrors, ifInUnknownProtos, ifOutOctets, ifOutUcastPkts,
            # ifOutMulticastPkts, ifOutBroadcastPkts, ifOutDiscards, ifOutErrors, ifPromiscuousMode
            record = struct.pack(
                "!IIQIIQIIIIIIQIIIIII",
                7,
                6,
                10**9,
                1,
                3,
                value,
                0,
                0,
                0,
                value,
                value,
                0,
                value,
                0,
                0,
                0,
                value,
                value,
                2,
            )
            payload = datagram(counter_sample(xdr(1, record)), agent=agent, sequence=hour + 1)
            received_at = 1_764_072_000.0 + 3600 * hour + 60
            result = decode_datagram(payload, (agent, 6343), TemplateCache(), received_at)
            documents += [flow_document(record) for record in result.flows]
    assert len(documents) == 10 and {doc["sflow.if_index"] for doc in documents} == {7}
    return documents


def counter_rates(answer: dict[str, Any], layer: dict[str, Any]) -> dict[tuple[Any, ...], set[float]]:
    """Per series (the split's key), the per-second rates Lens's counter_rate draws from the
    hourly maxima: the difference to the previous bucket, or the value itself after a reset."""
    columns = layer["columns"]
    split, time = [cid for cid in layer["columnOrder"] if columns[cid]["isBucketed"]]
    assert columns[time]["operationType"] == "date_histogram"
    rates: dict[tuple[Any, ...], set[float]] = {}
    for rate in (cid for cid, column in columns.items() if column["operationType"] == "counter_rate"):
        (helper,) = columns[rate]["references"]
        for series in answer["aggregations"][split]["buckets"]:
            key = tuple(series["key"]) if isinstance(series["key"], list) else (series["key"],)
            maxima = [bucket[helper]["value"] for bucket in series[time]["buckets"]]
            for previous, current in itertools.pairwise(maxima):
                change = current - previous if current >= previous else current
                rates.setdefault(key, set()).add(change / 3600)
    return rates


@pytest.mark.integration
def test_interface_counter_rates_are_each_interfaces_own(es_url: str) -> None:  # noqa: F811
    name = f"flows-flowdifc-{uuid.uuid4().hex[:8]}"
    template = index_template(
        ElasticsearchSettings(data_stream="flows-flowdifc"), data_stream=False, ilm_policy=None, logsdb=False
    )
    template["index_patterns"] = [name]
    assert es_request(es_url, "PUT", f"/_index_template/{name}", template).get("acknowledged")
    lines = b"".join(
        orjson.dumps({"create": {}}) + b"\n" + orjson.dumps(d) + b"\n" for d in interface_counter_documents()
    )
    request = urllib.request.Request(
        f"{es_url}/{name}/_bulk?refresh=true",
        data=lines,
        method="POST",
        headers={"content-type": "application/x-ndjson"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            assert not orjson.loads(response.read()).get("errors")
        charts = [item for item in by_type("lens") if "counter_rate" in json.dumps(lens_layers(item))]
        assert len(charts) == 4
        for item in charts:
            for layer in lens_layers(item).values():
                body = lens_search(layer, item["attributes"]["state"]["query"]["query"])
                rates = counter_rates(es_request(es_url, "POST", f"/{name}/_search", body), layer)
                agents = {key[0]: found for key, found in rates.items() if len(key) == 2}
                assert len(rates) == 2 and agents == {"192.0.2.60": {1.0}, "192.0.2.61": {100.0}}, (item["id"], rates)
    finally:
        delete_target(es_url, name)
        es_request(es_url, "DELETE", f"/_index_template/{name}")


@pytest.mark.integration
def test_every_map_layer_returns_grid_cells(flow_index: tuple[str, str]) -> None:
    url, index = flow_index
    checked = 0
    for item in by_type("map"):
        query = kql(json.loads(item["attributes"]["mapStateJSON"])["query"]["query"])
        for layer in map_layers(item):
            source = layer["sourceDescriptor"]
            if source["type"] != "ES_GEO_GRID":
                continue
            metrics = {
                f"{m['type']}_of_{m['field']}": {m["type"]: {"field": m["field"]}}
                for m in source["metrics"]
                if m["type"] != "count"
            }
            field = source["geoField"]
            grid = {
                "geotile_grid": {"field": field, "precision": 4},
                "aggs": {"center": {"geo_centroid": {"field": field}}, **metrics},
            }
            answer = es_request(url, "POST", f"/{index}/_search", {"size": 0, "query": query, "aggs": {"grid": grid}})
            cells = answer["aggregations"]["grid"]["buckets"]
            assert cells, f"{item['id']}: no grid cells for {field}"
            for name in metrics:
                assert any((cell[name]["value"] or 0) > 0 for cell in cells), f"{item['id']}: {name}"
            checked += 1
    assert checked == 4


@pytest.mark.integration
def test_the_saved_search_finds_flow_records(flow_index: tuple[str, str]) -> None:
    url, index = flow_index
    (search,) = by_type("search")
    source = search_source(search)
    sort = [{field: {"order": direction}} for field, direction in search["attributes"]["sort"]]
    answer = es_request(
        url, "POST", f"/{index}/_search", {"size": 50, "query": kql(source["query"]["query"]), "sort": sort}
    )
    hits = [hit["_source"] for hit in answer["hits"]["hits"]]
    assert hits and all(hit["event.action"] in ("netflow_flow", "sflow_flow") for hit in hits)
    found = {column for hit in hits for column in search["attributes"]["columns"] if column in hit}
    assert found == set(search["attributes"]["columns"]), set(search["attributes"]["columns"]) - found


# -- Grafana --------------------------------------------------------------------------------------------


def grafana_queries() -> list[tuple[str, str]]:
    board = json.loads(GRAFANA_FILE.read_text(encoding="utf-8"))
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel.get("targets", [])]


def promql_metric_names(expr: str) -> set[str]:
    promql_parser = pytest.importorskip("promql_parser", reason="pip install promql-parser")
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        for attribute in ("expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(node, attribute, None)
            if child is not None and not isinstance(child, str | int | float):
                visit(child)
        for child in getattr(node, "args", None) or []:
            visit(child)

    visit(promql_parser.parse(expr.replace("$__rate_interval", "5m")))
    return names


def test_grafana_dashboard_parses_and_imports_anywhere() -> None:
    board = json.loads(GRAFANA_FILE.read_text(encoding="utf-8"))
    (datasource,) = board["__inputs"]
    assert datasource["type"] == "datasource" and datasource["pluginId"] == "prometheus"
    variable = "${" + datasource["name"] + "}"
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert len(panels) >= 25
    for panel in panels:
        assert panel["title"] and panel["fieldConfig"]["defaults"]["unit"], panel
        assert panel["datasource"]["uid"] == variable
        assert all(target["datasource"]["uid"] == variable for target in panel["targets"])
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))


def test_grafana_queries_are_promql() -> None:
    promql_parser = pytest.importorskip("promql_parser", reason="pip install promql-parser")
    queries = grafana_queries()
    for title, expr in queries:
        try:
            promql_parser.parse(expr.replace("$__rate_interval", "5m"))
        except ValueError as error:
            raise AssertionError(f"{title}: {expr}: {error}") from None
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(flowd_flows_out_total[5m])")  # the parser does reject bad syntax
    assert len(queries) >= 50


def served_metric_names(exposition: str) -> set[str]:
    """Series names a scrape can return, from the TYPE lines (families without samples included)."""
    names = set()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, flags=re.MULTILINE):
        if kind == "counter":
            family = family.removesuffix("_total")  # prometheus_client >= 0.22 writes the suffix in TYPE lines
            names |= {f"{family}_total", f"{family}_created"}
        elif kind == "histogram":
            names |= {f"{family}_bucket", f"{family}_sum", f"{family}_count", f"{family}_created"}
        else:
            names.add(family)
    return names


@pytest.mark.integration
def test_grafana_metric_names_are_served_by_flowd_run(tmp_path: Path) -> None:
    from tests.test_server_e2e import Server

    server = Server(tmp_path)
    server.start()
    try:
        status, exposition = server.get("/metrics")
    finally:
        server.stop()
    assert status == 200
    served = served_metric_names(exposition)
    assert "flowd_datagrams_received_total" in served and "flowd_es_bulk_latency_seconds_bucket" in served
    used = set().union(*(promql_metric_names(expr) for _, expr in grafana_queries()))
    assert used <= served, sorted(used - served)
    from flowd.server.metrics import METRICS

    unused = {name for name in METRICS if not any(n.startswith(name) for n in used)}
    assert not unused, f"metrics without a panel (add them in dashboards/tools/build_grafana.py): {sorted(unused)}"
    assert len(used) >= 35
