"""The supervisor's last log line, "stopped: k=v ...": what is left of a run's losses once its
/metrics has gone with the process. Found by a conservation audit: the line named drops before
decoding and data sets lost at shutdown, but not what the output lost or refused (documents the
cluster and the spool could not take at shutdown, dead letters, sink rejections), nor data sets
dropped over the caps or expired waiting for their templates; a run that lost documents at
shutdown ended on a line with nothing lost in it."""

from __future__ import annotations

import io
import logging
import re

import pytest

from flowd.config import load_settings
from flowd.server.metrics import WorkerStats
from flowd.server.workers import Supervisor


def summary(caplog: pytest.LogCaptureFixture) -> dict[str, int]:
    lines = re.findall(r"stopped: (.*)", caplog.text)
    assert len(lines) == 1, caplog.text
    return {key: int(value) for key, value in (item.split("=") for item in lines[0].split())}


def test_the_summary_names_every_loss_of_workers_that_have_exited(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(load_settings(None).settings, stream=io.StringIO())
    for worker, dropped in ((0, 7), (1, 5)):
        stats = WorkerStats()
        stats.inc("flowd_flows_out", (), 100)
        stats.inc("flowd_es_docs_spooled", (), 40)
        stats.inc("flowd_es_docs_replayed", (), 10)
        stats.inc("flowd_es_docs_dropped", (), dropped)
        stats.inc("flowd_es_docs_dead_lettered", (), 2)
        stats.inc("flowd_sink_rejected_documents", (), 3)
        stats.inc("flowd_parked_events", ("dropped",), 4)
        stats.inc("flowd_parked_events", ("expired",), 6)
        stats.inc("flowd_parked_events", ("shutdown",), 1)
        stats.inc("flowd_es_docs_spool_lost", (), 9)
        stats.inc("flowd_shutdown_lost", ("datagrams",), 5)
        stats.inc("flowd_shutdown_lost", ("documents",), 50)
        supervisor.aggregator.update(worker, stats.snapshot())
        supervisor.aggregator.retire(worker)  # its "bye" came, and it exited
    with caplog.at_level(logging.INFO, logger="flowd.supervisor"):
        supervisor._log_summary()
    got = summary(caplog)
    assert got["flows_out"] == 200
    assert got["es_dropped"] == 12
    assert got["es_dead_lettered"] == 4
    assert got["sink_rejected"] == 6
    assert got["es_spooled"] == 80 and got["es_replayed"] == 20
    assert got["parked_dropped"] == 8 and got["parked_expired"] == 12 and got["parked_lost"] == 2
    assert got["es_spool_lost"] == 18
    assert got["shutdown_lost_datagrams"] == 10 and got["shutdown_lost_documents"] == 100
