"""Reverse DNS against a real dnsmasq, a resolver that never answers, and a hostile responder."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from flowd.config import EnrichSettings
from flowd.enrich.chain import EnrichmentChain
from flowd.enrich.dns import ReverseDnsResolver, validate_hostname

DNSMASQ = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None)

HOSTS = {
    "192.0.2.10": "exporter-1.example.test",
    "198.51.100.20": "web.example.test",
    "203.0.113.30": "db.example.test",
    "2001:db8::10": "v6host.example.test",
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def dnsmasq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A dnsmasq on 127.0.0.1:<free port> serving PTRs for HOSTS and NXDOMAIN for other reverse names."""
    if DNSMASQ is None:
        pytest.skip("dnsmasq is not installed (apt package dnsmasq-base)")
    directory = tmp_path_factory.mktemp("dnsmasq")
    hosts = directory / "hosts"
    hosts.write_text("".join(f"{address} {name}\n" for address, name in HOSTS.items()))
    hosts.chmod(0o644)
    directory.chmod(0o755)
    for _attempt in range(5):
        port = free_udp_port()
        process = subprocess.Popen(
            [
                DNSMASQ,
                "--no-daemon",
                f"--port={port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                f"--addn-hosts={hosts}",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--user=root",
                # Answer unknown reverse names authoritatively with NXDOMAIN instead of forwarding them.
                "--local=/in-addr.arpa/",
                "--local=/ip6.arpa/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if _wait_until_serving(port, process):
            break
        process.kill()
        process.wait()
    else:
        pytest.fail("dnsmasq did not start")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=5)


def _wait_until_serving(port: int, process: subprocess.Popen[bytes]) -> bool:
    query = dns.message.make_query("10.2.0.192.in-addr.arpa.", dns.rdatatype.PTR).to_wire()
    deadline = time.monotonic() + 5.0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            probe.sendto(query, ("127.0.0.1", port))
            try:
                probe.recvfrom(4096)
                return True
            except OSError:
                continue
    return False


def make_resolver(nameserver: str, clock: Callable[[], float] = time.monotonic, **options: Any) -> ReverseDnsResolver:
    settings: dict[str, Any] = {
        "timeout_s": 2.0,
        "deadline_s": 2.0,
        "hit_cache_ttl_s": 60.0,
        "failed_cache_ttl_s": 30.0,
    }
    settings.update(options)
    return ReverseDnsResolver([nameserver], clock=clock, **settings)


async def test_names_from_dnsmasq_and_hit_cache(dnsmasq: str) -> None:
    resolver = make_resolver(dnsmasq)
    names = await resolver.resolve_many(HOSTS)
    assert names == HOSTS
    stats = resolver.stats()
    assert stats["dns_queries"] == len(HOSTS)
    assert stats["dns_answers"] == len(HOSTS)
    assert stats["dns_hit_cache_size"] == len(HOSTS)

    assert await resolver.resolve_many(HOSTS) == HOSTS
    stats = resolver.stats()
    assert stats["dns_queries"] == len(HOSTS)  # served from the hit cache
    assert stats["dns_hit_cache_hits"] == len(HOSTS)
    await resolver.close()


async def test_nxdomain_goes_to_the_failed_cache(dnsmasq: str) -> None:
    resolver = make_resolver(dnsmasq)
    assert await resolver.resolve_many(["192.0.2.99", "2001:db8::99"]) == {}
    stats = resolver.stats()
    assert stats["dns_nxdomain"] == 2
    assert stats["dns_failed_cache_size"] == 2
    assert stats["dns_hit_cache_size"] == 0
    assert stats["dns_deadline_misses"] == 0

    assert await resolver.resolve_many(["192.0.2.99"]) == {}
    stats = resolver.stats()
    assert stats["dns_queries"] == 2  # no new query: the failure is cached
    assert stats["dns_failed_cache_hits"] == 1
    await resolver.close()


async def test_cache_entries_expire_after_their_ttl(dnsmasq: str) -> None:
    clock = FakeClock()
    resolver = make_resolver(dnsmasq, clock, hit_cache_ttl_s=60.0, failed_cache_ttl_s=30.0)
    await resolver.resolve_many(["198.51.100.20", "198.51.100.99"])
    assert resolver.stats()["dns_queries"] == 2

    clock.now += 31.0  # the failure has expired, the hit has not
    assert await resolver.resolve_many(["198.51.100.20", "198.51.100.99"]) == {"198.51.100.20": "web.example.test"}
    assert resolver.stats()["dns_queries"] == 3

    clock.now += 30.0  # now the hit too (61 s after it was stored)
    assert await resolver.resolve_many(["198.51.100.20"]) == {"198.51.100.20": "web.example.test"}
    stats = resolver.stats()
    assert stats["dns_queries"] == 4
    assert stats["dns_hit_cache_expirations"] == 1
    assert stats["dns_failed_cache_expirations"] == 2  # the second failure (stored at +31) expired at +61 too
    await resolver.close()


async def test_bounded_caches_evict(dnsmasq: str) -> None:
    resolver = make_resolver(dnsmasq, hit_cache_size=2)
    await resolver.resolve_many(["192.0.2.10", "198.51.100.20", "203.0.113.30"])
    stats = resolver.stats()
    assert stats["dns_hit_cache_size"] == 2
    assert stats["dns_hit_cache_evictions"] == 1
    await resolver.close()


async def test_chain_fills_observer_and_endpoint_names(dnsmasq: str) -> None:
    def documents() -> list[dict[str, Any]]:
        return [
            {"observer.ip": "192.0.2.10", "source.ip": "198.51.100.20", "destination.ip": "203.0.113.30"},
            {"observer.ip": "192.0.2.10", "source.ip": "198.51.100.99", "destination.ip": "198.51.100.20"},
        ]

    for mode, expect_exporter, expect_endpoints in (
        ("true", True, True),
        ("exporters", True, False),
        ("endpoints", False, True),
        ("false", False, False),
    ):
        settings = EnrichSettings(resolve_ip2host=mode, nameservers=[dnsmasq], dns_deadline_ms=2000, oui_lookup=False)
        chain = EnrichmentChain(settings)
        batch = documents()
        await chain.enrich(batch)
        first, second = batch
        if expect_exporter:
            assert first["observer.hostname"] == "exporter-1.example.test"
        else:
            assert "observer.hostname" not in first
        if expect_endpoints:
            assert first["source.domain"] == "web.example.test"
            assert first["destination.domain"] == "db.example.test"
            assert "source.domain" not in second  # NXDOMAIN
            assert second["destination.domain"] == "web.example.test"
        else:
            assert "source.domain" not in first and "destination.domain" not in first
        hosts = [first.get(k) for k in ("observer.hostname", "source.domain", "destination.domain")]
        assert first.get("related.hosts", []) == [h for h in hosts if h]
        await chain.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A UDP socket that reads queries and never answers."""
    received: list[bytes] = []

    class Silent(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            received.append(data)

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Silent, local_addr=("127.0.0.1", 0))
    host, port = transport.get_extra_info("sockname")[:2]
    try:
        yield f"{host}:{port}"
    finally:
        transport.close()
    assert received, "the resolver never queried the silent server"


async def test_silent_resolver_cannot_hold_a_batch_past_the_deadline(silent_server: str) -> None:
    settings = EnrichSettings(
        resolve_ip2host="true",
        nameservers=[silent_server],
        dns_deadline_ms=100,
        dns_timeout_s=0.6,
        oui_lookup=False,
    )
    chain = EnrichmentChain(settings)
    batch = [
        {"observer.ip": "192.0.2.1", "source.ip": f"198.51.100.{i}", "destination.ip": "203.0.113.5"} for i in range(20)
    ]
    started = time.monotonic()
    await chain.enrich(batch)
    elapsed = time.monotonic() - started
    assert elapsed < 0.4, f"batch held {elapsed:.3f} s"
    assert all("source.domain" not in d and "observer.hostname" not in d for d in batch)
    assert all(d["network.direction"] == "external" for d in batch)  # the rest of the chain ran
    resolver = chain.resolver
    assert resolver is not None
    stats = resolver.stats()
    assert stats["dns_deadline_misses"] == 22
    assert stats["dns_inflight"] == 22  # still running in the background

    # A second batch with the same addresses does not start new lookups, and also waits at most the deadline.
    started = time.monotonic()
    await chain.enrich([dict(d) for d in batch])
    assert time.monotonic() - started < 0.4
    assert resolver.stats()["dns_queries"] == 22

    # The lookups time out in the background and land in the failed cache.
    await asyncio.sleep(0.9)
    stats = resolver.stats()
    assert stats["dns_inflight"] == 0
    assert stats["dns_timeouts"] == 22
    assert stats["dns_failed_cache_size"] == 22
    await chain.close()


async def test_a_batch_of_many_tables_waits_one_deadline_in_all(silent_server: str, monkeypatch: Any) -> None:
    """Found by an audit: each table of a batch waited the whole deadline (a batch of 32 template
    layouts was held 1.7 s by a silent server), and again for lookups earlier batches started.
    The waits are recorded rather than timed: their timeouts add up to one deadline per batch."""
    from flowd.enrich import dns as dns_module
    from flowd.output.table import DocumentTable

    timeouts: list[float] = []
    real_wait = asyncio.wait

    async def recorded_wait(tasks: Any, timeout: float | None = None) -> Any:
        timeouts.append(float(timeout or 0.0))
        return await real_wait(tasks, timeout=timeout)

    monkeypatch.setattr(dns_module.asyncio, "wait", recorded_wait)
    settings = EnrichSettings(
        resolve_ip2host="true", nameservers=[silent_server], dns_deadline_ms=100, dns_timeout_s=5.0, oui_lookup=False
    )
    chain = EnrichmentChain(settings)

    def tables(first: int) -> list[DocumentTable]:
        made = []
        for t in range(8):  # eight template layouts' tables of one batch
            table = DocumentTable(1)
            table.add("observer.ip", ["192.0.2.1"])
            table.add("source.ip", [f"198.51.100.{first + t}"])
            table.add("destination.ip", ["203.0.113.5"])
            made.append(table)
        return made

    chain.begin_batch()
    for table in tables(1):
        await chain.enrich_table(table)
    assert 0.09 <= sum(timeouts) <= 0.15 and timeouts[0] >= 0.09  # the first waits, the rest share what is left
    timeouts.clear()
    chain.begin_batch()  # the same addresses: their lookups still run, started by the batch before
    for table in tables(1):
        await chain.enrich_table(table)
    assert timeouts == []
    await chain.close()


async def test_pending_lookups_are_bounded(silent_server: str) -> None:
    resolver = ReverseDnsResolver([silent_server], timeout_s=0.5, deadline_s=0.0, concurrency=2, max_pending=5)
    assert await resolver.resolve_many([f"198.51.100.{i}" for i in range(12)]) == {}
    await asyncio.sleep(0.05)  # let the first lookups reach the server
    stats = resolver.stats()
    assert stats["dns_inflight"] == 5
    assert stats["dns_overload_skipped"] == 7
    await resolver.close()
    assert resolver.stats()["dns_inflight"] == 0


# -- hostile answers -----------------------------------------------------------------------

HOSTILE = {
    "192.0.2.1": [b"bad\x07bell", b"example", b""],
    "192.0.2.2": [b"line\nbreak", b"example", b""],
    "192.0.2.3": [b"<script>", b"example", b""],
    "192.0.2.4": [b"-leading", b"example", b""],
    "192.0.2.5": [b"under_score", b"example", b""],
    "192.0.2.6": ["caf\u00e9".encode(), b"example", b""],
    "192.0.2.7": [b"a" * 63] * 3 + [b"b" * 61, b""],  # 253 characters: still valid
    "192.0.2.8": [b"trailing-", b"example", b""],  # (no wire name can exceed 253 characters: 255 octets)
    "192.0.2.9": [b"sp ace", b"example", b""],
    "192.0.2.10": [b"Good-Name", b"Example", b"test", b""],
}
VALID = {"192.0.2.7": ".".join(["a" * 63] * 3 + ["b" * 61]), "192.0.2.10": "good-name.example.test"}
OVERLONG_LABEL = "192.0.2.11"
"""Answered with a 64-octet label, which no DNS message may hold (RFC 1035 section 2.3.4)."""


def _reverse_to_address(qname: dns.name.Name) -> str:
    from dns.reversename import to_address

    return to_address(qname)


class HostileResponder(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        address = _reverse_to_address(question.name)
        response = dns.message.make_response(query)
        if address == OVERLONG_LABEL:
            target = dns.name.Name([b"a" * 63, b"evil", b""])
        elif address in HOSTILE:
            target = dns.name.Name(HOSTILE[address])
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
            self.transport.sendto(response.to_wire(), addr)
            return
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.PTR, "placeholder.").replace(target=target)
        rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, dns.rdatatype.PTR)
        rrset.add(rdata, 60)
        response.answer.append(rrset)
        wire = response.to_wire()
        if address == OVERLONG_LABEL:
            start = wire.index(b"\x3f" + b"a" * 63)
            rdlength = int.from_bytes(wire[start - 2 : start], "big")
            wire = wire[: start - 2] + (rdlength + 1).to_bytes(2, "big") + b"\x40" + b"a" * 64 + wire[start + 64 :]
        self.transport.sendto(wire, addr)


@pytest.fixture
async def hostile_server() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(HostileResponder, local_addr=("127.0.0.1", 0))
    host, port = transport.get_extra_info("sockname")[:2]
    try:
        yield f"{host}:{port}"
    finally:
        transport.close()


async def test_hostile_ptr_answers_never_reach_a_document(hostile_server: str) -> None:
    settings = EnrichSettings(
        resolve_ip2host="endpoints", nameservers=[hostile_server], dns_deadline_ms=2000, dns_timeout_s=0.3
    )
    chain = EnrichmentChain(settings, oui=None)
    addresses = [*HOSTILE, OVERLONG_LABEL]
    batch = [{"source.ip": address, "destination.ip": "198.51.100.1"} for address in addresses]
    await chain.enrich(batch)
    for document in batch:
        expected = VALID.get(document["source.ip"])
        assert document.get("source.domain") == expected, document["source.ip"]
        if expected is None:
            assert "related.hosts" not in document
    resolver = chain.resolver
    assert resolver is not None
    stats = resolver.stats()
    assert stats["dns_invalid_names"] == len(HOSTILE) - len(VALID)
    # The message with the 64-octet label does not parse; dnspython drops it as it would a spoofed
    # reply and waits for a good one until the timeout.
    assert stats["dns_timeouts"] == 1
    assert stats["dns_nxdomain"] == 1  # the destination
    assert stats["dns_failed_cache_size"] == len(HOSTILE) - len(VALID) + 2
    await chain.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Host.Example.COM.", "host.example.com"),
        ("a-b.c", "a-b.c"),
        ("x", "x"),
        ("", None),
        (".", None),
        ("a..b", None),
        ("a.-b", None),
        ("a.b-", None),
        ("tab\there", None),
        ("null\x00", None),
        ("ünï.example", None),
        ("a" * 64 + ".example", None),
        (".".join(["a" * 63] * 4), None),
        ("8.8.8.8.", None),  # a PTR target dressed as another address (RFC 1123 2.1)
        ("host.123", None),
        ("1.2.3.4.in-addr.arpa.", "1.2.3.4.in-addr.arpa"),
        ("123.example", "123.example"),
    ],
)
def test_validate_hostname(text: str, expected: str | None) -> None:
    assert validate_hostname(text) == expected
