"""`flowd setup --kibana URL`: import the dashboards' saved objects through Kibana's import API.

One request: `POST <url>[/s/<space>]/api/saved_objects/_import?overwrite=true`, multipart with the
NDJSON file in the `file` field and the `kbn-xsrf` header Kibana requires of every write. Kibana
answers 200 with `{success, successCount, successResults: [...], errors: [...]}` even when some
objects failed (missing references, unsupported types), so each object's result is reported and
any error makes the import fail. Authentication is the Elasticsearch sink's: an API key wins over
user and password; TLS verifies against `ca_file` when given, or not at all when `verify` is off.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from flowd.config import ElasticsearchSettings
from flowd.output.es_transport import auth_headers

DEFAULT_NDJSON = Path(__file__).resolve().parents[2] / "dashboards" / "kibana" / "flowd.ndjson"
"""The saved objects in a source checkout (the repository's dashboards/ folder)."""
IMPORT_TIMEOUT_S = 120.0
"""Importing some fifty objects takes Kibana a few seconds; migrations on a busy Kibana take longer."""


def import_url(url: str, space: str | None) -> str:
    """The import endpoint under `url`, in `space` (the default space when empty or "default")."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"kibana URL {url!r} is not http(s)://host[:port][/base-path]")
    base = url.strip().rstrip("/")
    if space and space != "default":
        base += f"/s/{quote(space, safe='')}"
    return f"{base}/api/saved_objects/_import?overwrite=true"


def _ssl_context(ca_file: str | None, verify: bool) -> ssl.SSLContext | bool:
    if not verify:
        return False
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return True


def _describe(item: dict[str, Any]) -> str:
    title = (item.get("meta") or {}).get("title") or item.get("title") or ""
    label = f"{item.get('type', '?')} {item.get('id', '?')}"
    return f"{label} ({title})" if title else label


def _error_text(error: dict[str, Any]) -> str:
    kind = str(error.get("type", "unknown"))
    if kind == "missing_references":
        missing = ", ".join(f"{ref.get('type')} {ref.get('id')}" for ref in error.get("references", []))
        return f"missing references: {missing}"
    message = error.get("message") or error.get("reason")
    return f"{kind}: {message}" if message else kind


def report_import(answer: Any, printer: Callable[[str], None]) -> int:
    """Print one line per object from Kibana's import response; 0 when every object imported."""
    if not isinstance(answer, dict):
        printer(f"kibana: unexpected import response: {answer!r}")
        return 1
    results = answer.get("successResults") or []
    errors = answer.get("errors") or []
    for item in results:
        state = "overwritten" if item.get("overwrite") else "imported"
        destination = item.get("destinationId")
        suffix = f" as {destination}" if destination and destination != item.get("id") else ""
        printer(f"  {_describe(item)}: {state}{suffix}")
    for item in errors:
        printer(f"  {_describe(item)}: FAILED, {_error_text(item.get('error') or {})}")
    imported = int(answer.get("successCount", len(results)))
    printer(f"kibana: {imported} saved objects imported, {len(errors)} failed")
    return 0 if answer.get("success") and not errors else 1


async def import_dashboards(
    url: str,
    ndjson_path: str | Path = DEFAULT_NDJSON,
    *,
    space: str | None = None,
    user: str = "",
    password: str = "",
    api_key: str = "",
    ca_file: str | None = None,
    verify: bool = True,
    printer: Callable[[str], None] = print,
) -> int:
    """Import the saved objects in `ndjson_path` into Kibana at `url`; 0 on success, 1 otherwise."""
    try:
        endpoint = import_url(url, space)
        payload = Path(ndjson_path).read_bytes()
        ssl_option = _ssl_context(ca_file, verify)
    except (ValueError, OSError) as error:
        printer(f"kibana: {error}")
        return 1
    headers = {"kbn-xsrf": "flowd", "accept": "application/json"}
    headers.update(auth_headers(ElasticsearchSettings(user=user, password=password, api_key=api_key)))
    form = aiohttp.FormData()
    form.add_field("file", payload, filename=Path(ndjson_path).name, content_type="application/ndjson")
    printer(f"kibana: importing {Path(ndjson_path).name} into {endpoint.split('/api/')[0]}")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=IMPORT_TIMEOUT_S)) as session,
            session.post(endpoint, data=form, headers=headers, ssl=ssl_option) as response,
        ):
            text = await response.text()
            try:
                answer: Any = await response.json(content_type=None)
            except ValueError:
                answer = None
            if response.status != 200:
                reason = answer.get("message") if isinstance(answer, dict) else text[:300]
                printer(f"kibana: import failed: HTTP {response.status} {reason}")
                return 1
    except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as error:
        printer(f"kibana: cannot reach {url}: {error or type(error).__name__}")
        return 1
    return report_import(answer, printer)
