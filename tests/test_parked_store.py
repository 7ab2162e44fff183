"""Data sets waiting for their templates at shutdown, through real files to the next start's workers."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from flowd.decode import TemplateCache, decode_datagram
from flowd.server.parked_store import claim_file, claim_taken, parked_directory, read_parked, write_parked
from tests.test_ipfix_features import V4_TEMPLATE, ipfix_message, ipfix_set, v4_record

EXPORTER = ("192.0.2.9", 4739)
OTHER = ("2001:db8::9", 4739)
RECORDS = [v4_record(f"10.0.0.{n}", "192.0.2.200", 1000 + n, 443, 6, 1500 * n, n) for n in range(1, 7)]
TEMPLATE = ipfix_message(ipfix_set(2, V4_TEMPLATE))


def data(*records: bytes, sequence: int = 0) -> bytes:
    return ipfix_message(ipfix_set(256, b"".join(records)), sequence=sequence)


def worker_cache() -> TemplateCache:
    return TemplateCache(claim=claim_file, claim_taken=claim_taken)


def start_workers(directory: Path, count: int) -> list[TemplateCache]:
    caches = []
    for _ in range(count):
        cache = worker_cache()
        for claim, entries in read_parked(directory):
            cache.restore_parked(claim, entries)
        caches.append(cache)
    return caches


def flows(result_flows: list) -> list[tuple[object, ...]]:  # type: ignore[type-arg]
    return [(f.fields, f.export_time, f.sequence, f.received_at) for f in result_flows]


def test_parked_sets_decode_after_a_restart_exactly_once_as_they_would_have(tmp_path: Path) -> None:
    """The oracle: the same datagrams decoded in one run with the template first."""
    directory = parked_directory(tmp_path / "state" / "templates.json")
    assert directory == tmp_path / "state" / "templates.parked"
    datagrams = [data(RECORDS[0], RECORDS[1], sequence=0), data(RECORDS[2], sequence=2)]
    expected_cache = TemplateCache()
    decode_datagram(TEMPLATE, EXPORTER, expected_cache, 0.0)
    expected = [
        f for i, d in enumerate(datagrams) for f in decode_datagram(d, EXPORTER, expected_cache, 10.0 + i).flows
    ]

    before = TemplateCache()
    for i, datagram in enumerate(datagrams):
        assert decode_datagram(datagram, EXPORTER, before, 10.0 + i).parked == 1
    decode_datagram(data(RECORDS[3]), OTHER, before, 12.0)
    assert write_parked(directory, 0, before.take_parked()) == (3, None)
    assert len(list(directory.iterdir())) == 2  # one file per exporter

    workers = start_workers(directory, 3)
    assert [w.parked_sets for w in workers] == [3, 3, 3]
    released = decode_datagram(TEMPLATE, EXPORTER, workers[1], 100.0)
    assert flows(released.flows) == flows(expected)
    assert workers[1].stats.parked_restored == 2
    # the kernel hands the exporter to another worker later: its copies are gone already
    assert decode_datagram(TEMPLATE, EXPORTER, workers[2], 101.0).flows == []
    assert workers[2].stats.parked_restored == workers[2].stats.unparked == 0
    # the third worker never sees the exporter: at its expiry pass it lets the copies go uncounted
    assert workers[0].expire(120.0) == 0
    assert workers[0].parked_sets == 1 and workers[0].stats.parked_expired == 0
    (left,) = directory.iterdir()  # OTHER's file, whose template has not come yet
    ((claim, ((key, sets),)),) = read_parked(directory)
    assert claim == str(left) and key == (OTHER, 10, 1, 256) and [s.claim for s in sets] == [claim]


def test_a_file_nobody_claimed_is_kept_for_the_start_after(tmp_path: Path) -> None:
    directory = tmp_path / "templates.parked"
    first = TemplateCache()
    decode_datagram(data(RECORDS[0]), EXPORTER, first, 5.0)
    write_parked(directory, 0, first.take_parked())
    (worker,) = start_workers(directory, 1)
    assert worker.take_parked() == {}  # unclaimed: not this run's to write again
    (again,) = start_workers(directory, 1)
    (flow,) = decode_datagram(TEMPLATE, EXPORTER, again, 50.0).flows
    assert flow.fields["source_ipv4_address"] == "10.0.0.1" and flow.received_at == 5.0
    assert list(directory.iterdir()) == []


def test_restored_sets_past_their_ttl_are_counted_once(tmp_path: Path) -> None:
    directory = tmp_path / "templates.parked"
    first = TemplateCache()
    decode_datagram(data(RECORDS[0]), EXPORTER, first, 0.0)
    decode_datagram(data(RECORDS[1]), EXPORTER, first, 1.0)
    write_parked(directory, 0, first.take_parked())
    workers = start_workers(directory, 2)
    assert [w.expire(2_000.0) for w in workers] == [2, 0]
    assert [w.stats.parked_expired for w in workers] == [2, 0]
    assert [w.parked_sets for w in workers] == [0, 0]


def test_unreadable_files_are_skipped_and_left(tmp_path: Path) -> None:
    directory = tmp_path / "templates.parked"
    directory.mkdir()
    (directory / "broken.json").write_bytes(b"{not json")
    (directory / "other-format.json").write_bytes(b'{"format": 99}')
    (directory / ".half-written.json.tmp").write_bytes(b"{")
    good = TemplateCache()
    decode_datagram(data(RECORDS[0]), EXPORTER, good, 0.0)
    write_parked(directory, 1, good.take_parked())
    assert [[(key, len(sets)) for key, sets in entries] for _, entries in read_parked(directory)] == [
        [((EXPORTER, 10, 1, 256), 1)]
    ]
    assert len(list(directory.iterdir())) == 4
    assert list(read_parked(tmp_path / "absent")) == []


def test_a_write_that_fails_reports_what_was_written(tmp_path: Path) -> None:
    cache = TemplateCache()
    decode_datagram(data(RECORDS[0]), EXPORTER, cache, 0.0)
    decode_datagram(data(RECORDS[1]), OTHER, cache, 0.0)
    blocked = tmp_path / "file-in-the-way"
    blocked.write_text("")
    written, error = write_parked(blocked, 0, cache.take_parked())
    assert written == 0 and isinstance(error, OSError)
    if os.geteuid() != 0:  # root writes into a read-only directory anyway
        directory = tmp_path / "read-only"
        directory.mkdir()
        directory.chmod(0o500)
        try:
            decode_datagram(data(RECORDS[0]), EXPORTER, cache, 0.0)
            assert write_parked(directory, 0, cache.take_parked())[0] == 0
        finally:
            directory.chmod(0o700)


def test_claiming_is_won_once() -> None:
    assert claim_taken("/nonexistent/flowd-claim")
    assert not claim_file("/nonexistent/flowd-claim")


def test_a_template_known_at_start_releases_the_sets_with_the_exporters_first_traffic(tmp_path: Path) -> None:
    """A worker's snapshot had the template while another worker parked the exporter's data (the
    kernel moved the exporter): at the next start the worker that gets the exporter's traffic
    takes the sets, ahead of that traffic."""
    from flowd.server.batch_decoder import BatchDecoder
    from flowd.server.metrics import WorkerStats

    directory = tmp_path / "templates.parked"
    now = time.time()  # the decoder releases them at the time it runs
    knows = TemplateCache()
    decode_datagram(TEMPLATE, EXPORTER, knows, now - 60)
    parks = TemplateCache()
    decode_datagram(data(RECORDS[0], RECORDS[1]), EXPORTER, parks, now - 30)
    write_parked(directory, 1, parks.take_parked())
    decoders = []
    for _ in range(2):  # as a worker starts: the template snapshots first, then the parked sets
        cache = worker_cache()
        cache.restore(knows.snapshot())
        for claim, entries in read_parked(directory):
            cache.restore_parked(claim, entries)
        decoders.append(BatchDecoder(cache, WorkerStats()))

    def sources(decoder: BatchDecoder, exporter: tuple[str, int]) -> list[str]:
        parts = decoder.decode_parts([(data(RECORDS[2]), exporter, now)])
        return [d["source.ip"] for part in parts for d in (part.to_dicts() if hasattr(part, "to_dicts") else part)]

    assert sources(decoders[0], ("192.0.2.77", 4739)) == []  # another exporter: nothing of these
    assert sorted(sources(decoders[1], EXPORTER)) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert sources(decoders[0], EXPORTER) == ["10.0.0.3"]  # the exporter moved later: its copies are gone
    assert list(directory.iterdir()) == []


def test_one_file_per_exporter_holds_all_its_templates(tmp_path: Path) -> None:
    directory = tmp_path / "templates.parked"
    cache = TemplateCache()
    decode_datagram(data(RECORDS[0]), EXPORTER, cache, 0.0)
    decode_datagram(ipfix_message(ipfix_set(300, RECORDS[1])), EXPORTER, cache, 0.0)
    assert write_parked(directory, 0, cache.take_parked()) == (2, None)
    ((_, entries),) = read_parked(directory)
    assert [key for key, _ in entries] == [(EXPORTER, 10, 1, 256), (EXPORTER, 10, 1, 300)]


def worker(tmp_path: Path) -> Any:
    from flowd.config import Settings
    from flowd.server.app import Worker

    settings = Settings()
    settings.templates.path = str(tmp_path / "templates.json")
    return Worker(settings, 0, None)


def test_files_that_cannot_be_claimed_are_not_loaded(tmp_path: Path, monkeypatch: Any, caplog: Any) -> None:
    from flowd.server import app

    cache = TemplateCache()
    decode_datagram(data(RECORDS[0]), EXPORTER, cache, 0.0)
    write_parked(tmp_path / "templates.parked", 0, cache.take_parked())
    monkeypatch.setattr(app, "claimable", lambda directory: False)
    stuck = worker(tmp_path)
    stuck.restore_parked()
    assert stuck.templates.parked_sets == 0 and "stay there" in caplog.text
    monkeypatch.undo()
    able = worker(tmp_path)
    able.restore_parked()
    assert able.templates.parked_sets == 1


def test_sets_of_tcp_sessions_are_not_kept(tmp_path: Path) -> None:
    """RFC 7011 section 8: a session's templates end with it, and the exporter reconnects from
    another port, so its parked sets could never be decoded: they are counted lost at shutdown."""
    stopping = worker(tmp_path)
    decode_datagram(data(RECORDS[0]), EXPORTER, stopping.templates, 0.0)
    decode_datagram(data(RECORDS[1]), ("192.0.2.50", 50123), stopping.templates, 0.0)

    class Session:
        def session_peers(self) -> set[tuple[str, int]]:
            return {("192.0.2.50", 50123)}

    stopping.tcp_servers = [Session()]
    stopping.persist_parked()
    assert (stopping.templates.stats.parked_persisted, stopping.templates.stats.parked_at_shutdown) == (1, 1)
    ((_, ((key, _),)),) = read_parked(tmp_path / "templates.parked")
    assert key[0] == EXPORTER


def test_claims_that_fail_decide_nothing(tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root may unlink anywhere
        return
    directory = tmp_path / "ro"
    directory.mkdir()
    target = directory / "a.json"
    target.write_text("{}")
    directory.chmod(0o500)
    try:
        assert not claim_file(str(target)) and target.exists()
    finally:
        directory.chmod(0o700)
