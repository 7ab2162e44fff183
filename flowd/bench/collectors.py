"""The collectors under test: flowd (`flowd run` in a subprocess, judged by its /metrics) and
peers (nfcapd, pmacct's nfacctd/sfacctd or any command, judged by what they wrote).

A trial is `begin(protocol)` -> the harness sends -> `finish(sent)`. flowd keeps running across
trials and is judged by counter deltas: flows out of the sink, its ingress drops, and the
kernel's drops on its sockets. A peer is started fresh for each trial in its own output
directory, waited for until its sockets' receive queues are empty and it stops using CPU, then
stopped (SIGINT/SIGTERM make nfacctd and nfcapd write out what they hold) and its output is
counted. pmacct aggregates, so its record count is not a flow count: it is judged by the sum of
the `packets` counters it printed against the sum of the packet counters we sent (sfacctd
without renormalisation counts one packet per sample). Its aggregation key includes
`timestamp_arrival` (microseconds), so it writes a JSON record per flow as flowd writes a document
per flow: keyed by the 5-tuple alone, its print plugin wrote each distinct flow once per refresh
second, and the harness replays a cycle of some 20,000 flows, so at 1.8M flows/s it serialised
about one flow in 90.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import orjson

from flowd.bench import procfs
from flowd.bench.sender import SendResult
from flowd.server.metrics import parse_samples

READY_TIMEOUT_S = 60.0
POLL_S = 0.25
QUIET_S = 2.5
"""flowd's workers report to the supervisor once a second: a count unchanged this long is final."""
IDLE_CPU_FRACTION = 0.05
STOP_TIMEOUT_S = 30.0


@dataclass(slots=True)
class Delivery:
    """What one trial got out of a collector."""

    delivered_flows: float
    """Flows out (for a peer judged by packet sums: sent flows x delivered/sent packets)."""
    exact: bool
    """True when every sent unit (flow or packet counter) came out."""
    kernel_drops: int
    ingress_drops: int
    cpu_s: float
    rss_total_bytes: int = 0
    """The collector's RSS summed over its processes (flowd's supervisor and workers, pmacct's
    core and plugins), the highest during the trial (`procfs.CpuWatch`)."""
    drain_s: float = 0.0
    note: str = ""
    stage_s: dict[str, float] = field(default_factory=dict)
    """flowd: seconds its workers spent in each stage during the trial (`flowd_stage_seconds`)."""
    received_datagrams: int | None = None
    """flowd: datagrams its listeners received during the trial; None for a peer."""


class Collector(Protocol):
    name: str
    workers: int

    def supports(self, protocol: str) -> bool: ...
    def start(self) -> None: ...
    def begin(self, protocol: str) -> tuple[str, int]: ...
    def finish(self, sent: SendResult, timeout_s: float) -> Delivery: ...
    def stop(self) -> None: ...


def free_udp_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def scratch_dir(prefix: str) -> Path:
    """On tmpfs when there is one: the benchmark measures collectors, not the disk."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {sample name: sum over its label sets}."""
    return {name: sum(value for _, value in series) for name, series in parse_samples(text).items()}


def stage_seconds(text: str) -> dict[str, float]:
    """Prometheus text -> {stage: flowd_stage_seconds_total of that stage}."""
    return {labels["stage"]: value for labels, value in parse_samples(text).get("flowd_stage_seconds_total", [])}


# --- flowd -------------------------------------------------------------------------------------


SINKS = ("files", "discard")
"""Where a benchmarked flowd puts its documents: NDJSON files on tmpfs, or nowhere."""


class FlowdCollector:
    """`flowd run` with `workers` processes on loopback ports, NDJSON output on tmpfs (files are
    deleted as they appear, so a long run does not fill memory), or with `sink="discard"` its
    `_bulk` bodies built and dropped (`output.discard`)."""

    name = "flowd"
    PORT_OF: ClassVar[dict[str, str]] = {"v5": "netflow", "v9": "netflow", "ipfix": "ipfix", "sflow": "sflow"}

    def __init__(
        self,
        workers: int,
        *,
        host: str = "127.0.0.1",
        batch_size: int = 64,
        sink: str = "files",
        raw_fields: Sequence[str] = ("*",),
    ) -> None:
        if sink not in SINKS:
            raise ValueError(f"sink {sink!r} is not one of {', '.join(SINKS)}")
        self.workers = workers
        self.host = host
        self.dir = scratch_dir("flowd-bench-")
        self.out = self.dir / "out"
        self.ports = {name: free_udp_port(host) for name in ("netflow", "ipfix", "sflow", "metrics")}
        self.config = self.dir / "flowd.toml"
        self.config.write_text(
            f"""shutdown_grace_s = 20
[listen]
netflow = ["{host}:{self.ports["netflow"]}"]
ipfix = ["{host}:{self.ports["ipfix"]}"]
sflow = ["{host}:{self.ports["sflow"]}"]
ipfix_tcp = []
workers = {workers}
batch_size = {batch_size}
[templates]
path = "{self.dir / "templates.json"}"
persist_interval_s = 0
[output]
directory = "{self.out}"
rotate_bytes = {64 * 1024 * 1024}
discard = {"true" if sink == "discard" else "false"}
raw_fields = {orjson.dumps(list(raw_fields)).decode()}
[metrics]
address = "{host}:{self.ports["metrics"]}"
status_interval_s = 0
"""
        )
        self.process: subprocess.Popen[bytes] | None = None
        self._protocol = "v9"
        self._before: dict[str, float] = {}
        self._before_stages: dict[str, float] = {}
        self._before_sockets = procfs.SocketState()
        self._cpu = procfs.CpuWatch(())
        self._janitor_stop = threading.Event()
        self._janitor: threading.Thread | None = None

    def supports(self, protocol: str) -> bool:
        return protocol in self.PORT_OF

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWD_", "ELASTIFLOW_"))}
        env["FLOWD_LOG_LEVEL"] = "WARNING"
        log = (self.dir / "flowd.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flowd.cli", "run", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.dir,
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"flowd exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if self._get("/readyz")[0] == 200:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError("flowd did not become ready:\n" + self.log_tail())
        self._janitor = threading.Thread(target=self._clean_output, name="flowd-bench-janitor", daemon=True)
        self._janitor.start()

    def log_tail(self, lines: int = 30) -> str:
        path = self.dir / "flowd.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _clean_output(self) -> None:
        while not self._janitor_stop.wait(0.5):
            for path in self.out.glob("flows-*.ndjson"):
                with contextlib.suppress(OSError):
                    path.unlink()  # an open file keeps writing to its inode until it rotates

    def _get(self, path: str) -> tuple[int, str]:
        url = f"http://{self.host}:{self.ports['metrics']}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""

    def metrics(self) -> dict[str, float]:
        return self._scrape()[0]

    def _scrape(self) -> tuple[dict[str, float], dict[str, float]]:
        """One /metrics read: totals per family, and seconds per stage."""
        text = self._get("/metrics")[1]
        return parse_metrics(text), stage_seconds(text)

    def pids(self) -> list[int]:
        return procfs.process_tree(self.process.pid) if self.process is not None else []

    def worker_pids(self) -> list[int]:
        return [pid for pid in self.pids() if self.process is not None and pid != self.process.pid]

    def port(self, protocol: str) -> int:
        return self.ports[self.PORT_OF[protocol]]

    def begin(self, protocol: str) -> tuple[str, int]:
        self._protocol = protocol
        self._before, self._before_stages = self._scrape()
        self._before_sockets = procfs.collector_sockets(self.port(protocol), self.pids())
        self._cpu = procfs.CpuWatch(self.pids()).start()
        return self.host, self.port(protocol)

    def finish(self, sent: SendResult, timeout_s: float) -> Delivery:
        started = time.monotonic()
        deadline = started + timeout_s
        want = self._before.get("flowd_flows_out_total", 0.0) + sent.flows
        last_value, last_change = -1.0, time.monotonic()
        now_metrics, now_stages = self._before, self._before_stages
        drain_s = timeout_s
        while time.monotonic() < deadline:
            now_metrics, now_stages = self._scrape()
            out = now_metrics.get("flowd_flows_out_total", 0.0)
            depth = now_metrics.get("flowd_queue_depth", 0.0)
            if out != last_value:
                last_value, last_change = out, time.monotonic()
            if out >= want and depth == 0:
                drain_s = time.monotonic() - started
                break
            if time.monotonic() - last_change >= QUIET_S and depth == 0:
                break
            time.sleep(POLL_S)
        cpu_s = self._cpu.stop()
        sockets = procfs.collector_sockets(self.port(self._protocol), self.pids())
        delivered = now_metrics.get("flowd_flows_out_total", 0.0) - self._before.get("flowd_flows_out_total", 0.0)
        ingress = now_metrics.get("flowd_ingress_drops_total", 0.0) - self._before.get("flowd_ingress_drops_total", 0.0)
        kernel = max(0, sockets.drops - self._before_sockets.drops)
        errors = now_metrics.get("flowd_decode_errors_total", 0.0) - self._before.get("flowd_decode_errors_total", 0.0)
        received = now_metrics.get("flowd_datagrams_received_total", 0.0) - self._before.get(
            "flowd_datagrams_received_total", 0.0
        )
        return Delivery(
            delivered_flows=delivered,
            exact=delivered >= sent.flows and kernel == 0 and ingress == 0,
            kernel_drops=kernel,
            ingress_drops=int(ingress),
            cpu_s=cpu_s,
            rss_total_bytes=self._cpu.rss_peak_bytes(),
            drain_s=drain_s,
            note=f"decode errors {errors:.0f}" if errors else "",
            stage_s={stage: value - self._before_stages.get(stage, 0.0) for stage, value in now_stages.items()},
            received_datagrams=int(received),
        )

    def stop(self) -> None:
        self._cpu.stop()
        self._janitor_stop.set()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- peers -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerPreset:
    command: str
    """Formatted with {host} {port} {outdir} {config}."""
    protocols: tuple[str, ...]
    count: str
    """"nfdump-stat": `nfdump -R outdir -I` Flows:; "pmacct-packets": sum of "packets" in outdir/*.json;
    else a shell command (formatted likewise) printing the number of flows delivered."""
    stop_signal: int = signal.SIGTERM
    config: str = ""


_PMACCT_CONFIG = """daemonize: false
{daemon}_ip: {{host}}
{daemon}_port: {{port}}
{daemon}_pipe_size: 4194304
{extra}plugins: print[out]
aggregate[out]: src_host, dst_host, src_port, dst_port, proto, timestamp_arrival
print_output[out]: json
print_output_file[out]: {{outdir}}/out.json
print_output_file_append[out]: true
print_refresh_time[out]: 1
plugin_pipe_size[out]: 67108864
plugin_buffer_size[out]: 65536
"""

PEERS: dict[str, PeerPreset] = {
    "nfcapd": PeerPreset(
        "nfcapd -w {outdir} -b {host} -p {port} -B 4194304 -t 3600", ("v5", "v9", "ipfix"), "nfdump-stat"
    ),
    "nfacctd": PeerPreset(
        "nfacctd -f {config}",
        ("v5", "v9", "ipfix"),
        "pmacct-packets",
        signal.SIGINT,
        _PMACCT_CONFIG.format(daemon="nfacctd", extra="nfacctd_disable_checks: true\n"),
    ),
    "sfacctd": PeerPreset(
        "sfacctd -f {config}",
        ("sflow",),
        "pmacct-packets",
        signal.SIGINT,
        _PMACCT_CONFIG.format(daemon="sfacctd", extra="sfacctd_renormalize: false\n"),
    ),
}


def count_nfdump(outdir: Path) -> int:
    result = subprocess.run(["nfdump", "-R", str(outdir), "-I"], capture_output=True, text=True, timeout=120)
    for line in result.stdout.splitlines():
        if line.startswith("Flows:"):
            return int(line.split()[1])
    return 0


def count_pmacct_packets(outdir: Path) -> int:
    total = 0
    for path in outdir.glob("*.json"):
        for line in path.read_bytes().splitlines():
            if line.strip():
                total += int(orjson.loads(line).get("packets", 0))
    return total


class PeerCollector:
    """Another collector, started fresh for each trial (see the module docstring)."""

    workers = 1

    def __init__(
        self, name: str, preset: PeerPreset, *, host: str = "127.0.0.1", port: int = 0, external: bool = False
    ) -> None:
        self.name = name
        self.preset = preset
        self.host = host
        self.fixed_port = port
        self.external = external
        """--target with --peer-cmd: the command binds what --target names (maybe not loopback)."""
        self.process: subprocess.Popen[bytes] | None = None
        self.outdir = Path()
        self.port = 0
        self._before_sockets = procfs.SocketState()
        self._cpu = procfs.CpuWatch(())

    def supports(self, protocol: str) -> bool:
        return protocol in self.preset.protocols

    def start(self) -> None:
        binary = shlex.split(self.preset.command)[0]
        if shutil.which(binary) is None:
            raise RuntimeError(f"{binary} not found (Debian: apt-get install -y pmacct nfdump)")

    def _format(self, text: str, config: Path) -> str:
        return text.format(host=self.host, port=self.port, outdir=self.outdir, config=config)

    def begin(self, protocol: str) -> tuple[str, int]:
        self.port = self.fixed_port or free_udp_port(self.host)
        self.outdir = scratch_dir(f"flowd-bench-{self.name}-")
        config = self.outdir / "peer.conf"
        if self.preset.config:
            config.write_text(self._format(self.preset.config, config))
        log = (self.outdir / "peer.log").open("wb")
        self.process = subprocess.Popen(
            shlex.split(self._format(self.preset.command, config)),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.outdir,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        # Ready when something bound the port we gave it (whichever process of the command did).
        while procfs.udp_sockets(self.port).sockets == 0 and not self.external:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not bind port {self.port}: {self.log_tail()}")
            time.sleep(0.05)
        time.sleep(0.3 if not self.external else 1.0)  # pmacct forks its plugins after binding
        self._before_sockets = self._sockets()
        self._cpu = procfs.CpuWatch(procfs.process_group(self.process.pid)).start()
        return self.host, self.port

    def _sockets(self) -> procfs.SocketState:
        """The peer's own sockets on its port (those its process group holds)."""
        assert self.process is not None
        return procfs.collector_sockets(self.port, procfs.process_group(self.process.pid))

    def log_tail(self, lines: int = 20) -> str:
        path = self.outdir / "peer.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def finish(self, sent: SendResult, timeout_s: float) -> Delivery:
        assert self.process is not None
        started = time.monotonic()
        deadline = started + timeout_s
        previous = self._cpu.cpu_s()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            current = self._cpu.cpu_s()  # writer children included: they are the work being waited for
            busy = (current - previous) / 0.5
            previous = current
            if self._sockets().rx_queue_bytes == 0 and busy < IDLE_CPU_FRACTION:
                break
        # Idle is only seen after a 0.5 s window without work: the work ended before it.
        drain_s = max(0.0, time.monotonic() - started - 0.5)
        sockets = self._sockets()
        self._stop_process()
        cpu_s = self._cpu.stop()  # what it wrote out when told to stop is work for this trial's flows
        kernel = max(0, sockets.drops - self._before_sockets.drops)
        delivered, exact = self._count(sent)
        self.cleanup_trial()  # each trial's output is gigabytes on tmpfs (memory) at peer rates
        return Delivery(
            delivered_flows=delivered,
            exact=exact and kernel == 0,
            kernel_drops=kernel,
            ingress_drops=0,
            cpu_s=cpu_s,
            rss_total_bytes=self._cpu.rss_peak_bytes(),
            drain_s=drain_s,
        )

    def _count(self, sent: SendResult) -> tuple[float, bool]:
        count = self.preset.count
        if count == "nfdump-stat":
            flows = count_nfdump(self.outdir)
            return float(flows), flows >= sent.flows
        if count == "pmacct-packets":
            packets = count_pmacct_packets(self.outdir)
            share = packets / sent.packets if sent.packets else 0.0
            return sent.flows * share, packets >= sent.packets
        output = subprocess.run(
            self._format(count, self.outdir / "peer.conf"), shell=True, capture_output=True, text=True, timeout=120
        ).stdout.split()
        delivered = int(output[0]) if output else 0
        return float(delivered), delivered >= sent.flows

    def _stop_process(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(self.preset.stop_signal)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # pmacct's plugins exit after the core; give them a moment to write out
        for _ in range(40):
            if not procfs.process_group(self.process.pid):
                break
            time.sleep(0.05)
        time.sleep(0.2)

    def stop(self) -> None:
        self._stop_process()
        self._cpu.stop()
        self.cleanup_trial()

    def cleanup_trial(self) -> None:
        """Remove the trial's output directory (never anything else: `Path()` is the cwd)."""
        if self.outdir != Path():
            shutil.rmtree(self.outdir, ignore_errors=True)
            self.outdir = Path()
