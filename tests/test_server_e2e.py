"""`flowd run` as a subprocess on loopback: corpus replay against the offline decoder, IPFIX over
TCP, SIGTERM under load, template persistence across a restart, hostile input, several workers.

Every send loop is bounded in count and paced (the kernel grants 4 MiB of receive buffer here),
and every wait is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from flowd.capture import read_datagrams
from flowd.decode import TemplateCache, decode_datagram
from flowd.errors import DecodeError
from flowd.output.documents import flow_document
from tests.corpus_units import CORPUS, UNITS, UNITS_BY_NAME, corpus_available, unit_datagrams
from tests.ports import free_port
from tests.test_enrich_sampling import v5_datagram
from tests.test_pipeline import netflow_v5

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not corpus_available(), reason="shared corpus not found"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT load balancing is Linux's"),
]

SFLOW_FILES = [
    *sorted(str(p.relative_to(CORPUS)) for p in (CORPUS / "akvorado" / "sflow").glob("*.pcap")),
    *sorted(str(p.relative_to(CORPUS)) for p in (CORPUS / "logstash-codec-sflow").glob("*.dat")),
    "ndpi/sflow.pcap",
    "tcpdump/sflow-print-v6.pcap",
    "tcpdump/sflow_print-segv.pcap",
]
READY_TIMEOUT_S = 60.0
PACE_EVERY = 40
PACE_S = 0.002


class Server:
    """One `flowd run` subprocess with its own ports, output directory and template file."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        workers: int = 1,
        extra: str = "",
        listen_extra: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        self.dir = tmp_path
        self.env = env or {}
        """Variables for the server beyond the test's own environment (which loses FLOWD_*/ELASTIFLOW_*)."""
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.out = tmp_path / "out"
        self.ports = {name: free_port() for name in ("netflow", "ipfix", "sflow", "metrics")}
        self.config = tmp_path / "flowd.toml"
        self.config.write_text(
            f"""shutdown_grace_s = 20
[listen]
netflow = ["127.0.0.1:{self.ports["netflow"]}"]
ipfix = ["127.0.0.1:{self.ports["ipfix"]}", "[::1]:{self.ports["ipfix"]}"]
sflow = ["127.0.0.1:{self.ports["sflow"]}"]
ipfix_tcp = ["127.0.0.1:{self.ports["ipfix"]}"]
workers = {workers}
receive_buffer_bytes = 4194304
{listen_extra}
[templates]
path = "{tmp_path / "state" / "templates.json"}"
[output]
directory = "{self.out}"
[enrich]
geoip_lookup = false
asn_lookup = false
oui_lookup = false
resolve_ip2host = "false"
[metrics]
address = "127.0.0.1:{self.ports["metrics"]}"
status_interval_s = 0
{extra}
"""
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = tmp_path / "server.log"
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        self.log_path = self.dir / f"server-{self.runs}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWD_", "ELASTIFLOW_"))} | self.env
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flowd.cli", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.dir,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except (OSError, http.client.HTTPException):
                # Before the port is bound, a connection to it can come from that same port (TCP
                # self-connect): the client then reads its own request as the answer.
                pass
            time.sleep(0.1)
        raise AssertionError("server not ready:\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.ports['metrics']}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""

    def metrics(self) -> dict[str, float]:
        """Sample name with labels -> value."""
        values: dict[str, float] = {}
        for line in self.get("/metrics")[1].splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def total(self, name: str) -> float:
        return sum(v for k, v in self.metrics().items() if k == name or k.startswith(name + "{"))

    def wait_received(self, count: int, timeout_s: float = 30.0) -> None:
        """Until the server counted `count` datagrams and its queues are empty."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            m = self.metrics()
            received = sum(v for k, v in m.items() if k.startswith("flowd_datagrams_received_total"))
            depth = sum(v for k, v in m.items() if k.startswith("flowd_queue_depth"))
            if received >= count and depth == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"server received {received} of {count} datagrams: {m}")

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 40.0) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def summary(self) -> dict[str, int]:
        match = re.findall(r"stopped: (.*)", self.log())
        assert match, self.log()
        return {k: int(v) for k, v in (item.split("=") for item in match[-1].split())}

    def documents(self) -> list[dict[str, Any]]:
        docs = []
        for path in sorted(self.out.glob("flows-*.ndjson")):
            docs.extend(orjson.loads(line) for line in path.read_bytes().splitlines())
        return docs

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    servers: list[Server] = []

    def make(**kw: Any) -> Server:
        server = Server(tmp_path / f"s{len(servers)}", **kw)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.kill()


def sender(family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
    return sock


def send_paced(sock: socket.socket, payloads: list[bytes], address: tuple[str, int], counter: list[int]) -> None:
    for payload in payloads:
        sock.sendto(payload, address)
        counter[0] += 1
        if counter[0] % PACE_EVERY == 0:
            time.sleep(PACE_S)


def offline_documents(
    payloads: list[bytes], exporter: tuple[str, int], received_at: float, enricher: Any = None
) -> list[dict[str, Any]]:
    """What `flowd decode` (with `--enrich` when `enricher` is given) makes of the same bytes in
    the same order, through one template cache."""
    templates = TemplateCache()
    docs = []
    for payload in payloads:
        try:
            result = decode_datagram(payload, exporter, templates, received_at)
        except DecodeError:
            continue
        flows = [flow_document(record) for record in result.flows]
        if enricher is not None:
            enricher.learn_from_options([flow_document(record) for record in result.options])
            asyncio.run(enricher.enrich(flows))
        docs.extend(flows)
    return docs


def offline_enricher() -> Any:
    """The enrichment the test servers run (lookups that need databases or DNS are off)."""
    from flowd.config import EnrichSettings
    from flowd.enrich.chain import build_enricher

    return build_enricher(EnrichSettings(geoip_lookup=False, asn_lookup=False, oui_lookup=False))


def receive_time_fields(payloads: list[bytes], exporter: tuple[str, int]) -> set[str]:
    """Fields whose value depends on when the datagram arrived (sFlow @timestamp and the like):
    decode twice at different receive times and keep the keys that changed."""
    first = offline_documents(payloads, exporter, 1_600_000_000.0)
    second = offline_documents(payloads, exporter, 1_700_000_000.5)
    return {key for a, b in zip(first, second, strict=True) for key in a.keys() | b.keys() if a.get(key) != b.get(key)}


OPTIONS_LEARNED_FIELDS = {
    "observer.ingress.interface.name",
    "observer.ingress.interface.alias",
    "observer.egress.interface.name",
    "observer.egress.interface.alias",
    "network.application",
}


def canonical(doc: dict[str, Any], ignore: set[str]) -> bytes:
    return orjson.dumps({k: v for k, v in doc.items() if k not in ignore}, option=orjson.OPT_SORT_KEYS)


def assert_every_stage_timed(server: Any) -> None:
    """Each worker stage reports the time it took (`flowd_stage_seconds`), within a few snapshots."""
    stages = ("receive", "decode", "enrich", "serialise", "sink")
    deadline = time.monotonic() + 10
    while True:
        metrics = server.metrics()
        seconds = {stage: metrics.get(f'flowd_stage_seconds_total{{stage="{stage}"}}', 0.0) for stage in stages}
        if all(value > 0 for value in seconds.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert all(value > 0 for value in seconds.values()), seconds
    assert sum(seconds.values()) < 60, seconds  # seconds, not something else


def test_corpus_replay_matches_offline_decode(server_factory: Any) -> None:
    server = server_factory()
    server.start()
    expected: list[dict[str, Any]] = []
    sent = [0]
    sockets = []
    groups: list[tuple[str, list[bytes]]] = []
    for unit in UNITS:
        by_source: dict[tuple[str, int], list[bytes]] = {}
        for datagram in unit_datagrams(unit):
            by_source.setdefault(datagram.source, []).append(datagram.payload)
        groups.extend(("ipfix" if unit.protocol == "ipfix" else "netflow", p) for p in by_source.values())
    for name in SFLOW_FILES:
        by_source = {}
        for datagram in read_datagrams(CORPUS / name):
            by_source.setdefault(datagram.source, []).append(datagram.payload)
        groups.extend(("sflow", p) for p in by_source.values())
    ignore: set[str] = set()
    enricher = offline_enricher()
    for listener, payloads in groups:
        sock = sender()
        sockets.append(sock)
        exporter = ("127.0.0.1", sock.getsockname()[1])
        ignore |= receive_time_fields(payloads, exporter)
        expected.extend(offline_documents(payloads, exporter, 1_700_000_000.0, enricher))
        send_paced(sock, payloads, ("127.0.0.1", server.ports[listener]), sent)
    server.wait_received(sent[0])
    assert server.total("flowd_kernel_drops_total") == 0
    assert_every_stage_timed(server)
    assert server.stop() == 0, server.log()
    summary = server.summary()
    output = server.documents()
    ignore |= {"event.created", "event.ingested"}
    # Names learned from options data: the server learns a whole receive batch's options before
    # enriching its flows, `flowd decode` one datagram at a time, so a flow sent just before its
    # exporter's interface table may carry the names in one and not the other.
    ignore |= OPTIONS_LEARNED_FIELDS
    want = Counter(canonical(doc, ignore) for doc in expected)
    got = Counter(canonical(doc, ignore) for doc in output)
    missing = want - got
    assert not missing, f"{sum(missing.values())} of {sum(want.values())} flows missing, e.g. {next(iter(missing))!r}"
    assert len(output) == sum(want.values()) == summary["flows_out"]
    assert summary["datagrams_received"] == sent[0] > 1000
    print(f"corpus: {sent[0]} datagrams from {len(groups)} exporters, {len(output)} flows, ignored {sorted(ignore)}")
    for sock in sockets:
        sock.close()


def test_flow_documents_without_raw_fields(server_factory: Any) -> None:
    """`output.raw_fields = []` (ElastiFlow's KEEP_ORIG_DATA=false) reaches the workers: flow
    documents carry no raw field but the exporter's identity; sFlow counters keep theirs."""
    server = server_factory()
    server.config.write_text(server.config.read_text().replace("[output]\n", "[output]\nraw_fields = []\n", 1))
    server.start()
    sent = [0]
    with sender() as netflow, sender() as sflow:
        send_paced(
            netflow, [netflow_v5(ident, records=3) for ident in range(20)], ("127.0.0.1", server.ports["netflow"]), sent
        )
        sflow_payloads = [d.payload for name in SFLOW_FILES for d in read_datagrams(CORPUS / name)]
        send_paced(sflow, sflow_payloads, ("127.0.0.1", server.ports["sflow"]), sent)
        server.wait_received(sent[0])
        # `flowd status` reads the same counters from outside.
        url = f"http://127.0.0.1:{server.ports['metrics']}/metrics"
        status = subprocess.run(
            [sys.executable, "-m", "flowd.cli", "status", "--url", url, "--json"],
            capture_output=True,
            check=True,
            timeout=30,
        )
        summary = orjson.loads(status.stdout)
        rows = {row["protocol"]: row["datagrams"] for row in summary["exporters"]}
        assert rows == {"netflow_v5": 20, "sflow": len(sflow_payloads)}
        assert summary["datagrams_received"] == sent[0] and summary["kernel_drops"] == 0
    assert server.stop() == 0, server.log()
    output = server.documents()
    kinds = Counter(d["event.action"] for d in output)
    assert kinds["netflow_flow"] == 60 and kinds["sflow_flow"] > 0 and kinds["sflow_counters"] > 0, kinds
    for document in output:
        raw = {k for k in document if k.startswith(("netflow.", "sflow."))}
        if document["event.action"] == "sflow_counters":
            assert "sflow.agent_address" in raw and "sflow.sample_sequence" in raw
        else:
            assert raw <= {"netflow.type"} | {k for k in raw if k.startswith("netflow.exporter.")}, raw
            assert "source.ip" in document and "network.community_id" in document
    assert any("netflow.exporter.version" in d for d in output)
    assert any("sflow.if_in_octets" in d for d in output)


def test_sighup_changes_the_raw_fields_kept(server_factory: Any) -> None:
    """`output.raw_fields` applies to the flows after SIGHUP; the supervisor does not call it restart-only."""
    server = server_factory()
    original = server.config.read_text()
    server.config.write_text(original.replace("[output]\n", "[output]\nraw_fields = []\n", 1))
    server.start()
    sent = [0]
    target = ("127.0.0.1", server.ports["netflow"])
    with sender() as sock:
        send_paced(sock, [netflow_v5(1, records=2)], target, sent)
        server.wait_received(sent[0])
        server.config.write_text(
            original.replace("[output]\n", '[output]\nraw_fields = ["netflow.tcp_control_bits"]\n', 1)
        )
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: server.total('flowd_config_reloads_total{result="ok"}') == 1, server)
        send_paced(sock, [netflow_v5(2, records=2)], target, sent)
        server.wait_received(sent[0])
    assert server.stop() == 0, server.log()
    kept = [
        sorted(k for k in d if k.startswith("netflow.") and not k.startswith("netflow.exporter."))
        for d in server.documents()
    ]
    assert kept == [["netflow.type"]] * 2 + [["netflow.tcp_control_bits", "netflow.type"]] * 2
    assert "reloaded: output.raw_fields" in server.log()
    assert "a restart applies" not in server.log()


def test_ipfix_over_tcp(server_factory: Any) -> None:
    server = server_factory()
    server.start()
    messages = [d.payload for d in read_datagrams(CORPUS / "ipfixcol2" / "example_flows.ipfix")]
    stream = b"".join(messages)
    with socket.create_connection(("127.0.0.1", server.ports["ipfix"]), timeout=10) as connection:
        exporter = ("127.0.0.1", connection.getsockname()[1])
        rng = random.Random(7)
        position = 0
        while position < len(stream):  # odd chunk sizes: messages straddle reads
            size = rng.randint(1, 3000)
            connection.sendall(stream[position : position + size])
            position += size
        server.wait_received(len(messages))
    want = offline_documents(messages, exporter, 0.0, offline_enricher())
    assert len(want) == UNITS_BY_NAME["ipfixcol2:example_flows"].data_records
    assert server.stop() == 0, server.log()
    ignore = receive_time_fields(messages, exporter)
    got = Counter(canonical(d, ignore) for d in server.documents())
    assert got == Counter(canonical(d, ignore) for d in want)
    assert server.summary()["flows_out"] == len(want)


def test_sigterm_while_traffic_flows_loses_nothing_received(server_factory: Any) -> None:
    server = server_factory(workers=2)
    server.start()
    stop_sending = threading.Event()
    sent = [0]

    def blast() -> None:
        sockets = [sender() for _ in range(8)]
        address = ("127.0.0.1", server.ports["netflow"])
        for ident in range(60_000):
            if stop_sending.is_set():
                break
            with contextlib.suppress(OSError):
                sockets[ident % 8].sendto(netflow_v5(ident), address)
            sent[0] += 1
            if ident % PACE_EVERY == 0:
                time.sleep(PACE_S)
        for sock in sockets:
            sock.close()

    thread = threading.Thread(target=blast)
    thread.start()
    try:
        time.sleep(1.5)
        assert server.stop(timeout_s=40) == 0, server.log()
        time.sleep(0.2)  # datagrams still arriving while the server is gone are not "received"
    finally:
        stop_sending.set()
        thread.join(timeout=30)
    summary = server.summary()
    docs = server.documents()
    idents = Counter(d["source.port"] | (d["destination.port"] << 16) for d in docs)
    assert summary["ingress_drops"] == 0
    assert len(idents) == summary["datagrams_received"] > 100
    assert set(idents.values()) == {2}  # each datagram's two records, once each
    assert summary["flows_out"] == len(docs)
    print(f"sigterm: sent {sent[0]}, received {summary['datagrams_received']}, flows out {len(docs)}")


def split_unit(name: str) -> tuple[list[bytes], list[bytes]]:
    """(template datagrams, data datagrams) of a unit whose files are template file(s) then data."""
    unit = UNITS_BY_NAME[name]
    payloads = [d.payload for d in unit_datagrams(unit)]
    return payloads[:1], payloads[1:]


def test_templates_survive_a_restart(server_factory: Any) -> None:
    server = server_factory()
    units = ["lcn:nf9_cisco_asa_1", "lcn:ipfix_barracuda", "lcn:nf9_paloalto_panos"]
    sockets = {name: sender() for name in units}
    server.start()
    sent = [0]
    for name in units:
        templates, _ = split_unit(name)
        listener = "ipfix" if "ipfix" in name else "netflow"
        send_paced(sockets[name], templates, ("127.0.0.1", server.ports[listener]), sent)
    server.wait_received(sent[0])
    assert server.stop() == 0, server.log()
    assert server.summary()["templates_persisted"] >= 1
    first_run = len(server.documents())

    server.start()
    restored = server.total("flowd_templates_restored_total")
    sent = [0]
    expected = 0
    for name in units:  # the same source ports, no template resent
        _, data = split_unit(name)
        listener = "ipfix" if "ipfix" in name else "netflow"
        send_paced(sockets[name], data, ("127.0.0.1", server.ports[listener]), sent)
        expected += UNITS_BY_NAME[name].data_records
    server.wait_received(sent[0])
    assert server.total("flowd_parked_records") == 0
    assert server.stop() == 0, server.log()
    assert restored >= len(units)
    assert len(server.documents()) - first_run == expected == server.summary()["flows_out"]
    for sock in sockets.values():
        sock.close()


def flow_identity(doc: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        doc.get(k) for k in ("source.ip", "source.port", "destination.ip", "destination.port", "network.bytes")
    )


def test_data_still_waiting_for_its_template_at_shutdown_is_decoded_after_a_restart(server_factory: Any) -> None:
    """Data sets whose template has not come when flowd stops are kept on disk. After a restart
    every worker holds them; the one each exporter's template reaches decodes them, once."""
    server = server_factory(workers=2)
    name = "lcn:nf9_cisco_asa_1"
    templates, data = split_unit(name)
    sockets = [sender() for _ in range(6)]  # six exporters, spread over both workers
    server.start()
    sent = [0]
    for sock in sockets:
        send_paced(sock, data, ("127.0.0.1", server.ports["netflow"]), sent)
    server.wait_received(sent[0])
    parked = server.total("flowd_parked_records")
    assert parked > 0
    assert server.stop() == 0, server.log()
    assert server.documents() == []
    assert "exporters were still waiting for their templates: kept in" in server.log()
    assert (server.summary()["parked_kept"], server.summary()["parked_lost"]) == (parked, 0)
    files = list((server.dir / "state" / "templates.parked").iterdir())
    assert len(files) >= len(sockets)

    server.start()
    # Every worker holds every file's sets; the gauge counts each set once (worker 0 reports the copies).
    assert server.total("flowd_parked_records") == parked
    sent = [0]
    for sock in sockets:
        send_paced(sock, templates, ("127.0.0.1", server.ports["netflow"]), sent)
    server.wait_received(sent[0])
    wait_for(lambda: server.total('flowd_parked_events_total{event="restored"}') == parked, server)
    assert server.total('flowd_parked_events_total{event="unparked"}') == parked
    wait_for(lambda: server.total("flowd_parked_records") == 0, server)  # the other worker's copies let go
    assert server.stop() == 0, server.log()
    expected = Counter(
        flow_identity(doc) for sock in sockets for doc in offline_documents(templates + data, sock.getsockname(), 0.0)
    )
    assert Counter(flow_identity(doc) for doc in server.documents()) == expected
    assert sum(expected.values()) == len(sockets) * UNITS_BY_NAME[name].data_records
    assert list((server.dir / "state" / "templates.parked").iterdir()) == []
    for sock in sockets:
        sock.close()


def test_sighup_reloads_the_enrichment_tables(server_factory: Any) -> None:
    """Network names added to the file apply to the flows after SIGHUP, in every worker; a broken
    file is refused and the running tables stay; keys a reload cannot apply are named."""
    server = server_factory(workers=2)
    server.start()
    sock = sender()
    datagram = v5_datagram(NAMED_FLOWS)
    target = ("127.0.0.1", server.ports["netflow"])
    sent = [0]
    send_paced(sock, [datagram], target, sent)
    server.wait_received(sent[0])

    original = server.config.read_text()
    server.config.write_text(original.replace("[enrich]\n", '[enrich]\nnetwork_names = { "10.0.0.0/8" = "campus" }\n'))
    assert server.process is not None
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: server.total('flowd_config_reloads_total{result="ok"}') == 2, server)
    send_paced(sock, [datagram], target, sent)
    server.wait_received(sent[0])

    server.config.write_text(original.replace("[enrich]\n", "[enrich]\nnetwork_names = [\n"))
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused, the running configuration stays" in server.log(), server)
    wait_for(lambda: server.total('flowd_config_reloads_total{result="failed"}') == 1, server)
    server.config.write_text(
        original.replace("[enrich]\n", '[enrich]\nnetwork_names = { "10.0.0.0/8" = "campus" }\n').replace(
            "shutdown_grace_s = 20", "shutdown_grace_s = 21"
        )
    )
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "a restart applies shutdown_grace_s" in server.log(), server)
    wait_for(lambda: server.total('flowd_config_reloads_total{result="ok"}') == 4, server)
    send_paced(sock, [datagram], target, sent)
    server.wait_received(sent[0])
    assert server.stop() == 0, server.log()
    sock.close()

    names = [(d.get("source.geo.name"), d.get("destination.geo.name")) for d in server.documents()]
    per_datagram = len(NAMED_FLOWS)
    assert names[:per_datagram] == [(None, None)] * per_datagram
    assert names[per_datagram:] == [("campus", None), (None, "campus")] * 2
    assert server.log().count("reloaded: enrich.network_names") == 2  # one per worker; the last changed nothing
    assert server.log().count("reloaded: no table changed") == 2


def test_an_elastiflow_deployment_moves_over_with_its_environment_and_user_settings(
    server_factory: Any, tmp_path: Path
) -> None:
    """ElastiFlow's KEEP_ORIG_DATA=false and its user settings files (interface names, the sampling
    rate of an exporter that announces none) apply in `flowd run`; an edited ifName.yml applies
    at SIGHUP."""
    settings = tmp_path / "user_settings"
    settings.mkdir()
    (settings / "ifName.yml").write_text('"127.0.0.1::ifName.1": "ge-0/0/1"\n')
    (settings / "sampling_interval.yml").write_text('"127.0.0.1": 100\n')
    server = server_factory(env={"ELASTIFLOW_USER_SETTINGS_PATH": str(settings), "ELASTIFLOW_KEEP_ORIG_DATA": "false"})
    server.start()
    sent = [0]
    target = ("127.0.0.1", server.ports["netflow"])
    datagram = v5_datagram(NAMED_FLOWS)  # ingress ifIndex 1, egress 2, 700 octets, no sampling announced
    with sender() as sock:
        send_paced(sock, [datagram], target, sent)
        server.wait_received(sent[0])
        (settings / "ifName.yml").write_text('"127.0.0.1::ifName.1": "ge-0/0/1"\n"127.0.0.1::ifName.2": "ge-0/0/2"\n')
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: server.total('flowd_config_reloads_total{result="ok"}') == 1, server)
        send_paced(sock, [datagram], target, sent)
        server.wait_received(sent[0])
    assert server.stop() == 0, server.log()
    documents = server.documents()
    assert len(documents) == 2 * len(NAMED_FLOWS)
    for document in documents:
        assert document["network.bytes"] == 700 * 100 and document["flowd.sampling_rate"] == 100
        assert document["observer.ingress.interface.name"] == "ge-0/0/1"
        raw = {k for k in document if k.startswith(("netflow.", "sflow."))}
        assert raw == {"netflow.type", *(k for k in raw if k.startswith("netflow.exporter."))}
    egress = [d.get("observer.egress.interface.name") for d in documents]
    assert egress == [None] * len(NAMED_FLOWS) + ["ge-0/0/2"] * len(NAMED_FLOWS)


NAMED_FLOWS = [("10.1.2.3", "8.8.8.8"), ("8.8.4.4", "10.9.9.9")]


def wait_for(condition: Any, server: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met:\n" + server.log())


def ipfix_template_flood(first_id: int, count: int) -> bytes:
    """One IPFIX message with `count` templates (ids from first_id), each of two fields."""
    records = b"".join(struct.pack("!HHHHHH", first_id + i, 2, 8, 4, 12, 4) for i in range(count))
    template_set = struct.pack("!HH", 2, 4 + len(records)) + records
    return struct.pack("!HHIII", 10, 16 + len(template_set), 1_700_000_000, 0, 1) + template_set


def huge_field_count_template() -> bytes:
    body = struct.pack("!HH", 400, 65535) + struct.pack("!HH", 8, 4) * 10
    template_set = struct.pack("!HH", 2, 4 + len(body)) + body
    return struct.pack("!HHIII", 10, 16 + len(template_set), 1_700_000_000, 0, 1) + template_set


WORKER_PEAK_RSS_LIMIT = 300 * 1024 * 1024
"""Peak resident memory a worker may reach under the hostile mix with its default queue sizes."""


def worker_peak_rss_bytes(supervisor_pid: int) -> list[int]:
    """VmHWM (peak resident set) of every child process of the supervisor, from /proc."""
    peaks = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(supervisor_pid) and "VmHWM" in fields:
            peaks.append(int(fields["VmHWM"].split()[0]) * 1024)
    return peaks


def test_hostile_input_never_stops_the_server(server_factory: Any) -> None:
    server = server_factory(extra="", listen_extra="")
    server.config.write_text(server.config.read_text().replace("[output]", "max_per_exporter = 500\n[output]"))
    server.start()
    rng = random.Random(1)
    corpus = [d.payload for unit in UNITS[:20] for d in unit_datagrams(unit)]
    hostile: list[bytes] = []
    for payload in corpus:  # truncated at random offsets, and bit-flipped
        hostile.append(payload[: rng.randrange(0, len(payload))])
        flipped = bytearray(payload)
        for _ in range(4):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        hostile.append(bytes(flipped))
    hostile += [rng.randbytes(rng.randrange(0, 1500)) for _ in range(300)]
    hostile += [b"\x00\x0a" + rng.randbytes(100) for _ in range(100)]  # IPFIX version word, garbage after
    hostile += [b"\x00\x05\x00\x1e" + bytes(20)] * 20  # v5 claiming 30 records, carrying none
    hostile += [ipfix_template_flood(256 + 200 * i, 200) for i in range(25)]  # 5,000 template ids
    hostile += [huge_field_count_template()] * 10
    sent = [0]
    sock = sender()
    for listener in ("netflow", "ipfix", "sflow"):
        send_paced(sock, hostile, ("127.0.0.1", server.ports[listener]), sent)
    server.wait_received(sent[0], timeout_s=60)
    assert server.get("/healthz")[0] == 200
    metrics = server.metrics()
    reasons = {m.group(1) for k in metrics if (m := re.search(r'flowd_decode_errors_total\{.*reason="([^"]+)"', k))}
    assert {"truncated", "unsupported_version"} <= reasons, reasons
    assert "internal_error" not in reasons, server.log()
    assert server.total("flowd_templates_known") <= 500 * 3 + 100  # capped per exporter
    assert server.total('flowd_template_events_total{event="rejected_over_cap"}') > 0
    assert server.process is not None
    peaks = worker_peak_rss_bytes(server.process.pid)
    assert peaks and max(peaks) < WORKER_PEAK_RSS_LIMIT, peaks  # queues and caches stay bounded

    good = sender()  # a well-behaved exporter still decodes after all that
    templates, data = split_unit("lcn:nf9_cisco_asa_1")
    before = server.total("flowd_flows_out_total")
    send_paced(good, templates + data, ("127.0.0.1", server.ports["netflow"]), sent)
    server.wait_received(sent[0])
    assert server.stop() == 0, server.log()
    assert server.summary()["flows_out"] - before >= UNITS_BY_NAME["lcn:nf9_cisco_asa_1"].data_records
    print(f"hostile: {sent[0]} datagrams, reasons {sorted(reasons)}, worker peak RSS {[p >> 20 for p in peaks]} MiB")
    sock.close()
    good.close()


def test_allowlist_drops_before_decoding(server_factory: Any) -> None:
    server = server_factory(listen_extra='allowed_exporters = ["192.0.2.0/24"]')
    server.start()
    sock = sender()
    for ident in range(50):
        sock.sendto(netflow_v5(ident), ("127.0.0.1", server.ports["netflow"]))
    deadline = time.monotonic() + 20
    while server.total("flowd_allowlist_drops_total") < 50 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.total("flowd_allowlist_drops_total") == 50
    assert server.stop() == 0
    assert server.summary()["datagrams_received"] == 0 and server.documents() == []
    sock.close()


def offline_error_count(unit: Any) -> int:
    templates = TemplateCache()
    errors = 0
    for datagram in unit_datagrams(unit):
        try:
            errors += len(decode_datagram(datagram.payload, ("192.0.2.1", 1), templates, 0.0).errors)
        except DecodeError:
            errors += 1
    return errors


def test_four_workers_fifty_exporters(server_factory: Any) -> None:
    server = server_factory(workers=4)
    server.start()
    choices = [
        "lcn:nf9_cisco_asa_1",
        "lcn:ipfix_mikrotik",
        "lcn:nf9_cisco_wlc",
        "akv:template+data",
        "lcn:nf5_mikrotik",
    ]
    sent = [0]
    expected: dict[int, int] = {}
    sockets = []
    for index in range(50):
        name = choices[index % len(choices)]
        unit = UNITS_BY_NAME[name]
        sock = sender()
        sockets.append(sock)
        listener = "ipfix" if unit.protocol == "ipfix" else "netflow"
        payloads = [d.payload for d in unit_datagrams(unit)]
        send_paced(sock, payloads, ("127.0.0.1", server.ports[listener]), sent)
        expected[sock.getsockname()[1]] = unit.data_records
    server.wait_received(sent[0], timeout_s=60)
    flows_in = sum(expected.values())
    errors_in = sum(offline_error_count(UNITS_BY_NAME[choices[i % len(choices)]]) for i in range(50))
    deadline = time.monotonic() + 20
    while server.total("flowd_flows_out_total") < flows_in and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.total("flowd_flows_out_total") == flows_in
    assert server.total("flowd_decode_errors_total") == errors_in  # what the offline decoder reports too
    assert server.stop() == 0, server.log()
    per_exporter = Counter(int(d["netflow.exporter.address"].rpartition(":")[2]) for d in server.documents())
    assert per_exporter == expected
    assert server.summary()["flows_out"] == flows_in
    worker_files = {p.name.rsplit("-", 1)[1] for p in server.out.glob("flows-*.ndjson")}
    print(f"workers: {sent[0]} datagrams, {flows_in} flows, {len(worker_files)} workers wrote files")
    for sock in sockets:
        sock.close()


def test_datagrams_queued_on_the_socket_at_sigterm_are_read_before_it_closes(server_factory: Any) -> None:
    """Found by an audit: the worker closed its sockets with datagrams still queued in the kernel,
    which discarded them, counted nowhere. The worker is stopped (SIGSTOP) while they are sent,
    so they are all in the socket's buffer when SIGTERM comes."""
    server = server_factory()
    server.start()
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    commands = {int(pid): Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children}
    (worker,) = [pid for pid, command in commands.items() if b"spawn_main" in command]
    sock = sender()
    target = ("127.0.0.1", server.ports["netflow"])
    os.kill(worker, signal.SIGSTOP)
    try:
        for ident in range(1000):  # about 1.2 MB of the 4 MiB buffer
            sock.sendto(netflow_v5(ident, records=1), target)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
    finally:
        os.kill(worker, signal.SIGCONT)
    assert server.process.wait(timeout=40) == 0, server.log()
    summary = server.summary()
    assert summary["datagrams_received"] + summary["kernel_drops"] == 1000
    assert len(server.documents()) == summary["flows_out"] == summary["datagrams_received"] > 900
    sock.close()


def test_a_stop_while_workers_start_is_a_clean_stop(server_factory: Any) -> None:
    """Found by an audit: a SIGTERM before a worker's loop listened for it killed the worker,
    and `flowd run` exited 1 on an ordinary stop (a unit marked failed on `systemctl stop`)."""
    server = server_factory(workers=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWD_", "ELASTIFLOW_"))}
    with server.log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "flowd.cli", "run", "--config", str(server.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=server.dir,
        )
    deadline = time.monotonic() + 30
    while "starting 2 worker(s)" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, server.log()


def test_a_worker_that_dies_is_restarted_and_the_others_keep_the_pod_ready(server_factory: Any) -> None:
    """A killed worker's sockets close, so the kernel sends its exporters to the other worker:
    flowd goes on receiving, so /readyz stays 200 while the worker waits out its restart backoff
    (it used to answer 503, taking a one-replica pod out of its Service), and the restart is
    counted."""
    server = server_factory(workers=2)
    server.start()
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    workers = [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    target = ("127.0.0.1", server.ports["netflow"])
    sockets = [sender() for _ in range(16)]
    sent, readiness, restarted = 0, [], False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        readiness.append(server.get("/readyz")[0])
        metrics = server.metrics()
        if metrics.get('flowd_workers{state="ready"}') == 1.0 and sent == 0:
            for ident, sock in enumerate(sockets):  # while one worker is down
                sock.sendto(netflow_v5(ident, records=2), target)
                sent += 1
        restarted = metrics.get("flowd_worker_restarts_total") == 1.0
        if sent and restarted and metrics.get('flowd_workers{state="ready"}') == 2.0:
            break
        time.sleep(0.05)
    assert sent == 16 and restarted, server.log()
    assert set(readiness) == {200}, readiness
    server.wait_received(16)
    assert server.stop() == 0, server.log()
    assert len(server.documents()) == 32
    for sock in sockets:
        sock.close()
