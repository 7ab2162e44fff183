"""Data sets still waiting for their templates when a worker stops, kept on disk for the next start.

Beside `templates.path`, in `<stem>.parked/`: one file per exporter and worker, written atomically
at shutdown. At start every worker loads every file, because the kernel may now hand the exporter
to any of them; the worker that decodes a restored set, or counts it lost, first claims its file
by unlinking it. Only one unlink of a file succeeds, so a set is never decoded twice, and a file
nobody claimed stays for the start after. Where files cannot be unlinked (a read-only or foreign
directory), nothing can be claimed, so nothing is loaded: the files stay as they are.
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
from flowd.durable import write_atomically

log = logging.getLogger("flowd.worker")

PARKED_FORMAT = 2
SUFFIX = ".json"


def parked_directory(templates_path: str | Path) -> Path:
    path = Path(templates_path)
    return path.with_name(f"{path.stem}.parked")


def write_parked(
    directory: Path, worker: int, parked: dict[TemplateKey, list[ParkedSet]]
) -> tuple[int, OSError | None]:
    """Write each exporter's sets to its own file; returns the number of sets written and, when
    some could not be, the first error (the files written before it stay valid)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return 0, error
    by_exporter: dict[tuple[str, int], list[tuple[TemplateKey, list[ParkedSet]]]] = {}
    for key, sets in parked.items():
        by_exporter.setdefault(key[0], []).append((key, sets))
    stamp = f"{time.time_ns():x}-{os.getpid()}-{worker}"
    written = 0
    for index, (exporter, entries) in enumerate(by_exporter.items()):
        content: dict[str, Any] = {
            "format": PARKED_FORMAT,
            "exporter": list(exporter),
            "sets": [
                {
                    "version": version,
                    "domain": domain,
                    "template": template,
                    "body": base64.b64encode(s.body).decode("ascii"),
                    "received_at": s.received_at,
                    "export_time": s.export_time,
                    "sequence": s.sequence,
                    "uptime_ms": s.uptime_ms,
                }
                for (_, version, domain, template), sets in entries
                for s in sets
            ],
        }
        try:
            write_atomically(directory / f"{stamp}-{index}{SUFFIX}", orjson.dumps(content))
        except OSError as error:
            return written, error
        written += len(content["sets"])
    return written, None


def claimable(directory: Path) -> bool:
    """Whether this process may unlink files there (else no claim could be decided)."""
    return os.access(directory, os.W_OK | os.X_OK)


def read_parked(directory: Path) -> Iterator[tuple[str, list[tuple[TemplateKey, list[ParkedSet]]]]]:
    """Every file, oldest first, with its sets by template key, each set naming the file as its
    claim. Unreadable files are logged and left alone (a file claimed by another worker
    meanwhile is simply gone); so is a directory that cannot be listed."""
    try:
        paths = sorted(p for p in directory.iterdir() if p.suffix == SUFFIX and not p.name.startswith("."))
    except FileNotFoundError:
        return
    except OSError as error:
        log.error("cannot read parked data sets in %s: %s", directory, error)
        return
    for path in paths:
        claim = str(path)
        try:
            content = orjson.loads(path.read_bytes())
            if content.get("format") != PARKED_FORMAT:
                raise ValueError(f"not a format {PARKED_FORMAT} file of parked data sets")
            exporter = (str(content["exporter"][0]), int(content["exporter"][1]))
            entries: dict[TemplateKey, list[ParkedSet]] = {}
            for item in content["sets"]:
                key = (exporter, int(item["version"]), int(item["domain"]), int(item["template"]))
                entries.setdefault(key, []).append(
                    ParkedSet(
                        base64.b64decode(item["body"], validate=True),
                        float(item["received_at"]),
                        int(item["export_time"]),
                        int(item["sequence"]),
                        None if item["uptime_ms"] is None else int(item["uptime_ms"]),
                        claim=claim,
                    )
                )
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
            log.warning("ignoring parked data sets in %s: %s", path, error)
            continue
        yield claim, list(entries.items())


def remove_stale_temporaries(directory: Path, older_than_s: float = 3_600.0) -> None:
    """Half-written files a killed worker left (never read: their names start with a dot)."""
    try:
        for path in directory.glob(".*.tmp"):
            if time.time() - path.stat().st_mtime > older_than_s:
                path.unlink(missing_ok=True)
    except OSError:
        pass


def claim_file(claim: str) -> bool:
    """True for the one caller whose unlink removes the file. Any other failure decides nothing:
    the set stays a copy, and the file stays for a start that can claim it."""
    try:
        os.unlink(claim)
    except FileNotFoundError:
        return False
    except OSError as error:
        log.warning("cannot claim parked data sets in %s: %s", claim, error)
        return False
    return True


def claim_taken(claim: str) -> bool:
    """True once another worker has claimed the file: it is gone."""
    return not os.path.exists(claim)
