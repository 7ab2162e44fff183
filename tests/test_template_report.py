"""`flowd templates`: the persisted template snapshots as an operator reads them.

The templates are built here with struct from IANA element ids whose registry names the test
spells out, decoded into a cache as a worker would, and written where each worker writes its
snapshot; the report must name every field, the options template's sampling state, and every
worker's file."""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from flowd.cli import main
from flowd.decode import TemplateCache, decode_datagram
from flowd.server.app import template_path, write_snapshot_atomically
from flowd.server.parked_store import parked_directory, write_parked
from tests.test_ipfix_features import ipfix_message, ipfix_set, options_template, template

FIELDS = ((8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 8), (2, 8))
NAMES = [
    "source_ipv4_address",
    "destination_ipv4_address",
    "source_transport_port",
    "destination_transport_port",
    "protocol_identifier",
    "octet_delta_count",
    "packet_delta_count",
]
EXPORTER = ("192.0.2.1", 4739)
OTHER_WORKER_EXPORTER = ("2001:db8::9", 4739)


def snapshots(tmp_path: Path) -> Path:
    """Worker 0 holds a data template and a sampler's options (1 in 1000); worker 1 another exporter."""
    base = tmp_path / "templates.json"
    first = TemplateCache()
    options = ipfix_set(3, options_template(401, 1, (302, 8), (305, 4), (306, 4)))
    sampler = ipfix_set(401, struct.pack("!QII", 3, 1, 999))
    received = time.time() - 30
    decode_datagram(ipfix_message(ipfix_set(2, template(256, *FIELDS)), options, sampler), EXPORTER, first, received)
    write_snapshot_atomically(template_path(base, 0), first.snapshot())
    second = TemplateCache()
    decode_datagram(ipfix_message(ipfix_set(2, template(300, *FIELDS[:2]))), OTHER_WORKER_EXPORTER, second, received)
    write_snapshot_atomically(template_path(base, 1), second.snapshot())
    return base


def run(tmp_path: Path, base: Path, *arguments: str, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> str:
    monkeypatch.setenv("FLOWD_TEMPLATES_PATH", str(base))
    assert main(["templates", *arguments]) == 0
    return str(capsys.readouterr().out)


def test_report_names_fields_sampling_and_every_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    base = snapshots(tmp_path)
    text = run(tmp_path, base, monkeypatch=monkeypatch, capsys=capsys)
    assert "192.0.2.1:4739 IPFIX domain 1: sampling 1 in 1000" in text
    refreshed = re.search(r"template 256 \(data, 7 fields, refreshed (\d+) s ago\)", text)
    assert refreshed is not None and 30 <= int(refreshed.group(1)) <= 90
    assert ": " + ", ".join(NAMES) in text
    assert "template 401 (options, 3 fields" in text
    assert "[2001:db8::9]:4739 IPFIX domain 1" in text
    assert "template 300 (data, 2 fields" in text and ": " + ", ".join(NAMES[:2]) in text
    assert str(template_path(base, 1)) in text


def test_json_report_and_unreadable_or_missing_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    base = snapshots(tmp_path)
    lines = run(tmp_path, base, "--json", monkeypatch=monkeypatch, capsys=capsys).splitlines()
    first = json.loads(lines[0])
    by_id = {item["id"]: item for item in first["templates"]}
    assert by_id[256]["names"] == NAMES
    assert first["domains"][0]["samplers"] == [[3, 1000]]

    template_path(base, 2).write_text("{not json")
    template_path(base, 3).write_text('{"format": 1, "templates": [{"exporter": ["192.0.2.5", 1], "id": 256}]}')
    text = run(tmp_path, base, monkeypatch=monkeypatch, capsys=capsys)
    assert f"{template_path(base, 2)}: unreadable" in text
    assert f"{template_path(base, 3)}: unreadable: malformed snapshot (KeyError" in text
    assert "template 256 (data, 7 fields" in text  # the good snapshots are still reported

    empty = tmp_path / "none" / "templates.json"
    assert "no template snapshot at" in run(tmp_path, empty, monkeypatch=monkeypatch, capsys=capsys)


def test_an_exporter_that_announces_no_rate_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    base = tmp_path / "templates.json"
    cache = TemplateCache()
    data = socket.inet_aton("10.0.0.1") + socket.inet_aton("10.0.0.2") + struct.pack("!HHBQQ", 1, 2, 6, 3, 4)
    decode_datagram(ipfix_message(ipfix_set(2, template(256, *FIELDS)), ipfix_set(256, data)), EXPORTER, cache, 0.0)
    write_snapshot_atomically(base, cache.snapshot())
    text = run(tmp_path, base, "--no-names", monkeypatch=monkeypatch, capsys=capsys)
    assert "192.0.2.1:4739 IPFIX domain 1: no sampling announced" in text
    assert "template 256 (data, 7 fields" in text and "source_ipv4_address" not in text


def test_data_sets_kept_at_a_shutdown_are_listed_until_their_template_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    base = snapshots(tmp_path)
    stopped = TemplateCache()
    received = time.time() - 600
    for offset in (0, 300):
        decode_datagram(ipfix_message(ipfix_set(257, b"\0" * 8)), EXPORTER, stopped, received + offset)
    decode_datagram(ipfix_message(ipfix_set(300, b"\0" * 8), domain=5), OTHER_WORKER_EXPORTER, stopped, received)
    assert write_parked(parked_directory(base), 0, stopped.take_parked()) == (3, None)
    text = run(tmp_path, base, monkeypatch=monkeypatch, capsys=capsys)
    waiting = text[text.index("templates.parked: 3 data sets kept at a shutdown wait for their templates") :]
    assert "192.0.2.1:4739 IPFIX domain 1 template 257: 2 sets, the oldest received 10 min ago" in waiting
    assert "[2001:db8::9]:4739 IPFIX domain 5 template 300: 1 set, the oldest received 10 min ago" in waiting
    empty = tmp_path / "none" / "templates.json"
    write_parked(parked_directory(empty), 0, {})
    assert "wait for their templates" not in run(tmp_path, empty, monkeypatch=monkeypatch, capsys=capsys)
