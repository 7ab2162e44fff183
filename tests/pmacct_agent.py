"""Run pmacct's `pmacctd` over a pcap savefile with an export plugin (sfprobe, nfprobe) and collect
what it sends to a UDP socket on loopback.

pmacctd (Debian package `pmacct`; 1.7.7 in Debian 12) reads `pcap_savefile` instead of an
interface, so no capture privileges or network are needed: it runs as any user. What it does, as
read from its source (src/pmacctd.c, plugin_hooks.c) and seen here:

- at start the core sleeps 2 s "to let plugins start" (`pcap_savefile_delay` replaces the 2 s),
  then replays the file as fast as it can;
- with `pcap_savefile_wait: true` it then hands the plugins its last partly filled pipe buffer
  (`fill_pipe_buffer`) and waits for a signal; without it, it stops the plugins at once, racing
  them for the packets still in the pipe;
- the probe plugins send an export datagram when it is full, and otherwise only on their
  one-second tick, which runs only when data reaches the plugin. A plugin stopped by a signal
  exits without flushing, so the last, partly filled datagram is never sent.

So `run_pmacctd` uses `pcap_savefile_wait: true`, lets the caller say when it has seen enough
(`done`), then waits `quiet` seconds more and stops pmacctd with SIGINT (SIGKILL to its process
group if it lingers). Callers put filler packets at the end of the capture so that everything
they check has gone out in full datagrams before pmacctd is stopped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

PMACCTD = shutil.which("pmacctd") or ("/usr/sbin/pmacctd" if Path("/usr/sbin/pmacctd").exists() else None)

needs_pmacctd = pytest.mark.skipif(
    PMACCTD is None, reason="pmacctd is not installed (Debian package pmacct; .ci/run installs it)"
)


@dataclass
class ProbeRun:
    """What one pmacctd run sent, and what it logged."""

    datagrams: list[bytes]
    log: str
    returncode: int | None
    finished: bool
    """True when `done` was satisfied; False when the run ended by pmacctd exiting or the deadline."""


def run_pmacctd(
    workdir: Path,
    pcap: Path,
    config: dict[str, str],
    receiver_key: str,
    done: Callable[[list[bytes]], bool],
    *,
    timeout: float = 20.0,
    quiet: float = 0.3,
) -> ProbeRun:
    """Run pmacctd over `pcap` with `config` (key -> value, plugin keys as `key[name]`), its
    export receiver (`receiver_key`, e.g. "sfprobe_receiver") set to a fresh UDP socket on
    127.0.0.1, and collect datagrams until `done(datagrams)` holds, pmacctd exits, or `timeout`
    seconds pass; then `quiet` seconds more. pmacctd is always stopped before this returns."""
    assert PMACCTD is not None
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    receiver.bind(("127.0.0.1", 0))
    port = receiver.getsockname()[1]
    lines = {
        "daemonize": "false",
        "pmacctd_nonroot": "true",
        "pcap_savefile": str(pcap),
        "pcap_savefile_wait": "true",
        receiver_key: f"127.0.0.1:{port}",
        **config,
    }
    config_path = workdir / "pmacctd.conf"
    config_path.write_text("".join(f"{key}: {value}\n" for key, value in lines.items()))
    log_path = workdir / "pmacctd.log"
    datagrams: list[bytes] = []
    finished = False
    with log_path.open("wb") as log, receiver:
        process = subprocess.Popen(
            [PMACCTD, "-f", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            stop_at = deadline
            while time.monotonic() < stop_at:
                receiver.settimeout(max(0.01, min(0.1, stop_at - time.monotonic())))
                try:
                    datagrams.append(receiver.recv(65535))
                except TimeoutError:
                    if process.poll() is not None and stop_at > time.monotonic() + quiet:
                        stop_at = time.monotonic() + quiet
                    continue
                if not finished and done(datagrams):
                    finished = True
                    stop_at = min(deadline, time.monotonic() + quiet)
        finally:
            _stop(process)
    return ProbeRun(datagrams, log_path.read_text(errors="replace"), process.returncode, finished)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT to the core (it stops its plugins and exits), SIGKILL to its group if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # the plugin children share the core's new session
    if process.poll() is None:
        process.wait(timeout=5)
