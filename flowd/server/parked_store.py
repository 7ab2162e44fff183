"""Data sets still waiting for their templates when a worker stops, kept on disk for the next start.

Beside `templates.path`, in `<stem>.parked/`: one file per template key and worker, written
atomically at shutdown. At start every worker loads every file, because the kernel may now hand
the exporter to any of them; the worker that decodes a restored set, or counts it lost, first
claims its file by unlinking it. Only one unlink of a file succeeds, so a set is never decoded
twice, and a file nobody claimed stays for the start after.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from flowd.decode.templates import ParkedSet, TemplateKey

log = logging.getLogger("flowd.worker")

PARKED_FORMAT = 1
SUFFIX = ".json"


def parked_directory(templates_path: str | Path) -> Path:
    path = Path(templates_path)
    return path.with_name(f"{path.stem}.parked")


def write_parked(
    directory: Path, worker: int, parked: dict[TemplateKey, list[ParkedSet]]
) -> tuple[int, OSError | None]:
    """Write each key's sets to its own file; returns the number of sets written and, when some
    could not be, the first error (the files written before it stay valid)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return 0, error
    stamp = f"{time.time_ns():x}-{os.getpid()}-{worker}"
    written = 0
    for index, (key, sets) in enumerate(parked.items()):
        exporter, version, domain, template = key
        content: dict[str, Any] = {
            "format": PARKED_FORMAT,
            "exporter": list(exporter),
            "version": version,
            "domain": domain,
            "template": template,
            "sets": [
                {
                    "body": base64.b64encode(s.body).decode("ascii"),
                    "received_at": s.received_at,
                    "export_time": s.export_time,
                    "sequence": s.sequence,
                    "uptime_ms": s.uptime_ms,
                }
                for s in sets
            ],
        }
        path = directory / f"{stamp}-{index}{SUFFIX}"
        temporary = directory / f".{path.name}.tmp"
        try:
            with temporary.open("wb") as handle:
                handle.write(orjson.dumps(content))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            return written, error
        written += len(sets)
    return written, None


def read_parked(directory: Path) -> Iterator[tuple[TemplateKey, list[ParkedSet]]]:
    """Every file's sets, each set naming its file as the claim; unreadable files are logged and
    left alone (a file claimed by another worker meanwhile is simply gone)."""
    try:
        paths = sorted(p for p in directory.iterdir() if p.suffix == SUFFIX and not p.name.startswith("."))
    except FileNotFoundError:
        return
    for path in paths:
        try:
            content = orjson.loads(path.read_bytes())
            if content.get("format") != PARKED_FORMAT:
                raise ValueError(f"not a format {PARKED_FORMAT} file of parked data sets")
            key = (
                (str(content["exporter"][0]), int(content["exporter"][1])),
                int(content["version"]),
                int(content["domain"]),
                int(content["template"]),
            )
            sets = [
                ParkedSet(
                    base64.b64decode(item["body"], validate=True),
                    float(item["received_at"]),
                    int(item["export_time"]),
                    int(item["sequence"]),
                    None if item["uptime_ms"] is None else int(item["uptime_ms"]),
                    claim=str(path),
                )
                for item in content["sets"]
            ]
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
            log.warning("ignoring parked data sets in %s: %s", path, error)
            continue
        yield key, sets


def claim_file(claim: str) -> bool:
    """True for the one caller whose unlink removes the file. Another error than its being gone
    (a read-only directory) counts as claimed: decoding a set twice beats losing it."""
    try:
        os.unlink(claim)
    except FileNotFoundError:
        return False
    except OSError as error:
        log.warning("cannot claim parked data sets in %s, decoding them anyway: %s", claim, error)
    return True


def claim_taken(claim: str) -> bool:
    """True once another worker has claimed the file: it is gone."""
    return not os.path.exists(claim)
