"""`flowd_parked_records` summed over workers counts each waiting data set once. Found by a
conservation audit: every worker holds a copy of the sets a previous run persisted (whichever
gets the exporter claims them), and each reported its copies, so with two workers `flowd status`
said twice as many sets were waiting as there were; after one worker claimed and decoded them,
the others reported their copies as still waiting until the next expiry pass, a minute later."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

from flowd.config import load_settings
from flowd.decode import decode_datagram
from flowd.decode.sequence import SequenceTracker
from flowd.server.app import Worker
from flowd.server.ingress import IngressQueue
from tests.test_data_set_batch import v9_datagram, v9_records, v9_set, v9_template

EXPORTER = ("192.0.2.30", 2055)


def worker(tmp_path: Path, index: int) -> Worker:
    settings = load_settings(None).settings
    settings.templates.path = str(tmp_path / "state" / "templates.json")
    return Worker(settings, index, None)


def gauge(workers: list[Worker]) -> float:
    """The gauge as the supervisor serves it: each worker's last report, summed."""
    stand_in = SimpleNamespace(
        documents=asyncio.Queue(2),
        enricher=None,
        decoder=SimpleNamespace(sequences=SequenceTracker()),
        documents_waiting=lambda: 0,
    )
    total = 0.0
    for each in workers:
        each._update_stats(IngressQueue(64, 1024), stand_in)  # type: ignore[arg-type]
        total += each.stats.gauges["flowd_parked_records"][()]
    return total


def test_restored_sets_are_counted_once_over_the_workers_and_not_after_one_decoded_them(tmp_path: Path) -> None:
    now = time.time()
    previous = worker(tmp_path, 0)
    for n in range(3):  # data before its template: parked, then kept at shutdown
        data = v9_datagram(v9_set(256, v9_records(2, n)), count=2, sequence=n)
        assert decode_datagram(data, EXPORTER, previous.templates, now).flows == []
    previous.persist_parked()
    assert previous.templates.stats.parked_persisted == 3

    workers = [worker(tmp_path, 0), worker(tmp_path, 1)]
    for each in workers:
        each.restore_parked()  # both hold a copy: the kernel may hand the exporter to either
    assert gauge(workers) == 3

    template = v9_datagram(v9_set(0, v9_template(256)), count=1, sequence=3)
    assert len(decode_datagram(template, EXPORTER, workers[1].templates, now + 1).flows) == 6  # worker 1 claims them
    assert gauge(workers) == 0
    assert gauge([workers[1]]) == 0 and gauge([workers[0]]) == 0
