"""The HTTP side of flowd's Elasticsearch / OpenSearch output: transport, auth, requests.

Why not the `elasticsearch` client: it rewrites every Accept/Content-Type into
`application/vnd.elasticsearch+json; compatible-with=N`, which OpenSearch and osmem-server answer
with 406 (design.md section 10). `elastic_transport.AsyncTransport` (the layer that client is
built on: node pool, TLS, auth, aiohttp) sends what it is given, so this works against
Elasticsearch 8.x/9.x, OpenSearch 2.x/3.x and osmem alike. The bulk sink, the index-template
setup and the Kibana import share it; retries are flowd's (`bulk.RetryPolicy`), so the
transport's are off.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
from typing import Any

from elastic_transport import AsyncTransport, NdjsonSerializer, NodeConfig
from elastic_transport import OrjsonSerializer as _OrjsonSerializer

from flowd.config import ElasticsearchSettings
from flowd.config_values import parse_es_host
from flowd.output.sink import Body

_log = logging.getLogger("flowd.output.elasticsearch")  # the sink's lines keep their name after the split

DEFAULT_REQUEST_TIMEOUT_S = 30.0
GZIP_LEVEL = 1
"""Level 1 keeps most of the saving on flow documents at a fraction of level 9's CPU."""
BULK_FILTER_PATH = "filter_path=errors,items.*.status,items.*.error"
"""Successful items need only their status; this keeps responses small."""
_NDJSON_HEADERS = {"content-type": "application/x-ndjson", "accept": "application/json"}
_GZIP_HEADERS = {**_NDJSON_HEADERS, "content-encoding": "gzip"}


def auth_headers(settings: ElasticsearchSettings) -> dict[str, str]:
    """An API key wins over user/password. `id:key` is encoded; an encoded key is sent as given."""
    if settings.api_key:
        key = settings.api_key
        if ":" in key:
            key = base64.b64encode(key.encode()).decode()
        return {"authorization": f"ApiKey {key}"}
    if settings.user:
        token = base64.b64encode(f"{settings.user}:{settings.password}".encode()).decode()
        return {"authorization": f"Basic {token}"}
    return {}


def build_transport(
    settings: ElasticsearchSettings, *, request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
) -> AsyncTransport:
    """An AsyncTransport over every configured host; retries are flowd's, so the transport's are off."""
    if not settings.hosts:
        raise ValueError("no elasticsearch hosts configured")
    headers = auth_headers(settings)
    nodes = []
    for host in settings.hosts:
        scheme, hostname, port, prefix = parse_es_host(host, tls=settings.tls)
        tls_options: dict[str, Any] = {}
        if scheme == "https":
            tls_options["verify_certs"] = settings.verify
            tls_options["ssl_show_warn"] = False
            if settings.ca_file and settings.verify:
                tls_options["ca_certs"] = settings.ca_file
        nodes.append(
            NodeConfig(
                scheme,
                hostname,
                port,
                path_prefix=prefix,
                headers=headers,
                connections_per_node=max(2, settings.max_in_flight + 2),
                request_timeout=request_timeout_s,
                **tls_options,
            )
        )
    if not settings.verify and any(n.scheme == "https" for n in nodes):
        _log.warning("TLS certificate verification of the elasticsearch hosts is off")
    return AsyncTransport(
        nodes,
        node_class="aiohttp",
        serializers={"application/json": _OrjsonSerializer(), "application/x-ndjson": _BulkBodySerializer()},
        max_retries=0,
        retry_on_status=(),
        meta_header=False,
    )


class _BulkBodySerializer(NdjsonSerializer):
    """Sends a `_bulk` body as it is. The default NDJSON serializer copies bytes into a new
    buffer line by line; ours are whole NDJSON (every line ends in a newline), often a view of
    a table's array, and the HTTP client takes a view as it takes bytes."""

    def dumps(self, data: Any) -> bytes:
        if isinstance(data, bytes | memoryview):
            return data  # type: ignore[return-value]  # aiohttp sends any bytes-like body
        return super().dumps(data)


async def request_json(
    transport: AsyncTransport, method: str, path: str, body: Any = None, *, timeout_s: float | None = None
) -> tuple[int, Any]:
    """One request with plain JSON mimetypes; (status, decoded body). Transport errors propagate."""
    headers = {"accept": "application/json"}
    if body is not None:
        headers["content-type"] = "application/json"
    kwargs: dict[str, Any] = {}
    if timeout_s is not None:
        kwargs["request_timeout"] = timeout_s
    response = await transport.perform_request(method, path, body=body, headers=headers, **kwargs)
    return response.meta.status, response.body


def error_reason(body: Any) -> str:
    """The `reason` of an error response, or the body itself, shortened for a log line."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return f"{error.get('type', '')}: {error.get('reason', '')}"[:300]
        return str(error)[:300]
    return str(body)[:300]


async def bulk_request(body: Body, *, compress: bool) -> tuple[Body, dict[str, str]]:
    """A `_bulk` body as sent and its headers; gzip runs in a thread, off the event loop."""
    if not compress:
        return body, _NDJSON_HEADERS
    return await asyncio.to_thread(gzip.compress, body, GZIP_LEVEL), _GZIP_HEADERS
