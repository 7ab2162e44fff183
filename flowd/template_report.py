"""`flowd templates`: what the collector knows of each exporter, from the snapshots its workers persist.

Each worker writes its templates and per-domain state (sampling rates, samplers, system init
time) to `templates.path` (worker 0) or `<stem>-N<suffix>` beside it, every
`templates.persist_interval_s` and at shutdown. Reading them answers the usual question when an
exporter's flows do not show up: did flowd ever get its template, which fields does it carry,
when was it last refreshed, and at what rate does the exporter say it samples. The report is as
old as the snapshot it reads (printed with it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from flowd.decode.template_snapshot import SNAPSHOT_FORMAT, snapshot_template

VERSIONS = {9: "v9", 10: "IPFIX"}


def snapshot_files(base: str | Path) -> list[Path]:
    """Every worker's snapshot beside `templates.path` (worker 0's first), present or not."""
    path = Path(base)
    return [path, *sorted(path.parent.glob(f"{path.stem}-*{path.suffix}"))]


@dataclass(slots=True)
class Snapshot:
    """One worker's snapshot file; each template carries `names`, its fields as flowd decodes them."""

    path: Path
    written_at: float
    templates: list[dict[str, Any]] = field(default_factory=list)
    domains: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


def read_snapshots(base: str | Path) -> list[Snapshot]:
    """The snapshots that exist; one that cannot be read is listed with its error."""
    found = []
    for path in snapshot_files(base):
        try:
            written_at = path.stat().st_mtime
            content = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            continue
        except (OSError, orjson.JSONDecodeError) as error:
            found.append(Snapshot(path, 0.0, error=str(error)))
            continue
        if not isinstance(content, dict) or content.get("format") != SNAPSHOT_FORMAT:
            found.append(Snapshot(path, written_at, error=f"not a format {SNAPSHOT_FORMAT} template snapshot"))
            continue
        snapshot = Snapshot(path, written_at, list(content.get("templates", [])), list(content.get("domains", [])))
        try:  # written by flowd, but a file edited or cut short by hand must not stop the report
            for item in snapshot.templates:
                item["names"] = field_names(item)  # compiled once, for the report and --json alike
            describe([snapshot], path, written_at)  # reads every other item the report reads
        except (KeyError, TypeError, ValueError, IndexError) as error:
            snapshot = Snapshot(path, written_at, error=f"malformed snapshot ({type(error).__name__}: {error})")
        found.append(snapshot)
    return found


def field_names(item: dict[str, Any]) -> list[str]:
    """The names flowd decodes a snapshot template's fields as (`netflow.<name>` in documents)."""
    return list(snapshot_template(item).names)


def _exporter(item: dict[str, Any]) -> str:
    host, port = item["exporter"]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _age(seconds: float) -> str:
    """`42 s`, `17 min`, `5 h` or `12 d` ago."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _domain_line(item: dict[str, Any]) -> str:
    rate = item["sampling_rate"]
    parts = [f"sampling 1 in {rate}" if rate else "no sampling announced for the domain"]
    if item.get("samplers"):
        parts.append("samplers " + ", ".join(f"{sampler}: 1 in {rate}" for sampler, rate in item["samplers"]))
    if item.get("interface_rates"):
        parts.append("interfaces " + ", ".join(f"{ifindex}: 1 in {rate}" for ifindex, rate in item["interface_rates"]))
    if item.get("system_init_ms") is not None:
        parts.append(f"system init {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(item['system_init_ms'] / 1000))}")
    return "; ".join(parts)


def describe_waiting(base: str | Path, now: float) -> list[str]:
    """Data sets a shutdown kept for their templates (`<stem>.parked/`), per exporter and
    template: an exporter listed here has not sent that template since."""
    from flowd.server.parked_store import parked_directory, read_parked

    directory = parked_directory(base)
    waiting: dict[tuple[str, int, int, int], list[float]] = {}
    for _, entries in read_parked(directory):
        for (address, version, domain, template_id), parked in entries:
            key = (_exporter({"exporter": list(address)}), version, domain, template_id)
            waiting.setdefault(key, []).extend(s.received_at for s in parked)
    if not waiting:
        return []
    total = sum(len(times) for times in waiting.values())
    lines = [f"{directory}: {total} data sets kept at a shutdown wait for their templates"]
    for (exporter, version, domain, template_id), times in sorted(waiting.items()):
        sets = f"{len(times)} set" + ("" if len(times) == 1 else "s")
        lines.append(
            f"  {exporter} {VERSIONS.get(version, version)} domain {domain} template {template_id}: "
            f"{sets}, the oldest received {_age(max(0.0, now - min(times)))} ago"
        )
    return lines


def describe(snapshots: list[Snapshot], base: str | Path, now: float, *, names: bool = True) -> str:
    """A text report: per snapshot, each exporter's domains and templates; then the data sets that
    wait for a template since a shutdown."""
    waiting = describe_waiting(base, now)
    if not snapshots:
        missing = f"no template snapshot at {Path(base)} (flowd writes one every templates.persist_interval_s)"
        return "\n".join([missing, *waiting])
    lines: list[str] = []
    for snapshot in snapshots:
        if snapshot.error:
            lines.append(f"{snapshot.path}: unreadable: {snapshot.error}")
            continue
        age = max(0.0, now - snapshot.written_at)
        lines.append(f"{snapshot.path} (written {_age(age)} ago): {len(snapshot.templates)} templates")
        by_domain: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
        for item in snapshot.templates:
            by_domain.setdefault((_exporter(item), item["version"], item["domain"]), []).append(item)
        states = {(_exporter(item), item["version"], item["domain"]): item for item in snapshot.domains}
        for key in sorted(by_domain.keys() | states.keys()):
            exporter, version, domain = key
            state = states.get(key)
            header = f"  {exporter} {VERSIONS.get(version, version)} domain {domain}"
            lines.append(header + ": " + (_domain_line(state) if state is not None else "no sampling announced"))
            for item in sorted(by_domain.get(key, []), key=lambda t: int(t["id"])):
                kind = "options" if item.get("options", int(item["scope_count"]) > 0) else "data"
                seen = max(0.0, now - float(item["seen_at"]))
                text = f"    template {item['id']} ({kind}, {len(item['fields'])} fields, refreshed {_age(seen)} ago)"
                if names:
                    text += ": " + ", ".join(item["names"])
                lines.append(text)
    return "\n".join(lines + waiting)
