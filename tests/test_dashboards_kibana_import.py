"""`flowd setup --kibana`: flowd.output.kibana.import_dashboards against a stand-in for Kibana.

No Kibana can run here, so `FakeKibana` is a small aiohttp server (in the test's event loop) that
implements the contract of Kibana 8.x's `POST /api/saved_objects/_import` as documented: the
`kbn-xsrf` header is required (400 without it), `overwrite` is a query parameter, the body is
multipart/form-data with the NDJSON in a `file` part whose name ends in `.ndjson`, spaces are
addressed as `/s/<space>/api/...`, credentials are checked (401 otherwise), and the answer has
Kibana's shape: `{success, successCount, successResults: [{type, id, meta: {title, icon}, overwrite?}],
errors: [{type, id, title, meta, error: {type: "missing_references", references: [...]}}]}`.
It is a fake of Kibana, not of flowd: the code under test is the real import function.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from flowd.output.kibana import DEFAULT_NDJSON, import_dashboards, import_url

ROOT = Path(__file__).resolve().parent.parent
NDJSON = ROOT / "dashboards" / "kibana" / "flowd.ndjson"
SUPPORTED_TYPES = {"index-pattern", "lens", "map", "search", "dashboard", "visualization"}


class FakeKibana:
    def __init__(self, *, user: str = "elastic", password: str = "changeme", api_key: str = "") -> None:
        self.user, self.password, self.api_key = user, password, api_key
        self.existing: dict[str, set[tuple[str, str]]] = {}
        """space -> (type, id) of the objects imported so far."""
        self.requests: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/saved_objects/_import", self.handle)
        app.router.add_post("/s/{space}/api/saved_objects/_import", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def authorised(self, header: str) -> bool:
        if self.api_key:
            return header == f"ApiKey {base64.b64encode(self.api_key.encode()).decode()}"
        expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return header == f"Basic {expected}"

    async def handle(self, request: web.Request) -> web.Response:
        space = request.match_info.get("space", "default")
        record: dict[str, Any] = {"space": space, "query": dict(request.query), "headers": dict(request.headers)}
        self.requests.append(record)
        if not self.authorised(request.headers.get("authorization", "")):
            return web.json_response(
                {"statusCode": 401, "error": "Unauthorized", "message": "[security_exception] missing authentication"},
                status=401,
            )
        if "kbn-xsrf" not in request.headers:
            return web.json_response(
                {"statusCode": 400, "error": "Bad Request", "message": "Request must contain a kbn-xsrf header."},
                status=400,
            )
        if not request.content_type.startswith("multipart/form-data"):
            return web.json_response({"statusCode": 415, "error": "Unsupported Media Type"}, status=415)
        reader = await request.multipart()
        part = await reader.next()
        if part is None or getattr(part, "name", None) != "file" or not str(part.filename).endswith(".ndjson"):
            return web.json_response(
                {"statusCode": 400, "error": "Bad Request", "message": "Invalid file extension .txt"}, status=400
            )
        text = (await part.read()).decode()  # type: ignore[union-attr]
        record["filename"] = part.filename
        objects = [json.loads(line) for line in text.splitlines() if line.strip()]
        record["objects"] = len(objects)
        overwrite = request.query.get("overwrite") == "true"
        existing = self.existing.setdefault(space, set())
        present = {(item["type"], item["id"]) for item in objects} | existing
        results, errors = [], []
        for item in objects:
            key = (item["type"], item["id"])
            meta = {"title": item["attributes"].get("title", ""), "icon": "app"}
            missing = [ref for ref in item.get("references", []) if (ref["type"], ref["id"]) not in present]
            if item["type"] not in SUPPORTED_TYPES:
                errors.append({**_ident(item), "meta": meta, "error": {"type": "unsupported_type"}})
            elif missing:
                error = {
                    "type": "missing_references",
                    "references": [{"type": r["type"], "id": r["id"]} for r in missing],
                }
                errors.append({**_ident(item), "meta": meta, "error": error})
            elif key in existing and not overwrite:
                errors.append({**_ident(item), "meta": meta, "error": {"type": "conflict"}})
            else:
                result: dict[str, Any] = {"type": item["type"], "id": item["id"], "meta": meta}
                if key in existing:
                    result["overwrite"] = True
                results.append(result)
        existing.update((r["type"], r["id"]) for r in results)
        answer: dict[str, Any] = {"success": not errors, "successCount": len(results)}
        if results:
            answer["successResults"] = results
        if errors:
            answer["errors"] = errors
        return web.json_response(answer)


def _ident(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": item["type"], "id": item["id"], "title": item["attributes"].get("title", "")}


@pytest.fixture
async def kibana() -> AsyncIterator[FakeKibana]:
    server = FakeKibana()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def object_count() -> int:
    return sum(1 for line in NDJSON.read_text().splitlines() if line.strip())


async def test_import_reports_every_object_and_overwrites_on_the_second_run(kibana: FakeKibana) -> None:
    lines: list[str] = []
    status = await import_dashboards(kibana.url, NDJSON, user="elastic", password="changeme", printer=lines.append)
    assert status == 0, lines
    count = object_count()
    assert kibana.requests[-1]["objects"] == count and kibana.requests[-1]["filename"] == "flowd.ndjson"
    assert kibana.requests[-1]["query"] == {"overwrite": "true"}
    assert kibana.requests[-1]["space"] == "default"
    assert sum(line.endswith(": imported") for line in lines) == count
    assert any("dashboard flowd-dashboard-overview ([flowd] Overview): imported" in line for line in lines)
    assert lines[-1] == f"kibana: {count} saved objects imported, 0 failed"

    lines.clear()
    status = await import_dashboards(kibana.url, NDJSON, user="elastic", password="changeme", printer=lines.append)
    assert status == 0 and sum(line.endswith(": overwritten") for line in lines) == count, lines


async def test_space_and_api_key(tmp_path: Path) -> None:
    server = FakeKibana(api_key="key-id:key-secret")
    await server.start()
    try:
        lines: list[str] = []
        status = await import_dashboards(
            server.url + "/", NDJSON, space="network ops", api_key="key-id:key-secret", printer=lines.append
        )
        assert status == 0, lines
        assert server.requests[-1]["space"] == "network ops"
        assert server.requests[-1]["headers"]["kbn-xsrf"]
        lines.clear()
        status = await import_dashboards(server.url, NDJSON, api_key="wrong:key", printer=lines.append)
        assert status == 1 and "HTTP 401" in lines[-1] and "missing authentication" in lines[-1]
    finally:
        await server.close()


async def test_per_object_errors_fail_the_import(kibana: FakeKibana, tmp_path: Path) -> None:
    """A file without the data view: Kibana imports what it can and lists what is missing."""
    partial = tmp_path / "partial.ndjson"
    kept = [line for line in NDJSON.read_text().splitlines() if json.loads(line)["type"] != "index-pattern"]
    partial.write_text("".join(line + "\n" for line in kept))
    lines: list[str] = []
    status = await import_dashboards(kibana.url, partial, user="elastic", password="changeme", printer=lines.append)
    assert status == 1
    failed = [line for line in lines if "FAILED, missing references: index-pattern flowd-flows" in line]
    assert failed and lines[-1].endswith(f"{len(failed)} failed")


async def test_unreachable_and_bad_input(tmp_path: Path) -> None:
    lines: list[str] = []
    assert await import_dashboards("http://127.0.0.1:1", NDJSON, printer=lines.append) == 1
    assert "cannot reach" in lines[-1]
    assert await import_dashboards("ftp://kibana", NDJSON, printer=lines.append) == 1
    assert "is not http(s)" in lines[-1]
    assert await import_dashboards("http://127.0.0.1:1", tmp_path / "none.ndjson", printer=lines.append) == 1
    assert "none.ndjson" in lines[-1]


async def test_tls_options_reach_the_connection(tmp_path: Path) -> None:
    """verify=False needs no CA; a CA file that is not a certificate is refused before connecting."""
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate")
    lines: list[str] = []
    assert await import_dashboards("https://127.0.0.1:1", NDJSON, ca_file=str(bad_ca), printer=lines.append) == 1
    assert lines[-1].startswith("kibana:")
    with pytest.raises(ssl.SSLError):
        ssl.create_default_context(cafile=str(bad_ca))
    assert await import_dashboards("https://127.0.0.1:1", NDJSON, verify=False, printer=lines.append) == 1
    assert "cannot reach" in lines[-1]


def test_import_url_and_default_file() -> None:
    assert import_url("https://kb:5601/", None) == "https://kb:5601/api/saved_objects/_import?overwrite=true"
    assert (
        import_url("https://kb:5601/base", "default") == "https://kb:5601/base/api/saved_objects/_import?overwrite=true"
    )
    assert import_url("http://kb", "ops") == "http://kb/s/ops/api/saved_objects/_import?overwrite=true"
    assert DEFAULT_NDJSON == NDJSON and DEFAULT_NDJSON.exists()
