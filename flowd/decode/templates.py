"""Per-exporter template state: templates, parked data sets, sampling tables.

Keyed by (exporter address and port, protocol version, observation domain or source id,
template id), as RFC 7011 section 8 scopes templates to a transport session and domain. Time is
an argument (the datagram's receive time), never read from a clock. Everything the network can
grow is bounded: templates per exporter and in all, parked sets per key and in all (by count and
by bytes).

Parked sets outlive a restart: at shutdown the server writes the ones a worker holds to files
(`take_parked`), and at start every worker loads every such file (`restore_parked`), since the
kernel may now hand the exporter to another worker. A restored set is decoded, or counted lost,
only by the worker that first claims its file (`claim`, a callback the server supplies: the
decoder itself does no I/O); the others let their copies go, so each set is decoded at most once.
Copies nobody claimed yet are only copies: under the caps they are forgotten first, uncounted,
and their file stays for whichever worker needs it, or for the next start.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

from flowd.decode.records import CompiledTemplate, TemplateField
from flowd.decode.template_snapshot import SNAPSHOT_FORMAT, SnapshotCopy, render_snapshot, snapshot_template
from flowd.model import Exporter

TemplateKey = tuple[Exporter, int, int, int]
"""(exporter, version, domain id, template id)."""
DomainKey = tuple[Exporter, int, int]
"""(exporter, version, domain id)."""

TEMPLATE_TTL_S = 86_400.0
MAX_TEMPLATES_PER_EXPORTER = 4_096
MAX_TEMPLATES = 262_144
MAX_FIELDS_PER_EXPORTER = 32_768
"""Fields of one exporter's templates: templates may have up to 512 fields each, and a compiled
field costs about 0.4 KB, so the template count alone let one exporter hold 0.9 GB. Half of
`MAX_LAYOUT_FIELDS`, so that one exporter inventing field lists cannot take them all; room for
1,000 templates of 30 fields (the pps harness's memory measurement holds 1,000 of 17 per exporter)."""
MAX_LAYOUT_FIELDS = 65_536
"""Fields of the distinct field lists held in all (about 28 MB compiled). Templates with the same
field list share one compiled decoder (`compile_template`), so distinct lists are what cost
memory: thousands of exporters sending the same few templates hold a few hundred fields."""
MAX_SAMPLING_ENTRIES = 65_536
"""Sampler and per-interface rates held over every domain. Each domain holds up to 4,096 of each
(`flowsets.MAX_SAMPLERS`), and an exporter may name thousands of domains: one address could make
a worker hold gigabytes of rates without this."""
MAX_PARKED_PER_KEY = 64
MAX_PARKED_SETS = 16_384
MAX_PARKED_BYTES = 32 * 1024 * 1024
"""Bytes of parked set bodies in all. A set may be nearly 64 KiB, so the count alone let 16,384
of them hold a gigabyte; typical sets (about 1.4 KB) reach the count first."""
PARKED_TTL_S = 600.0


@dataclass(slots=True)
class ParkedSet:
    """A data set that arrived before its template, with the header context it needs."""

    body: bytes
    received_at: float
    export_time: int
    sequence: int
    uptime_ms: int | None
    claim: str = ""
    """Restored from a previous run: the file to claim before this worker may decode the set or
    count it lost (empty once claimed, and for sets this run received). One file holds the sets of
    one exporter, under any of its templates."""


def _claim_always(claim: str) -> bool:
    return True


def _never_taken(claim: str) -> bool:
    return False


@dataclass(slots=True)
class TemplateStats:
    added: int = 0
    redefined: int = 0
    withdrawn: int = 0
    expired: int = 0
    rejected_over_cap: int = 0
    sampling_over_cap: int = 0
    """Sampler or interface rates refused: `MAX_SAMPLING_ENTRIES` are held."""
    domains_evicted: int = 0
    """Domains' sampling state let go, oldest first, to make room for a new domain."""
    parked: int = 0
    unparked: int = 0
    parked_dropped: int = 0
    parked_expired: int = 0
    parked_at_shutdown: int = 0
    """Held at shutdown and not persisted (the write failed): lost."""
    parked_persisted: int = 0
    """Held at shutdown and written for the next start."""
    parked_restored: int = 0
    """Persisted by a previous run and claimed by this worker (then unparked, expired or dropped)."""


@dataclass(slots=True)
class _Entry:
    template: CompiledTemplate
    version: int
    seen_at: float


@dataclass(slots=True)
class DomainState:
    """Options data that applies to later flow records of one exporter and domain."""

    sampling_rate: int = 0
    """Exporter-wide rate from options data (0: none announced)."""
    samplers: dict[int, int] = field(default_factory=dict)
    """Sampler or selector id -> rate, from sampler options tables."""
    interface_rates: dict[int, int] = field(default_factory=dict)
    """ifIndex -> rate, from options data scoped to an interface (sampling configured per
    interface): records from that ingress interface that name no sampler take it."""
    rate_sampler: int | None = None
    """The sampler whose rate `sampling_rate` took (the first announced): when that sampler is
    reconfigured, so is the rate of records that name none."""
    system_init_ms: int | None = None
    """IPFIX systemInitTimeMilliseconds, for sysUpTime-relative timestamps."""


class TemplateCache:
    """Templates and related per-domain state for every exporter seen."""

    def __init__(
        self,
        *,
        ttl_s: float = TEMPLATE_TTL_S,
        max_per_exporter: int = MAX_TEMPLATES_PER_EXPORTER,
        max_templates: int = MAX_TEMPLATES,
        max_fields_per_exporter: int = MAX_FIELDS_PER_EXPORTER,
        max_layout_fields: int = MAX_LAYOUT_FIELDS,
        max_parked_per_key: int = MAX_PARKED_PER_KEY,
        max_parked_sets: int = MAX_PARKED_SETS,
        max_parked_bytes: int = MAX_PARKED_BYTES,
        max_sampling_entries: int = MAX_SAMPLING_ENTRIES,
        parked_ttl_s: float = PARKED_TTL_S,
        claim: Callable[[str], bool] = _claim_always,
        claim_taken: Callable[[str], bool] = _never_taken,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_per_exporter = max_per_exporter
        self.max_templates = max_templates
        self.max_fields_per_exporter = max_fields_per_exporter
        self.max_layout_fields = max_layout_fields
        self.max_parked_per_key = max_parked_per_key
        self.max_parked_sets = max_parked_sets
        self.max_parked_bytes = max_parked_bytes
        self.max_sampling_entries = max_sampling_entries
        self.parked_ttl_s = parked_ttl_s
        self.claim = claim
        """True when this worker is the first to claim a restored set's file."""
        self.claim_taken = claim_taken
        """True when another worker has claimed that file: `expire` lets such copies go."""
        self.stats = TemplateStats()
        self._templates: dict[TemplateKey, _Entry] = {}
        self._per_exporter: dict[Exporter, int] = {}
        self._fields_per_exporter: dict[Exporter, int] = {}
        self._layouts: dict[tuple[TemplateField, ...], int] = {}
        """Distinct field lists held -> how many templates have it."""
        self._layout_fields = 0
        """Fields of the distinct field lists held."""
        self._parked: OrderedDict[TemplateKey, list[ParkedSet]] = OrderedDict()
        self._parked_count = 0
        self._parked_bytes = 0
        """Bytes of the bodies of every parked set."""
        self._restored: dict[str, list[TemplateKey]] = {}
        """Files whose sets this worker holds unclaimed -> the keys they are parked under."""
        self.releasable: set[TemplateKey] = set()
        """Keys whose restored sets met a template already known at start (from a snapshot):
        `take_releasable` hands them to the decoder once their exporter's traffic comes."""
        self._domains: dict[DomainKey, DomainState] = {}
        self._sampling_entries = 0
        """Sampler and interface rates held over every domain."""

    def __len__(self) -> int:
        return len(self._templates)

    @property
    def parked_sets(self) -> int:
        return self._parked_count

    @property
    def parked_bytes(self) -> int:
        return self._parked_bytes

    def _unpark(self, sets: Collection[ParkedSet]) -> None:
        """Account for `sets` leaving the parked store."""
        self._parked_count -= len(sets)
        self._parked_bytes -= sum(len(parked.body) for parked in sets)

    def get(self, key: TemplateKey, now: float) -> CompiledTemplate | None:
        entry = self._templates.get(key)
        if entry is None:
            return None
        if now - entry.seen_at > self.ttl_s:
            self._remove(key)
            self.stats.expired += 1
            return None
        return entry.template

    def admits(self, key: TemplateKey, fields: tuple[TemplateField, ...]) -> bool:
        """Whether `put` would take a template of these fields under `key` (checked before it is
        compiled: compiling is the costly part, for time and memory). False is counted."""
        exporter = key[0]
        old = self._templates.get(key)
        if old is not None and old.template.fields == fields:
            return True  # a refresh
        held = 0 if old is None else len(old.template.fields)
        if old is None and (
            self._per_exporter.get(exporter, 0) >= self.max_per_exporter or len(self._templates) >= self.max_templates
        ):
            self.stats.rejected_over_cap += 1
            return False
        new_layout = 0 if fields in self._layouts else len(fields)
        if (
            self._fields_per_exporter.get(exporter, 0) - held + len(fields) > self.max_fields_per_exporter
            or self._layout_fields + new_layout > self.max_layout_fields
        ):
            self.stats.rejected_over_cap += 1
            if old is not None:  # its redefinition is refused: the old one must not go on decoding
                self._remove(key)
            return False
        return True

    def put(self, key: TemplateKey, template: CompiledTemplate, now: float) -> list[ParkedSet] | None:
        """Learn or refresh a template. Returns the parked sets it releases, or None when refused."""
        exporter = key[0]
        old = self._templates.get(key)
        if old is not None and (
            old.template.fields == template.fields
            and old.template.scope_count == template.scope_count
            and old.template.options == template.options
        ):
            old.seen_at = now  # a refresh: keep the compiled decoder
            return self._release(key)
        if not self.admits(key, template.fields):
            return None
        if old is None:
            self._per_exporter[exporter] = self._per_exporter.get(exporter, 0) + 1
            self.stats.added += 1
        else:
            self.stats.redefined += 1
            self._drop_fields(key, old.template.fields)
        self._add_fields(key, template.fields)
        self._templates[key] = _Entry(template, key[1], now)
        return self._release(key)

    def _add_fields(self, key: TemplateKey, fields: tuple[TemplateField, ...]) -> None:
        self._fields_per_exporter[key[0]] = self._fields_per_exporter.get(key[0], 0) + len(fields)
        holders = self._layouts.get(fields, 0)
        if not holders:
            self._layout_fields += len(fields)
        self._layouts[fields] = holders + 1

    def _drop_fields(self, key: TemplateKey, fields: tuple[TemplateField, ...]) -> None:
        left = self._fields_per_exporter.get(key[0], 0) - len(fields)
        if left > 0:
            self._fields_per_exporter[key[0]] = left
        else:
            self._fields_per_exporter.pop(key[0], None)
        holders = self._layouts.get(fields, 0) - 1
        if holders > 0:
            self._layouts[fields] = holders
        else:
            self._layouts.pop(fields, None)
            self._layout_fields -= len(fields)

    def _release(self, key: TemplateKey) -> list[ParkedSet]:
        if key not in self._parked:
            return []
        self._settle(key)
        released = self._parked.pop(key, [])
        self._unpark(released)
        self.stats.unparked += len(released)
        return released

    def take_releasable(
        self, now: float, exporters: Collection[Exporter]
    ) -> list[tuple[TemplateKey, CompiledTemplate, list[ParkedSet]]]:
        """Restored sets whose template was known at start, of the `exporters` this worker has
        just received from (the kernel hands their traffic, and so their templates, to it):
        claimed and released for decoding."""
        released = []
        for key in sorted((k for k in self.releasable if k[0] in exporters), key=repr):
            self.releasable.discard(key)
            template = self.get(key, now)
            if template is not None:
                sets = self._release(key)
                if sets:
                    released.append((key, template, sets))
        return released

    def withdraw(self, key: TemplateKey) -> int:
        """RFC 7011 section 8.1: a template withdrawal; returns how many were removed."""
        if key in self._templates:
            self._remove(key)
            self.stats.withdrawn += 1
            return 1
        return 0

    def withdraw_domain(self, exporter: Exporter, version: int, domain_id: int, options: bool | None) -> int:
        """Withdraw all (options) templates of a domain (template id 2 or 3 with no fields)."""
        doomed = [
            k
            for k, e in self._templates.items()
            if k[0] == exporter
            and k[1] == version
            and k[2] == domain_id
            and (options is None or e.template.is_options == options)
        ]
        for key in doomed:
            self._remove(key)
        self.stats.withdrawn += len(doomed)
        return len(doomed)

    def forget_exporters(self, exporters: set[Exporter]) -> int:
        """Everything of exporters whose transport session ended (IPFIX over TCP: RFC 7011
        section 8 ends its templates with it, and a reconnect comes from another port): their
        templates (counted withdrawn), domain state and parked sets (counted expired: no
        template can come for them). Returns the number of templates removed."""
        if not exporters:
            return 0
        doomed = [key for key in self._templates if key[0] in exporters]
        for key in doomed:
            self._remove(key)
        self.stats.withdrawn += len(doomed)
        for domain in [key for key in self._domains if key[0] in exporters]:
            self._drop_domain(domain)
        for key in [key for key in self._parked if key[0] in exporters]:
            # One file's copies may sit under several of these keys: forgetting it at an earlier
            # key takes the later ones away.
            for claim in {parked.claim for parked in self._parked.get(key, ()) if parked.claim}:
                self._forget(claim)  # another run's copies: their file stays
            queue = self._parked.pop(key, [])
            self._unpark(queue)
            self.stats.parked_expired += sum(1 for parked in queue if not parked.claim)
            self.releasable.discard(key)
        return len(doomed)

    def _remove(self, key: TemplateKey) -> None:
        entry = self._templates.pop(key)
        self._drop_fields(key, entry.template.fields)
        count = self._per_exporter.get(key[0], 1) - 1
        if count:
            self._per_exporter[key[0]] = count
        else:
            self._per_exporter.pop(key[0], None)

    def park(self, key: TemplateKey, parked: ParkedSet) -> bool:
        """Hold a data set until its template arrives; False (and counted) when over the caps."""
        queue = self._parked.get(key)
        if queue is not None and len(queue) >= self.max_parked_per_key:
            self._settle(key)  # this worker gets the exporter: its restored copies are its own now
            queue = self._parked.get(key)
            if queue is not None and len(queue) >= self.max_parked_per_key:
                self._unpark((queue.pop(0),))
                self.stats.parked_dropped += 1
        size = len(parked.body)
        while (
            self._parked_count >= self.max_parked_sets or self._parked_bytes + size > self.max_parked_bytes
        ) and self._parked:
            self._make_room()
        if key not in self._parked and len(self._parked) >= self.max_parked_sets:
            self.stats.parked_dropped += 1
            return False
        self._parked.setdefault(key, []).append(parked)
        self._parked_count += 1
        self._parked_bytes += size
        self.stats.parked += 1
        return True

    def _make_room(self) -> None:
        """Forget the oldest file's unclaimed copies (the file stays), else drop the oldest set."""
        claim = next(iter(self._restored), None)
        if claim is not None:
            self._forget(claim)
            return
        oldest_key = next(iter(self._parked))
        oldest = self._parked[oldest_key]
        if oldest:
            self._unpark((oldest.pop(0),))
            self.stats.parked_dropped += 1
        if not oldest:
            del self._parked[oldest_key]

    def _settle(self, key: TemplateKey) -> None:
        """Decide every restored set parked under `key` (see `_resolve`)."""
        for claim in {parked.claim for parked in self._parked.get(key, ()) if parked.claim}:
            self._resolve(claim)

    def _resolve(self, claim: str) -> None:
        """Claiming a file makes all its sets this worker's, under whichever key; a file another
        worker claimed takes its copies away."""
        if claim not in self._restored:
            return
        if self.claim(claim):
            for held_key in self._restored.pop(claim):
                for parked in self._parked.get(held_key, ()):
                    if parked.claim == claim:
                        parked.claim = ""
                        self.stats.parked_restored += 1
        else:
            self._forget(claim)

    def _forget(self, claim: str) -> None:
        """Let go of this worker's copies of a file's sets, uncounted: they are not its to count."""
        for key in self._restored.pop(claim, ()):
            queue = self._parked.get(key)
            if queue is None:
                continue
            kept = [parked for parked in queue if parked.claim != claim]
            self._unpark([parked for parked in queue if parked.claim == claim])
            if kept:
                self._parked[key] = kept
            else:
                del self._parked[key]
                self.releasable.discard(key)

    def let_go_of_claimed(self) -> None:
        """Let go of the copies of files another worker has claimed (it decoded or counted their
        sets): one check per file held."""
        for claim in [claim for claim in self._restored if self.claim_taken(claim)]:
            self._forget(claim)

    def waiting_sets(self, *, with_copies: bool) -> int:
        """Data sets waiting for their templates: this worker's own, and with `with_copies` the
        restored ones no worker has claimed yet. Every worker holds a copy of those, so one
        worker alone must report them, or a gauge summed over workers counts each set N times."""
        if with_copies:
            return self._parked_count
        return sum(1 for queue in self._parked.values() for parked in queue if not parked.claim)

    def expire(self, now: float) -> int:
        """Drop templates past their TTL and parked sets past theirs; returns the number dropped."""
        stale = [k for k, e in self._templates.items() if now - e.seen_at > self.ttl_s]
        for key in stale:
            self._remove(key)
        self.stats.expired += len(stale)
        self.let_go_of_claimed()
        ttl = self.parked_ttl_s
        for claim, keys in list(self._restored.items()):
            # A file is claimed to count its sets expired only once every one of them is: a set
            # still in time may yet meet its template in the worker that gets the exporter.
            copies = [parked for key in keys for parked in self._parked.get(key, ()) if parked.claim == claim]
            if copies and all(now - parked.received_at > ttl for parked in copies):
                self._resolve(claim)
        dropped = 0
        for key in list(self._parked):
            queue = self._parked.get(key, [])
            if all(now - parked.received_at <= ttl for parked in queue):
                continue
            kept = [parked for parked in queue if parked.claim or now - parked.received_at <= ttl]
            dropped += len(queue) - len(kept)
            self._unpark([parked for parked in queue if not parked.claim and now - parked.received_at > ttl])
            if kept:
                self._parked[key] = kept
            elif key in self._parked:
                del self._parked[key]
        self.stats.parked_expired += dropped
        return len(stale) + dropped

    def take_parked(self) -> dict[TemplateKey, list[ParkedSet]]:
        """At shutdown: hand over every parked set this worker holds as its own, for the caller to
        persist (`count_shutdown`). Restored sets no worker has claimed are left out: their files
        stay for the next start."""
        taken: dict[TemplateKey, list[ParkedSet]] = {}
        for key, queue in self._parked.items():
            own = [parked for parked in queue if not parked.claim]
            if own:
                taken[key] = own
        self._parked.clear()
        self._parked_count = 0
        self._parked_bytes = 0
        self._restored.clear()
        self.releasable.clear()
        return taken

    def count_shutdown(self, persisted: int, lost: int) -> None:
        self.stats.parked_persisted += persisted
        self.stats.parked_at_shutdown += lost

    def restore_parked(self, claim: str, entries: list[tuple[TemplateKey, list[ParkedSet]]]) -> int:
        """Hold the sets of one file a previous run persisted, all of them or, when the caps leave
        no room for all, none (the file stays for a later start); returns how many are held.
        Meant for the start, before anything is parked: files come oldest first and are the
        first to make room. The per-key cap does not apply to them: it bounds what an exporter
        sends, and a file holds no more than a run let it park. Counted only once claimed."""
        total = sum(len(sets) for _, sets in entries)
        size = sum(len(parked.body) for _, sets in entries for parked in sets)
        keys = list(dict.fromkeys(key for key, sets in entries if sets))
        new_keys = sum(1 for key in keys if key not in self._parked)
        if not total or self._parked_count + total > self.max_parked_sets:
            return 0
        if self._parked_bytes + size > self.max_parked_bytes:
            return 0
        if len(self._parked) + new_keys > self.max_parked_sets or claim in self._restored:
            return 0
        for key, sets in entries:
            if not sets:
                continue
            queue = self._parked.setdefault(key, [])
            own = next((i for i, parked in enumerate(queue) if not parked.claim), len(queue))
            for parked in sets:
                parked.claim = claim
            queue[own:own] = sets  # older than anything this run parks
            if key in self._templates:
                self.releasable.add(key)
        self._restored[claim] = keys
        self._parked_count += total
        self._parked_bytes += size
        return total

    def domain(self, key: DomainKey) -> DomainState:
        state = self._domains.get(key)
        if state is None:
            if len(self._domains) >= self.max_templates:  # the oldest domain's state makes room
                self._drop_domain(next(iter(self._domains)))
                self.stats.domains_evicted += 1
            state = self._domains[key] = DomainState()
        return state

    def _drop_domain(self, key: DomainKey) -> None:
        state = self._domains.pop(key)
        self._sampling_entries -= len(state.samplers) + len(state.interface_rates)

    def take_sampling_entry(self) -> bool:
        """Room for one more sampler or interface rate over every domain (counted when there is none)."""
        if self._sampling_entries >= self.max_sampling_entries:
            self.stats.sampling_over_cap += 1
            return False
        self._sampling_entries += 1
        return True

    def peek_domain(self, key: DomainKey) -> DomainState | None:
        return self._domains.get(key)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of every template and domain state, for restore after a restart."""
        return render_snapshot(self.capture())

    def capture(self) -> SnapshotCopy:
        """What `snapshot` holds, copied in one cheap pass (about 40 ms at 262,144 templates) so
        that the event loop can hand the slow part, `render_snapshot`, to a thread: templates are
        immutable and shared, so only references and the mutable domain tables are copied."""
        templates = [(key, entry.template, entry.seen_at) for key, entry in self._templates.items()]
        domains = [
            (key, replace(state, samplers=dict(state.samplers), interface_rates=dict(state.interface_rates)))
            for key, state in self._domains.items()
        ]
        return SnapshotCopy(templates, domains)

    def restore(self, snapshot: dict[str, Any]) -> int:
        """Load a snapshot; returns the number of templates it added. Every worker loads every
        worker's snapshot, so a key may come several times: the most recently seen definition wins
        (an exporter that moved between workers redefined it in the newer snapshot). Restoring is not
        traffic: the template event counters stay as they were."""
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            return 0
        counted = replace(self.stats)
        known = len(self._templates)
        for item in snapshot.get("templates", []):
            exporter = (str(item["exporter"][0]), int(item["exporter"][1]))
            version = int(item["version"])
            key = (exporter, version, int(item["domain"]), int(item["id"]))
            seen_at = float(item["seen_at"])
            existing = self._templates.get(key)
            if existing is not None and existing.seen_at >= seen_at:
                continue
            self.put(key, snapshot_template(item), seen_at)
        restored = len(self._templates) - known
        self.stats = counted
        for item in snapshot.get("domains", []):
            exporter = (str(item["exporter"][0]), int(item["exporter"][1]))
            state = self.domain((exporter, int(item["version"]), int(item["domain"])))
            state.sampling_rate = int(item["sampling_rate"])
            self._sampling_entries -= len(state.samplers) + len(state.interface_rates)
            # Every worker loads every worker's snapshot: only what `max_sampling_entries` leaves room for.
            room = max(0, self.max_sampling_entries - self._sampling_entries)
            state.samplers = {int(k): int(v) for k, v in item["samplers"][:room]}
            room -= len(state.samplers)
            rate_sampler = item.get("rate_sampler")  # absent from earlier snapshots
            state.rate_sampler = int(rate_sampler) if rate_sampler is not None else None
            state.interface_rates = {int(k): int(v) for k, v in item.get("interface_rates", [])[:room]}
            self._sampling_entries += len(state.samplers) + len(state.interface_rates)
            state.system_init_ms = item["system_init_ms"]
        return restored
