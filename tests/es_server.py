"""A cluster for the Elasticsearch tests, and a proxy that can fail on demand.

`es_url` (session): `FLOWD_TEST_ES_URL` when set (a real Elasticsearch or OpenSearch; user,
password from FLOWD_TEST_ES_USER / FLOWD_TEST_ES_PASSWORD), otherwise an osmem-server started on
127.0.0.1 with a free port (`osmem-server --addr 127.0.0.1:0`, which prints its URL as JSON on
stdout; the `osmem_server` package locates the bundled binary). Skips only if osmem cannot start.

`FaultProxy` sits between flowd and the cluster (aiohttp, in the test's event loop): `up`
forwards, `down` stops listening and aborts open connections (connection refused),
`throttle` answers every request 429. It is test infrastructure; flowd is not mocked.
"""

from __future__ import annotations

import contextlib
import os
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, ClientTimeout, web

from tests.ports import free_port

REAL_CLUSTER_URL = os.environ.get("FLOWD_TEST_ES_URL", "")
OUTAGE_S = float(os.environ.get("FLOWD_TEST_OUTAGE_S", "5"))
"""How long the outage tests keep the cluster away (the issue's 30 s, shortened for CI)."""


@pytest.fixture(scope="session")
def es_url() -> Iterator[str]:
    if REAL_CLUSTER_URL:
        yield REAL_CLUSTER_URL.rstrip("/")
        return
    try:
        from osmem_server import OsmemServer
    except ImportError:
        pytest.skip("osmem-server is not installed (pip install osmem-server) and FLOWD_TEST_ES_URL is not set")
    try:
        server = OsmemServer.start(japanese=False, addr="127.0.0.1:0", startup_timeout=20)
    except Exception as error:
        pytest.skip(f"osmem-server could not start: {error}")
    try:
        yield server.url
    finally:
        server.close()


def es_auth() -> tuple[str, str]:
    return os.environ.get("FLOWD_TEST_ES_USER", ""), os.environ.get("FLOWD_TEST_ES_PASSWORD", "")


def is_osmem(url: str) -> bool:
    return "osmem" in str(es_request(url, "GET", "/"))


def es_request(url: str, method: str, path: str, body: Any = None) -> Any:
    """A plain blocking JSON request for the test's own checks (an oracle independent of flowd)."""
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url + path, data=data, method=method, headers={"content-type": "application/json"})
    user, password = es_auth()
    if user:
        import base64

        request.add_header("authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
    except urllib.error.HTTPError as error:
        text = error.read()
    return orjson.loads(text) if text else {}


def delete_target(url: str, name: str) -> None:
    with contextlib.suppress(Exception):
        es_request(url, "DELETE", f"/_data_stream/{name}")
    with contextlib.suppress(Exception):
        es_request(url, "DELETE", f"/{name}")


class FaultProxy:
    """HTTP proxy to `upstream` that can be taken down, or made to answer 429."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.mode = "up"
        self.statuses: Counter[int] = Counter()
        self.refused_requests = 0
        self.gzip_requests = 0
        self.authorization: set[str] = set()
        self.item_throttle_responses = 0
        """While above zero: forward `_bulk`, then report the created items of its first half as 429."""
        self.items_reported_429 = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=60), auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def down(self) -> None:
        """Connection refused from now on; requests on connections already open are aborted."""
        self.mode = "down"
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def up(self) -> None:
        self.mode = "up"
        if self._site is None:
            await self._listen()

    def throttle(self) -> None:
        self.mode = "throttle"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if "authorization" in request.headers:
            self.authorization.add(request.headers["authorization"])
        if self.mode == "down":
            self.refused_requests += 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)  # never reaches the client: the connection is gone
        if self.mode == "throttle":
            self.statuses[429] += 1
            body = {
                "error": {"type": "es_rejected_execution_exception", "reason": "rejected by the test"},
                "status": 429,
            }
            return web.json_response(body, status=429)
        if request.headers.get("content-encoding") == "gzip":
            self.gzip_requests += 1
        body = await request.read()  # aiohttp has already undone a gzip content-encoding
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept", "authorization")}
        assert self._session is not None
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body or None, headers=headers
        ) as upstream:
            payload = await upstream.read()
            self.statuses[upstream.status] += 1
            if self.item_throttle_responses > 0 and "/_bulk" in request.path and upstream.status == 200:
                self.item_throttle_responses -= 1
                payload = self._throttle_items(payload)
            content_type = upstream.headers.get("content-type", "application/json")
            return web.Response(body=payload, status=upstream.status, headers={"content-type": content_type})

    def _throttle_items(self, payload: bytes) -> bytes:
        """The cluster did index these items; flowd must retry them and count the 409s as done."""
        answer = orjson.loads(payload)
        items = answer.get("items", [])
        for item in items[: (len(items) + 1) // 2]:
            action = next(iter(item))
            if item[action].get("status") == 201:
                item[action] = {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "test"}}
                self.items_reported_429 += 1
        answer["errors"] = True
        return orjson.dumps(answer)
