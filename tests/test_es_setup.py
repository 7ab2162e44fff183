"""`flowd setup` against a real server: idempotent, and the mapping types every schema field.

osmem-server has neither ILM/ISM nor data streams: there the test checks that setup says so, falls
back to a plain index, and that the template and the mapping are right. Against FLOWD_TEST_ES_URL
(Elasticsearch or OpenSearch) it also checks the lifecycle policy and the data stream.
"""

from __future__ import annotations

import argparse
import contextlib
import struct
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from flowd.config import ElasticsearchSettings
from flowd.decode import TemplateCache, decode_datagram
from flowd.decode.fields import element_names
from flowd.output.batch_documents import documents_for
from flowd.output.documents import flow_document
from flowd.output.index_template import (
    add_setup_arguments,
    index_template,
    parse_cluster_info,
    run_setup,
    settings_from_args,
    setup_cluster,
    total_fields_limit,
)
from tests.es_server import delete_target, es_auth, es_request, es_url, is_osmem  # noqa: F401
from tests.test_ipfix_features import ipfix_message, ipfix_set

pytestmark = [pytest.mark.integration]

SCHEMA_TYPES = {
    "@timestamp": "date",
    "event.start": "date",
    "event.end": "date",
    "event.duration": "long",
    "event.kind": "keyword",
    "event.category": "keyword",
    "event.type": "keyword",
    "event.action": "keyword",
    "observer.ip": "ip",
    "observer.hostname": "keyword",
    "observer.ingress.interface.id": "long",
    "observer.ingress.interface.name": "keyword",
    "observer.egress.interface.id": "long",
    "observer.egress.interface.name": "keyword",
    "network.transport": "keyword",
    "network.iana_number": "keyword",
    "network.type": "keyword",
    "network.bytes": "long",
    "network.packets": "long",
    "network.direction": "keyword",
    "network.community_id": "keyword",
    "network.vlan.id": "keyword",
    "network.application": "keyword",
    "related.ip": "ip",
    "related.hosts": "keyword",
    "flow.id": "keyword",
    "flow.locality": "keyword",
    "netflow.type": "keyword",
    "netflow.exporter.address": "keyword",
    "netflow.exporter.version": "long",
    "netflow.exporter.uptime_millis": "long",
    "netflow.exporter.source_id": "long",
    "netflow.exporter.timestamp": "date",
    "flowd.sampling_rate": "long",
    "flowd.raw_bytes": "long",
    "flowd.raw_packets": "long",
}
for _side in ("source", "destination"):
    SCHEMA_TYPES |= {
        f"{_side}.ip": "ip",
        f"{_side}.port": "long",
        f"{_side}.mac": "keyword",
        f"{_side}.domain": "keyword",
        f"{_side}.bytes": "long",
        f"{_side}.packets": "long",
        f"{_side}.as.number": "long",
        f"{_side}.as.organization.name": "keyword",
        f"{_side}.geo.location": "geo_point",
    } | {
        f"{_side}.geo.{k}": "keyword"
        for k in ("country_iso_code", "country_name", "city_name", "region_name", "continent_name")
    }

RAW_FIELDS = {
    "netflow.source_ipv4_address": ("10.0.0.1", "ip"),
    "netflow.bgp_next_hop_ipv6_address": ("2001:db8::1", "ip"),
    "netflow.source_mac_address": ("00:11:22:33:44:55", "keyword"),
    "netflow.octet_delta_count": (1234, "long"),
    "netflow.interface_name": ("Gi0/0", "keyword"),
    "sflow.agent_address": ("192.0.2.1", "ip"),
    "sflow.src_ip": ("192.0.2.2", "ip"),
    "sflow.next_hop": ("192.0.2.3", "ip"),
    "sflow.src_mac": ("00:11:22:33:44:66", "keyword"),
    "sflow.if_admin_status": ("up", "keyword"),
    "sflow.sampling_rate": (512, "long"),
    "sflow.dot3_stats_internal_mac_transmit_errors": (3, "long"),  # a count, though its name holds "mac"
}


def flatten(properties: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for name, spec in properties.items():
        if "properties" in spec:
            out |= flatten(spec["properties"], f"{prefix}{name}.")
        else:
            out[f"{prefix}{name}"] = spec.get("type", "object")
    return out


def test_template_types_every_schema_field() -> None:
    body = index_template(ElasticsearchSettings(), data_stream=True, ilm_policy="p", logsdb=True)
    types = flatten(body["template"]["mappings"]["properties"])
    assert {k: types.get(k) for k in SCHEMA_TYPES} == SCHEMA_TYPES
    assert body["template"]["settings"]["index"] == {
        "codec": "best_compression",
        "lifecycle": {"name": "p"},
        "mode": "logsdb",
        "mapping": {"total_fields": {"limit": total_fields_limit()}},
    }
    assert body["data_stream"] == {} and body["index_patterns"] == ["flows-flowd-*"]


def test_field_limit_holds_every_named_element() -> None:
    """Elasticsearch's default limit (1,000 fields, objects included) is below what the element
    registry alone can name; the template's limit holds the mapping and every name with room."""
    body = index_template(ElasticsearchSettings(), data_stream=True, ilm_policy=None, logsdb=False)
    mapped = flatten_count(body["template"]["mappings"]["properties"])
    limit = body["template"]["settings"]["index"]["mapping"]["total_fields"]["limit"]
    assert len(element_names()) > 1_000
    assert limit >= mapped + len(element_names()) + 500


def flatten_count(properties: dict[str, Any]) -> int:
    return sum(1 + flatten_count(spec.get("properties", {})) for spec in properties.values())


def test_fields_past_the_limit_unmapped_only_from_elasticsearch_8_13() -> None:
    assert parse_cluster_info({"version": {"number": "8.13.0"}}).supports_ignore_dynamic_beyond_limit
    assert parse_cluster_info({"version": {"number": "9.0.1"}}).supports_ignore_dynamic_beyond_limit
    assert not parse_cluster_info({"version": {"number": "8.12.2"}}).supports_ignore_dynamic_beyond_limit
    opensearch = parse_cluster_info({"version": {"number": "2.19.0", "distribution": "opensearch"}})
    assert not opensearch.supports_ignore_dynamic_beyond_limit
    body = index_template(
        ElasticsearchSettings(), data_stream=True, ilm_policy=None, logsdb=False, ignore_dynamic_beyond_limit=True
    )
    total_fields = body["template"]["settings"]["index"]["mapping"]["total_fields"]
    assert total_fields == {"limit": total_fields_limit(), "ignore_dynamic_beyond_limit": True}


def test_logsdb_only_from_elasticsearch_8_17() -> None:
    assert parse_cluster_info({"version": {"number": "8.17.0"}}).supports_logsdb
    assert parse_cluster_info({"version": {"number": "9.1.2"}}).supports_logsdb
    assert not parse_cluster_info({"version": {"number": "8.16.1"}}).supports_logsdb
    assert not parse_cluster_info({"version": {"number": "3.1.0", "distribution": "opensearch"}}).supports_logsdb


def test_setup_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_setup_arguments(parser)
    args = parser.parse_args(
        ["--es", "https://a:9200,https://b:9200", "--api-key", "k", "--insecure", "--ca-file", "ca.pem"]
    )
    settings = settings_from_args(args)
    assert settings.hosts == ["https://a:9200", "https://b:9200"]
    assert (settings.api_key, settings.verify, settings.ca_file) == ("k", False, "ca.pem")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--es", "http://127.0.0.1:9", "--namespace", "Production"], "elasticsearch.namespace"),
        (["--es", "ftp://127.0.0.1:9"], "elasticsearch.hosts"),
    ],
)
def test_setup_options_are_checked_as_the_configuration_is(options: list[str], named: str, capsys: Any) -> None:
    """Found by the CLI audit: `--namespace` and `--es` replaced the checked settings unchecked,
    so `flowd setup` installed a template for an index no `_bulk` request could write to."""
    parser = argparse.ArgumentParser()
    add_setup_arguments(parser)
    assert run_setup(parser.parse_args(options)) == 2
    assert named in capsys.readouterr().err


async def test_setup_is_idempotent_and_the_mapping_holds(es_url: str) -> None:  # noqa: F811
    user, password = es_auth()
    settings = ElasticsearchSettings(
        hosts=[es_url], user=user, password=password, data_stream="flows-flowdsetup", namespace=uuid.uuid4().hex[:10]
    )
    target = f"{settings.data_stream}-{settings.namespace}"
    first: list[str] = []
    second: list[str] = []
    try:
        assert await setup_cluster(settings, first.append) == 0, first
        assert await setup_cluster(settings, second.append) == 0, second
        assert any("created" in line for line in first)
        assert not any("created" in line or "updated" in line for line in second), second
        assert any("index template flows-flowdsetup: found" in line for line in second)

        answer = es_request(es_url, "GET", "/_index_template/flows-flowdsetup")
        template = answer["index_templates"][0]["index_template"]
        types = flatten(template["template"]["mappings"]["properties"])
        assert {k: types.get(k) for k in SCHEMA_TYPES} == SCHEMA_TYPES
        assert template["template"]["settings"]["index"]["codec"] == "best_compression"

        document = {"@timestamp": "2026-01-01T00:00:00Z", **{k: v for k, (v, _) in RAW_FIELDS.items()}}
        es_request(es_url, "POST", f"/{target}/_create/doc-1?refresh=true", document)
        mapping = next(iter(es_request(es_url, "GET", f"/{target}/_mapping").values()))["mappings"]
        raw_types = flatten(mapping["properties"])
        assert {k: raw_types.get(k) for k in RAW_FIELDS} == {k: t for k, (_, t) in RAW_FIELDS.items()}

        # A collector hearing many vendors comes to hold every element name the registry knows.
        names = sorted(element_names())
        for start in range(0, len(names), 200):
            raw = {f"netflow.{name}": "x" for name in names[start : start + 200]}
            document = {"@timestamp": "2026-01-01T00:00:00Z", **raw}
            answer = es_request(es_url, "POST", f"/{target}/_create/names-{start}", document)
            assert answer.get("result") == "created", answer
        mapping = next(iter(es_request(es_url, "GET", f"/{target}/_mapping").values()))["mappings"]
        assert set(names) <= set(mapping["properties"]["netflow"]["properties"])

        if is_osmem(es_url):
            # osmem: no ILM/ISM and no data streams; setup must say so and fall back to an index.
            assert any("not supported" in line and "policy" in line for line in first)
            assert any("using a plain index" in line for line in first)
        else:
            streams = es_request(es_url, "GET", f"/_data_stream/{target}")
            assert streams["data_streams"][0]["name"] == target
    finally:
        delete_target(es_url, target)
        es_request(es_url, "DELETE", "/_index_template/flows-flowdsetup")


@contextlib.asynccontextmanager
async def set_up(es_url: str, data_stream: str) -> AsyncIterator[str]:  # noqa: F811
    """A target installed by `flowd setup`'s code (template, then index or data stream) under a
    fresh namespace; its name, removed with its template afterwards."""
    user, password = es_auth()
    settings = ElasticsearchSettings(
        hosts=[es_url], user=user, password=password, data_stream=data_stream, namespace=uuid.uuid4().hex[:10]
    )
    target = f"{data_stream}-{settings.namespace}"
    try:
        lines: list[str] = []
        assert await setup_cluster(settings, lines.append) == 0, lines
        yield target
    finally:
        delete_target(es_url, target)
        es_request(es_url, "DELETE", f"/_index_template/{data_stream}")


def create_each(es_url: str, target: str, documents: list[dict[str, Any]]) -> None:  # noqa: F811
    """Each document through `_create`, as the sink sends it; every one must be indexed."""
    for number, document in enumerate(documents):
        answer = es_request(es_url, "POST", f"/{target}/_create/{number}", document)
        assert answer.get("result") == "created", answer
    es_request(es_url, "POST", f"/{target}/_refresh")


def odd_length_datagram(records: int) -> bytes:
    """NetFlow v9 whose template gives sourceIPv4Address 5 bytes, ingressInterface 16 and
    bgpSourceAsNumber 12 (RFC 3954 lets a template declare any length): flowd keeps them as hex."""
    fields = [(8, 5), (12, 4), (7, 2), (11, 2), (10, 16), (16, 12), (1, 4), (2, 4), (4, 1)]
    template = struct.pack("!HH", 256, len(fields)) + b"".join(struct.pack("!HH", *field) for field in fields)
    record = bytes([10, 0, 0, 1, 9, 10, 0, 0, 2]) + struct.pack("!HH", 1234, 80) + b"\x01" * 16 + b"\x02" * 12
    record += struct.pack("!IIB", 100, 1, 6)
    data = record * records
    data += bytes(-len(data) % 4)
    return (
        struct.pack("!HHIIII", 9, 1 + records, 1000, 1_700_000_000, 1, 0)
        + struct.pack("!HH", 0, 4 + len(template))
        + template
        + struct.pack("!HH", 256, 4 + len(data))
        + data
    )


async def test_documents_with_hex_for_ecs_values_are_indexed(es_url: str) -> None:  # noqa: F811
    """ECS fields copied from element values (source.ip, interface ids, AS numbers) hold the hex
    too; the cluster must leave those values unindexed, not reject the flow."""
    result = decode_datagram(odd_length_datagram(20), ("192.0.2.9", 2055), TemplateCache(), 1_700_000_000.0)
    documents = [*documents_for(result.flows), *(flow_document(record) for record in result.flows)]
    assert len(documents) == 40
    assert documents[0]["source.ip"] == "0a00000109"
    assert documents[0]["observer.ingress.interface.id"] == "01" * 16
    async with set_up(es_url, "flows-flowdodd") as target:
        create_each(es_url, target, documents)
        found = es_request(es_url, "POST", f"/{target}/_count", {"query": {"term": {"destination.ip": "10.0.0.2"}}})
        assert found["count"] == 40


def times_datagram(times: list[tuple[int, int, int]]) -> bytes:
    """NetFlow v9 whose records carry flowStartMilliseconds, flowEndMilliseconds and
    observationTimeMilliseconds (IEs 152, 153, 323) as given: absolute times an exporter may fill
    with anything, such as 2^62 ms (the year 146,140,482)."""
    fields = [(8, 4), (12, 4), (4, 1), (152, 8), (153, 8), (323, 8)]
    template = struct.pack("!HH", 257, len(fields)) + b"".join(struct.pack("!HH", *field) for field in fields)
    data = b"".join(bytes([10, 0, 0, 1, 10, 0, 0, 2, 6]) + struct.pack("!QQQ", *row) for row in times)
    data += bytes(-len(data) % 4)
    return (
        struct.pack("!HHIIII", 9, 1 + len(times), 1000, 1_700_000_000, 1, 0)
        + struct.pack("!HH", 0, 4 + len(template))
        + template
        + struct.pack("!HH", 257, 4 + len(data))
        + data
    )


async def test_times_no_date_can_hold_are_taken_as_none_and_the_flow_is_indexed(es_url: str) -> None:  # noqa: F811
    """Found by an audit: an absolute time past the year 9999 became `@timestamp`, which
    Elasticsearch's `date` refuses, and with it the flow. Such a time now counts as absent."""
    good, far = 1_700_000_000_500, 2**62
    rows = [(good - 2_000, good, good - 1), (far, far, far), (good - 2_000, far, good - 1)]
    result = decode_datagram(times_datagram(rows), ("192.0.2.9", 2055), TemplateCache(), 1_700_000_001.0)
    all_good = decode_datagram(times_datagram(rows[:1] * 3), ("192.0.2.9", 2055), TemplateCache(), 1_700_000_001.0)
    for documents in (
        list(documents_for(result.flows)),
        [flow_document(record) for record in result.flows],
    ):
        first, second, third = documents
        assert (first["@timestamp"], first["event.start"], first["event.end"]) == (
            "2023-11-14T22:13:20.500Z",
            "2023-11-14T22:13:18.500Z",
            "2023-11-14T22:13:20.500Z",
        )
        assert second["@timestamp"] == "2023-11-14T22:13:20.000Z"  # the export time
        assert "event.start" not in second and "event.end" not in second
        assert third["@timestamp"] == "2023-11-14T22:13:20.499Z"  # the observation time
        assert third["event.start"] == "2023-11-14T22:13:18.500Z" and "event.end" not in third
    assert next(iter(documents_for(all_good.flows))) == documents[0] == flow_document(next(iter(all_good.flows)))
    async with set_up(es_url, "flows-flowdtime") as target:
        create_each(es_url, target, documents)


def float_datagram(template_id: int, length: int, value: bytes) -> bytes:
    """IPFIX with samplingProbability (IE 311, float64) in `length` bytes: other than 4 or 8,
    flowd keeps it as hex."""
    template = struct.pack("!HH", template_id, 3) + struct.pack("!HHHHHH", 8, 4, 12, 4, 311, length)
    record = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + value
    return ipfix_message(ipfix_set(2, template), ipfix_set(template_id, record))


async def test_a_raw_float_then_hex_in_the_same_field_is_indexed_with_its_digits(es_url: str) -> None:  # noqa: F811
    """Found by an audit: raw float64 elements were mapped as they came, `float` with no room for a
    later value kept as hex, which then cost its flow; a `float` also kept 7 digits of 17."""
    cache = TemplateCache()
    documents = []
    for template_id, length, value in (
        (256, 8, struct.pack("!d", 1 / 3)),
        (257, 3, b"\x0a\x0b\x0c"),
        (258, 3, b"\x01\x02\x03"),  # hex of digits only: must not be read as the number 10203
    ):
        result = decode_datagram(float_datagram(template_id, length, value), ("192.0.2.9", 4739), cache, 1.7e9)
        documents += list(documents_for(result.flows))
    assert [d["netflow.sampling_probability"] for d in documents] == [1 / 3, "0a0b0c", "010203"]
    async with set_up(es_url, "flows-flowdfloat") as target:
        create_each(es_url, target, documents)
        numbers = {"range": {"netflow.sampling_probability": {"gte": 1}}}
        assert es_request(es_url, "POST", f"/{target}/_count", {"query": numbers})["count"] == 0
        mapping = es_request(es_url, "GET", f"/{target}/_mapping")
        (index,) = mapping.values()
        field = index["mappings"]["properties"]["netflow"]["properties"]["sampling_probability"]
        assert field["type"] == "double"
