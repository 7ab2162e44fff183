"""SIGHUP in the supervisor: running workers are told at once, workers still starting once they are ready.

A worker ignores SIGHUP until its event loop installs the handler, so a reload that came while it
was starting used to be lost: it ran with the tables it was spawned with until the next SIGHUP.
Stand-ins take the workers' place and the supervisor's signals are recorded; its loop is not run.
"""

from __future__ import annotations

import multiprocessing
import signal
from pathlib import Path
from typing import Any

from flowd.config import load_settings
from flowd.server import workers
from flowd.server.workers import Supervisor


class StandIn:
    """What the supervisor reads of a worker process: alive, with a pid (never signalled: the
    test records the supervisor's `os.kill` calls instead)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def is_alive(self) -> bool:
        return True


def record_hangups(monkeypatch: Any) -> list[int]:
    signalled: list[int] = []

    def kill(pid: int, signum: int) -> None:
        assert signum == signal.SIGHUP
        signalled.append(pid)

    monkeypatch.setattr(workers.os, "kill", kill)
    return signalled


def test_a_worker_still_starting_gets_the_reload_when_it_is_ready(tmp_path: Path, monkeypatch: Any) -> None:
    config = tmp_path / "flowd.toml"
    config.write_text("[listen]\nworkers = 2\n")
    supervisor = Supervisor(load_settings(config).settings, config_path=str(config))
    signalled = record_hangups(monkeypatch)
    stand_ins = [StandIn(1001), StandIn(1002)]
    running, starting = supervisor.slots
    pipes = []
    for slot, stand_in in zip(supervisor.slots, stand_ins, strict=True):
        slot.process = stand_in  # type: ignore[assignment]
        receive, send = multiprocessing.Pipe(duplex=False)
        slot.connection = receive
        pipes.append(send)
    running.ready = True

    config.write_text('[listen]\nworkers = 2\n[enrich]\nnetwork_names = { "10.0.0.0/8" = "campus" }\n')
    supervisor._reload()
    assert signalled == [stand_ins[0].pid]
    assert supervisor.settings.enrich.network_names == {"10.0.0.0/8": "campus"}

    pipes[1].send(("ready", 1, {"listeners": []}))
    supervisor._receive(starting)
    assert starting.ready and signalled == [stand_ins[0].pid, stand_ins[1].pid]
    pipes[1].send(("ready", 1, {"listeners": []}))  # once only
    supervisor._receive(starting)
    assert len(signalled) == 2


def test_a_worker_started_after_the_reload_is_not_told_again(tmp_path: Path, monkeypatch: Any) -> None:
    config = tmp_path / "flowd.toml"
    config.write_text("[listen]\nworkers = 1\n")
    supervisor = Supervisor(load_settings(config).settings, config_path=str(config))
    signalled = record_hangups(monkeypatch)
    (slot,) = supervisor.slots
    supervisor._reload()  # no process yet: nothing is pending
    assert not slot.reload_pending and signalled == []


def test_a_worker_that_dies_has_the_datagrams_it_held_counted(tmp_path: Path) -> None:
    """Found by an accounting audit and a soak: a killed worker's ingress queue, and the documents
    it had decoded or held in its Elasticsearch sink's memory (64 MiB in an outage), went with it,
    counted nowhere. What it reported last (about a second before) is now counted."""
    from flowd.server.metrics import WorkerStats

    config = tmp_path / "flowd.toml"
    config.write_text("[listen]\nworkers = 1\n")
    supervisor = Supervisor(load_settings(config).settings, config_path=str(config))
    (slot,) = supervisor.slots

    class Killed(StandIn):
        exitcode = -signal.SIGKILL

        def is_alive(self) -> bool:
            return False

        def join(self, timeout: float | None = None) -> None:
            return None

    stats = WorkerStats()
    stats.set("flowd_queue_depth", ("ingress",), 37)
    stats.set("flowd_documents_waiting", (), 600)
    stats.set("flowd_es_buffered_docs", (), 5_000)
    stats.inc("flowd_datagrams_received", ("netflow/udp/0.0.0.0:2055",), 900)
    supervisor.aggregator.update(0, stats.snapshot())
    slot.process, slot.ready, slot.started_at = Killed(1001), True, 0.0  # type: ignore[assignment]
    supervisor._reap(slot)
    assert supervisor.aggregator.counter_total("flowd_worker_lost_datagrams") == 37
    assert supervisor.aggregator.counter_total("flowd_worker_lost_documents") == 5_600
    assert supervisor.aggregator.counter_total("flowd_datagrams_received") == 900  # its counters stay
    assert supervisor.aggregator.counter_total("flowd_worker_restarts") == 1


def test_a_file_the_supervisor_refuses_counts_as_a_failed_reload(tmp_path: Path, monkeypatch: Any) -> None:
    """Found by a documentation audit: the supervisor checks the file before it signals the
    workers, so a file that did not load never reached a worker's `failed` count, and
    FlowdConfigReloadFailed (which alerts on `flowd_config_reloads_total{result="failed"}`) could
    not fire for a reload that was refused."""
    config = tmp_path / "flowd.toml"
    config.write_text("[listen]\nworkers = 1\n")
    supervisor = Supervisor(load_settings(config).settings, config_path=str(config))
    signalled = record_hangups(monkeypatch)
    (slot,) = supervisor.slots
    slot.process, slot.ready = StandIn(1001), True  # type: ignore[assignment]

    config.write_text("[listen]\nworkers = 1\n[enrich]\nnetwork_names = { 'not a network' = 'x' }\n")
    supervisor._reload()
    assert signalled == []  # the workers keep their tables
    assert supervisor.aggregator.counter_total("flowd_config_reloads", ("failed",)) == 1
