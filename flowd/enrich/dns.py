"""Reverse DNS for exporters and flow endpoints, without ever stalling the pipeline.

A batch asks `resolve_many` for its distinct addresses. Cached names (hit cache) and cached
failures (failed cache, with its own size and TTL, as ElastiFlow's Logstash `dns` filter keeps
them) answer at once. First-seen addresses start a lookup task through dnspython's async resolver,
bounded by a semaphore (concurrency) and by a cap on queued lookups; the batch waits for them at
most `deadline_s` in total, then goes out without the names still missing (counted). Lookups
left running finish in the background and fill the caches for later batches.

PTR answers come from whoever controls the reverse zone, so they are hostile input (design.md
section 7): a name enters a document only if every label is LDH (RFC 1123 section 2.1, RFC 952),
at most 63 octets, and the whole name at most 253 characters. Anything else is counted and
cached as a failure.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from flowd.config import EnrichSettings
from flowd.config_values import parse_nameserver
from flowd.enrich.cache import Clock, TtlLruCache
from flowd.errors import ConfigError

log = logging.getLogger(__name__)

MAX_LABEL_OCTETS = 63
MAX_NAME_CHARS = 253
MAX_PENDING_LOOKUPS = 10_000
"""Lookups queued or running at once; first-seen addresses beyond it wait for a later batch."""

_LDH_LABEL = re.compile(rb"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


def hostname_from_name(name: dns.name.Name) -> str | None:
    """The PTR target as a lower-case hostname without the final dot, or None if it is not a valid hostname."""
    labels = name.labels
    if labels and labels[-1] == b"":
        labels = labels[:-1]
    return _hostname_from_labels(labels)


def validate_hostname(text: str) -> str | None:
    """The same check for a name given as text (one trailing dot is allowed)."""
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        return None
    if raw.endswith(b"."):
        raw = raw[:-1]
    return _hostname_from_labels(raw.split(b".")) if raw else None


def _hostname_from_labels(labels: tuple[bytes, ...] | list[bytes]) -> str | None:
    if not labels:
        return None
    length = len(labels) - 1
    for label in labels:
        if len(label) > MAX_LABEL_OCTETS or not _LDH_LABEL.match(label):
            return None
        length += len(label)
    if length > MAX_NAME_CHARS or labels[-1].isdigit():
        return None  # RFC 1123 2.1: a host name never looks like a dotted-decimal address
    return b".".join(labels).decode("ascii").lower()


class ReverseDnsResolver:
    """PTR lookups with a hit cache, a failed cache, bounded concurrency and a per-batch deadline."""

    def __init__(
        self,
        nameservers: list[str],
        *,
        timeout_s: float = 2.0,
        deadline_s: float = 0.05,
        concurrency: int = 64,
        hit_cache_size: int = 25_000,
        hit_cache_ttl_s: float = 900.0,
        failed_cache_size: int = 75_000,
        failed_cache_ttl_s: float = 3_600.0,
        max_pending: int = MAX_PENDING_LOOKUPS,
        clock: Clock = time.monotonic,
    ) -> None:
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(ns)) for ns in nameservers]
        else:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration as error:
                raise ConfigError(f"enrich.nameservers: empty and the system has no resolver: {error}") from error
        resolver.timeout = timeout_s
        resolver.lifetime = timeout_s
        resolver.retry_servfail = False
        self._resolver = resolver
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.max_pending = max_pending
        self._clock = clock
        self._semaphore = asyncio.Semaphore(max(1, concurrency))
        self._inflight: dict[str, asyncio.Task[str | None]] = {}
        self._batch_ends: float | None = None
        """When the current batch stops waiting for names (`begin_batch`); None: each call waits
        `deadline_s` for all it asked."""
        self._batch_tasks: set[asyncio.Task[str | None]] = set()
        """Lookups the current batch started: the only ones it waits for."""
        self.hit_cache: TtlLruCache[str, str] = TtlLruCache(hit_cache_size, hit_cache_ttl_s, clock, "dns_hit_cache")
        self.failed_cache: TtlLruCache[str, bool] = TtlLruCache(
            failed_cache_size, failed_cache_ttl_s, clock, "dns_failed_cache"
        )
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "dns_queries",
                "dns_answers",
                "dns_nxdomain",
                "dns_no_answer",
                "dns_timeouts",
                "dns_errors",
                "dns_invalid_names",
                "dns_deadline_misses",
                "dns_overload_skipped",
            ),
            0,
        )

    @classmethod
    def from_settings(cls, settings: EnrichSettings, clock: Clock = time.monotonic) -> ReverseDnsResolver:
        return cls(
            settings.nameservers,
            timeout_s=settings.dns_timeout_s,
            deadline_s=settings.dns_deadline_ms / 1000.0,
            concurrency=settings.dns_concurrency,
            hit_cache_size=settings.dns_hit_cache_size,
            hit_cache_ttl_s=settings.dns_hit_cache_ttl_s,
            failed_cache_size=settings.dns_failed_cache_size,
            failed_cache_ttl_s=settings.dns_failed_cache_ttl_s,
            clock=clock,
        )

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def begin_batch(self) -> None:
        """A worker's batch starts: all its tables together wait at most `deadline_s` for names,
        and only for lookups the batch itself started (one still running from an earlier batch
        is a miss, as an uncached address is)."""
        self._batch_ends = asyncio.get_running_loop().time() + self.deadline_s
        self._batch_tasks = set()

    async def resolve_many(self, addresses: Iterable[str]) -> dict[str, str]:
        """Names for those of `addresses` that resolve within the deadline (or are cached)."""
        names: dict[str, str] = {}
        waiting: dict[asyncio.Task[str | None], str] = {}
        now = self._clock()
        for address in addresses:
            name = self.hit_cache.get(address, now)
            if name is not None:
                names[address] = name
                continue
            if self.failed_cache.get(address, now) is not None:
                continue
            task = self._inflight.get(address)
            if task is None:
                if len(self._inflight) >= self.max_pending:
                    self.counters["dns_overload_skipped"] += 1
                    continue
                task = asyncio.get_running_loop().create_task(self._lookup(address))
                self._inflight[address] = task
                self._batch_tasks.add(task)
            waiting[task] = address
        if not waiting:
            return names
        done: set[asyncio.Task[str | None]] = {task for task in waiting if task.done()}
        timeout = self.deadline_s
        wanted: Iterable[asyncio.Task[str | None]] = waiting
        if self._batch_ends is not None:
            timeout = self._batch_ends - asyncio.get_running_loop().time()
            wanted = [task for task in waiting if task in self._batch_tasks and not task.done()]
        if timeout > 0 and wanted:
            # asyncio.wait neither cancels nor raises: late lookups keep running and fill the cache.
            finished, _ = await asyncio.wait(wanted, timeout=timeout)
            done |= finished
        for task, address in waiting.items():
            if task in done and not task.cancelled():
                name = task.result()
                if name is not None:
                    names[address] = name
                    continue
                # Resolved to nothing: a failure, not a deadline miss.
                continue
            self.counters["dns_deadline_misses"] += 1
        return names

    async def _lookup(self, address: str) -> str | None:
        try:
            async with self._semaphore:
                name = await self._query(address)
        finally:
            self._inflight.pop(address, None)
        now = self._clock()
        if name is None:
            self.failed_cache.put(address, True, now)
        else:
            self.hit_cache.put(address, name, now)
        return name

    async def _query(self, address: str) -> str | None:
        counters = self.counters
        try:
            qname = dns.reversename.from_address(address)
        except (dns.exception.SyntaxError, ValueError):
            counters["dns_errors"] += 1
            return None
        counters["dns_queries"] += 1
        try:
            answer = await self._resolver.resolve(
                qname, dns.rdatatype.PTR, lifetime=self.timeout_s, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            counters["dns_nxdomain"] += 1
            return None
        except dns.exception.Timeout:
            counters["dns_timeouts"] += 1
            return None
        except dns.exception.DNSException as error:
            # NoNameservers (SERVFAIL, REFUSED, malformed replies), YXDOMAIN and the like.
            counters["dns_errors"] += 1
            log.debug("reverse lookup of %s failed: %s", address, error)
            return None
        except OSError as error:
            counters["dns_errors"] += 1
            log.debug("reverse lookup of %s failed: %s", address, error)
            return None
        rrset = answer.rrset
        if rrset is None or len(rrset) == 0:
            counters["dns_no_answer"] += 1
            return None
        for rdata in rrset:
            name = hostname_from_name(rdata.target)
            if name is not None:
                counters["dns_answers"] += 1
                return name
        counters["dns_invalid_names"] += 1
        return None

    def stats(self) -> dict[str, int]:
        return {
            **self.counters,
            "dns_inflight": len(self._inflight),
            **self.hit_cache.stats(),
            **self.failed_cache.stats(),
        }

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._inflight.clear()
