"""`flowd setup`: lifecycle policy, composable index template and data stream, idempotently.

The mapping types every field of design.md section 4; raw `netflow.*`/`sflow.*` fields are typed
by dynamic templates (addresses as ip, MAC addresses and other strings as keyword, integers as long).
What the server supports decides the rest, and `setup` says what it did:
- Elasticsearch: an ILM policy (hot with rollover by size and age, delete after the retention),
  and LogsDB index mode from 8.17 on.
- OpenSearch: an ISM policy with the same states (ISM applies to the data stream's backing indices
  through `ism_template`); no LogsDB.
- A server without data streams (osmem-server) gets the template without `data_stream` and a
  plain index of the same name, so the sink's `create` requests work unchanged.

Raw fields are mapped as they first arrive, one field per element name, and the names come from
the network: the registry alone names about 1,500 elements, and an exporter of elements no
registry knows (`pen_<PEN>_ie_<ID>`) can invent new ones without end. The template raises the
total-fields limit above what the registry can name, and where Elasticsearch can (8.13 on) it
leaves fields past the limit unmapped (kept in `_source`) instead of rejecting every document
that brings one.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson
from elastic_transport import AsyncTransport, TransportError

from flowd.config import ElasticsearchSettings
from flowd.config_values import check_elasticsearch
from flowd.decode.fields import element_names
from flowd.errors import ConfigError
from flowd.output.es_transport import build_transport, error_reason, request_json

TEMPLATE_VERSION = 1
LOGSDB_MIN_VERSION = (8, 17)
"""LogsDB index mode is generally available from Elasticsearch 8.17."""
IGNORE_DYNAMIC_BEYOND_LIMIT_MIN_VERSION = (8, 13)
"""`index.mapping.total_fields.ignore_dynamic_beyond_limit` exists from Elasticsearch 8.13 (not in
OpenSearch, which refuses settings it does not know)."""
RAW_FIELDS_HEADROOM = 1_000
"""Fields beyond the explicit mapping and the registry's element names: sFlow's raw fields (about
250), options scopes, and elements no registry names."""

_KEYWORD = {"type": "keyword", "ignore_above": 1024}
_LONG = {"type": "long"}
_IP = {"type": "ip"}
_DATE = {"type": "date"}
_RAW_IP = {"type": "ip", "ignore_malformed": True}
_RAW_LONG = {"type": "long", "ignore_malformed": True, "coerce": False}
"""Raw exporter values (`netflow.*`, `sflow.*`) that do not fit their type (an unsigned64 identifier
past 2^63, an address element of an odd length kept as hex) are left out of the index, and kept in
`_source`, instead of costing the cluster the whole document. The ECS fields the documents copy
from those values unchanged (addresses, ports, ifIndexes, BGP AS numbers) get the same treatment:
a template giving `sourceIPv4Address` 5 bytes or `ingressInterface` 16 makes them hex there too.
Without `coerce`, hex made only of digits ("010203") is left out too, not indexed as a number."""
_RAW_DOUBLE = {"type": "double", "ignore_malformed": True, "coerce": False}
"""Raw float64 elements (samplingProbability, the error and confidence-limit elements): a `float`
would lose digits, and a later value kept as hex (a template giving one 3 bytes) must not cost
the document."""


def _endpoint() -> dict[str, Any]:
    """`source` and `destination`: the same fields."""
    return {
        "properties": {
            "ip": _RAW_IP,
            "port": _RAW_LONG,
            "mac": _KEYWORD,
            "domain": _KEYWORD,
            "bytes": _LONG,
            "packets": _LONG,
            "geo": {
                "properties": {
                    "country_iso_code": _KEYWORD,
                    "country_name": _KEYWORD,
                    "city_name": _KEYWORD,
                    "region_name": _KEYWORD,
                    "continent_name": _KEYWORD,
                    "name": _KEYWORD,
                    "location": {"type": "geo_point"},
                }
            },
            "as": {"properties": {"number": _RAW_LONG, "organization": {"properties": {"name": _KEYWORD}}}},
        }
    }


def _interface() -> dict[str, Any]:
    """ifIndex, name, and alias (ECS: the interface description, from options data)."""
    return {"properties": {"interface": {"properties": {"id": _RAW_LONG, "name": _KEYWORD, "alias": _KEYWORD}}}}


def mappings() -> dict[str, Any]:
    """The explicit mapping of design.md section 4 plus dynamic templates for raw fields."""
    dynamic_templates: list[dict[str, Any]] = []
    for protocol in ("netflow", "sflow"):
        dynamic_templates += [
            {
                f"{protocol}_mac": {
                    "path_match": f"{protocol}.*mac*",
                    "match_mapping_type": "string",  # sFlow's dot3 *_internal_mac_*_errors are counts
                    "mapping": _KEYWORD,
                }
            },
            {
                f"{protocol}_addresses": {
                    "path_match": f"{protocol}.*_address",
                    "match_mapping_type": "string",  # distinctCountOf...Address (IE 378-383) are counts
                    "mapping": _RAW_IP,
                }
            },
        ]
    dynamic_templates += [
        {"sflow_ips": {"path_match": "sflow.*_ip", "mapping": _RAW_IP}},
        {"sflow_next_hops": {"path_match": "sflow.*next_hop", "mapping": _RAW_IP}},
    ]
    for protocol in ("netflow", "sflow"):
        dynamic_templates += [
            {
                f"{protocol}_strings": {
                    "path_match": f"{protocol}.*",
                    "match_mapping_type": "string",
                    "mapping": _KEYWORD,
                }
            },
            {
                f"{protocol}_numbers": {
                    "path_match": f"{protocol}.*",
                    "match_mapping_type": "long",
                    "mapping": _RAW_LONG,
                }
            },
            {
                f"{protocol}_floats": {
                    "path_match": f"{protocol}.*",
                    "match_mapping_type": "double",
                    "mapping": _RAW_DOUBLE,
                }
            },
        ]
    properties: dict[str, Any] = {
        "@timestamp": _DATE,
        "event": {
            "properties": {
                "start": _DATE,
                "end": _DATE,
                "duration": _LONG,
                "kind": _KEYWORD,
                "category": _KEYWORD,
                "type": _KEYWORD,
                "action": _KEYWORD,
                "reason": _KEYWORD,
            }
        },
        "observer": {
            "properties": {
                "ip": _IP,
                "hostname": _KEYWORD,
                "name": _KEYWORD,
                "ingress": _interface(),
                "egress": _interface(),
            }
        },
        "source": _endpoint(),
        "destination": _endpoint(),
        "network": {
            "properties": {
                "transport": _KEYWORD,
                "iana_number": _KEYWORD,
                "type": _KEYWORD,
                "bytes": _LONG,
                "packets": _LONG,
                "direction": _KEYWORD,
                "community_id": _KEYWORD,
                "vlan": {"properties": {"id": _KEYWORD}},
                "inner": {"properties": {"vlan": {"properties": {"id": _KEYWORD}}}},
                "application": _KEYWORD,
            }
        },
        "related": {"properties": {"ip": _RAW_IP, "hosts": _KEYWORD}},
        "flow": {"properties": {"id": _KEYWORD, "locality": _KEYWORD}},
        "netflow": {
            "properties": {
                "type": _KEYWORD,
                "exporter": {
                    "properties": {
                        "address": _KEYWORD,
                        "version": _LONG,
                        "uptime_millis": _LONG,
                        "source_id": _LONG,
                        "timestamp": _DATE,
                    }
                },
            }
        },
        "flowd": {
            "properties": {
                "sampling_rate": _LONG,
                "raw_bytes": _LONG,
                "raw_packets": _LONG,
                "source_address_class": _KEYWORD,
                "destination_address_class": _KEYWORD,
                "source_mac_vendor": _KEYWORD,
                "destination_mac_vendor": _KEYWORD,
            }
        },
    }
    return {"date_detection": False, "dynamic_templates": dynamic_templates, "properties": properties}


def count_fields(properties: dict[str, Any]) -> int:
    """Fields as `index.mapping.total_fields.limit` counts them: every leaf and every object."""
    return sum(1 + count_fields(spec.get("properties", {})) for spec in properties.values())


def total_fields_limit() -> int:
    """Room for the explicit mapping, every element name the registry knows, and the headroom."""
    return count_fields(mappings()["properties"]) + len(element_names()) + RAW_FIELDS_HEADROOM


def index_template(
    settings: ElasticsearchSettings,
    *,
    data_stream: bool,
    ilm_policy: str | None,
    logsdb: bool,
    ignore_dynamic_beyond_limit: bool = False,
) -> dict[str, Any]:
    total_fields: dict[str, Any] = {"limit": total_fields_limit()}
    if ignore_dynamic_beyond_limit:
        total_fields["ignore_dynamic_beyond_limit"] = True
    index_settings: dict[str, Any] = {"codec": "best_compression", "mapping": {"total_fields": total_fields}}
    if ilm_policy:
        index_settings["lifecycle"] = {"name": ilm_policy}
    if logsdb:
        index_settings["mode"] = "logsdb"
    body: dict[str, Any] = {
        "index_patterns": [f"{settings.data_stream}-*"],
        "priority": 200,
        "template": {"settings": {"index": index_settings}, "mappings": mappings()},
    }
    if data_stream:
        body["data_stream"] = {}
    fingerprint = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    body["_meta"] = {"managed_by": "flowd", "version": TEMPLATE_VERSION, "fingerprint": fingerprint}
    return body


def ilm_policy(settings: ElasticsearchSettings) -> dict[str, Any]:
    return {
        "policy": {
            "_meta": {"managed_by": "flowd"},
            "phases": {
                "hot": {
                    "actions": {
                        "rollover": {
                            "max_primary_shard_size": settings.rollover_max_size,
                            "max_age": settings.rollover_max_age,
                        }
                    }
                },
                "delete": {"min_age": f"{settings.retention_days}d", "actions": {"delete": {}}},
            },
        }
    }


def ism_policy(settings: ElasticsearchSettings) -> dict[str, Any]:
    return {
        "policy": {
            "description": "flowd flows: roll over when big or old, delete after the retention",
            "default_state": "hot",
            "states": [
                {
                    "name": "hot",
                    "actions": [
                        {
                            "rollover": {
                                "min_primary_shard_size": settings.rollover_max_size,
                                "min_index_age": settings.rollover_max_age,
                            }
                        }
                    ],
                    "transitions": [
                        {"state_name": "delete", "conditions": {"min_index_age": f"{settings.retention_days}d"}}
                    ],
                },
                {"name": "delete", "actions": [{"delete": {}}], "transitions": []},
            ],
            "ism_template": [{"index_patterns": [f".ds-{settings.data_stream}-*"], "priority": 200}],
        }
    }


@dataclass(slots=True, frozen=True)
class ClusterInfo:
    product: str
    """`elasticsearch` or `opensearch`."""
    version: tuple[int, int]
    version_text: str

    @property
    def supports_logsdb(self) -> bool:
        return self.product == "elasticsearch" and self.version >= LOGSDB_MIN_VERSION

    @property
    def supports_ignore_dynamic_beyond_limit(self) -> bool:
        return self.product == "elasticsearch" and self.version >= IGNORE_DYNAMIC_BEYOND_LIMIT_MIN_VERSION


def parse_cluster_info(body: Any) -> ClusterInfo:
    version = body.get("version", {}) if isinstance(body, dict) else {}
    number = str(version.get("number", "0.0"))
    product = "opensearch" if version.get("distribution") == "opensearch" else "elasticsearch"
    numbers = [int(part) if part.isdigit() else 0 for part in number.split("-")[0].split(".")[:2]]
    major, minor = [*numbers, 0, 0][:2]
    return ClusterInfo(product, (major, minor), number)


class SetupError(Exception):
    pass


async def _call(transport: AsyncTransport, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, answer = await request_json(transport, method, path, body)
    if status >= 500:
        raise SetupError(f"{method} {path}: HTTP {status} {error_reason(answer)}")
    return status, answer


def _missing_api(status: int, answer: Any) -> bool:
    """osmem and clusters without the plugin answer an unknown endpoint with 400/404 'no handler'."""
    return status in (400, 404, 405) and "no handler found" in str(answer)


async def _install_lifecycle(
    transport: AsyncTransport, info: ClusterInfo, settings: ElasticsearchSettings, printer: Callable[[str], None]
) -> str | None:
    """Returns the ILM policy name to put in the template (None for ISM or none at all)."""
    name = settings.data_stream
    if info.product == "elasticsearch":
        status, answer = await _call(transport, "GET", f"/_ilm/policy/{name}")
        if _missing_api(status, answer):
            printer(f"ILM policy {name}: not supported by this server, skipped")
            return None
        wanted = ilm_policy(settings)
        if status == 200 and answer.get(name, {}).get("policy", {}).get("phases") == wanted["policy"]["phases"]:
            printer(f"ILM policy {name}: found, up to date")
            return name
        status_put, answer_put = await _call(transport, "PUT", f"/_ilm/policy/{name}", wanted)
        if status_put >= 300:
            raise SetupError(f"ILM policy {name}: HTTP {status_put} {error_reason(answer_put)}")
        printer(f"ILM policy {name}: {'updated' if status == 200 else 'created'}")
        return name
    path = f"/_plugins/_ism/policies/{name}"
    status, answer = await _call(transport, "GET", path)
    if _missing_api(status, answer):
        printer(f"ISM policy {name}: not supported by this server (no ISM plugin), skipped")
        return None
    if status == 200:
        printer(f"ISM policy {name}: found (left as it is)")
        return None
    status_put, answer_put = await _call(transport, "PUT", path, ism_policy(settings))
    if status_put >= 300:
        raise SetupError(f"ISM policy {name}: HTTP {status_put} {error_reason(answer_put)}")
    printer(f"ISM policy {name}: created")
    return None


async def _install_template(
    transport: AsyncTransport,
    name: str,
    body: dict[str, Any],
    printer: Callable[[str], None],
    also_accept: dict[str, Any] | None = None,
) -> None:
    status, answer = await _call(transport, "GET", f"/_index_template/{name}")
    found = None
    if status == 200:
        for item in answer.get("index_templates", []):
            if item.get("name") == name:
                found = item.get("index_template", {})
    accepted = {body["_meta"]["fingerprint"]}
    if also_accept is not None:
        accepted.add(also_accept["_meta"]["fingerprint"])
    if found is not None and found.get("_meta", {}).get("fingerprint") in accepted:
        printer(f"index template {name}: found, up to date")
        return
    status_put, answer_put = await _call(transport, "PUT", f"/_index_template/{name}", body)
    if status_put >= 300:
        raise SetupError(f"index template {name}: HTTP {status_put} {error_reason(answer_put)}")
    printer(f"index template {name}: {'updated' if found is not None else 'created'}")


async def _install_target(
    transport: AsyncTransport,
    settings: ElasticsearchSettings,
    template_body: Callable[[bool], dict[str, Any]],
    printer: Callable[[str], None],
) -> None:
    """The template, then the data stream; a plain index where the server has no data streams."""
    template = settings.data_stream
    stream = f"{settings.data_stream}-{settings.namespace}"
    status, answer = await _call(transport, "GET", f"/_data_stream/{stream}")
    if status == 200 and answer.get("data_streams"):
        await _install_template(transport, template, template_body(True), printer)
        printer(f"data stream {stream}: found")
        return
    status_index, _ = await _call(transport, "HEAD", f"/{stream}")
    if status_index == 200:
        # Set up before on a server without data streams (or by hand): either template variant will do.
        await _install_template(transport, template, template_body(False), printer, also_accept=template_body(True))
        printer(f"index {stream}: found (a plain index, not a data stream)")
        return
    await _install_template(transport, template, template_body(True), printer)
    status, answer = await _call(transport, "PUT", f"/_data_stream/{stream}")
    if status < 300:
        printer(f"data stream {stream}: created")
        return
    if "not supported" not in str(answer) and not _missing_api(status, answer):
        raise SetupError(f"data stream {stream}: HTTP {status} {error_reason(answer)}")
    printer(f"data stream {stream}: data streams are not supported by this server; using a plain index")
    await _install_template(transport, template, template_body(False), printer)
    status, answer = await _call(transport, "PUT", f"/{stream}")
    if status >= 300 and "already_exists" not in str(answer):
        raise SetupError(f"index {stream}: HTTP {status} {error_reason(answer)}")
    printer(f"index {stream}: created")


async def setup_cluster(settings: ElasticsearchSettings, printer: Callable[[str], None] = print) -> int:
    """Install policy, template and data stream; 0 when everything is in place, 1 otherwise."""
    try:
        transport = build_transport(settings)
    except ValueError as error:
        printer(f"setup: {error}")
        return 1
    try:
        status, answer = await _call(transport, "GET", "/")
        if status != 200:
            raise SetupError(f"GET /: HTTP {status} {error_reason(answer)}")
        info = parse_cluster_info(answer)
        printer(f"connected: {info.product} {info.version_text}")
        policy = await _install_lifecycle(transport, info, settings, printer)
        logsdb = info.supports_logsdb
        printer(f"LogsDB index mode: {'on' if logsdb else 'not available on this server'}")
        beyond_limit = info.supports_ignore_dynamic_beyond_limit
        printer(
            f"field limit {total_fields_limit()}: "
            + (
                "fields past it are left unmapped"
                if beyond_limit
                else "a document bringing a field past it is rejected (this server cannot leave it unmapped)"
            )
        )

        def template_body(data_stream: bool) -> dict[str, Any]:
            return index_template(
                settings,
                data_stream=data_stream,
                ilm_policy=policy,
                logsdb=logsdb,
                ignore_dynamic_beyond_limit=beyond_limit,
            )

        await _install_target(transport, settings, template_body, printer)
        return 0
    except (SetupError, TransportError) as error:
        printer(f"setup failed: {error}")
        return 1
    finally:
        await transport.close()


def settings_from_args(args: argparse.Namespace, base: ElasticsearchSettings | None = None) -> ElasticsearchSettings:
    """`--es URL [--user --password --api-key --ca-file --insecure --namespace]` over the configured settings."""
    settings = base if base is not None else ElasticsearchSettings()
    changes: dict[str, Any] = {}
    es = getattr(args, "es", None)
    if es:
        changes["hosts"] = [host.strip() for host in str(es).split(",") if host.strip()]
    for argument, name in (
        ("user", "user"),
        ("password", "password"),
        ("api_key", "api_key"),
        ("ca_file", "ca_file"),
        ("namespace", "namespace"),
    ):
        value = getattr(args, argument, None)
        if value:
            changes[name] = value
    if getattr(args, "insecure", False):
        changes["verify"] = False
    return replace(settings, **changes)


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """The `flowd setup` options, for cli.py."""
    parser.add_argument("--es", required=True, help="Elasticsearch/OpenSearch URL(s), comma-separated")
    parser.add_argument("--user", help="basic auth user")
    parser.add_argument("--password", help="basic auth password")
    parser.add_argument("--api-key", dest="api_key", help="API key (id:key or the encoded form)")
    parser.add_argument("--ca-file", dest="ca_file", help="CA certificate file for TLS")
    parser.add_argument("--insecure", action="store_true", help="do not verify the server's TLS certificate")
    parser.add_argument("--namespace", help="data stream namespace (default from the configuration)")


def run_setup(args: argparse.Namespace, base: ElasticsearchSettings | None = None) -> int:
    """Entry point for `flowd setup`: 2 when an option gives a host or namespace the cluster cannot use."""
    settings = settings_from_args(args, base)
    try:
        check_elasticsearch(settings)
    except ConfigError as error:
        print(f"flowd: {error}", file=sys.stderr)
        return 2
    return asyncio.run(setup_cluster(settings, print))
