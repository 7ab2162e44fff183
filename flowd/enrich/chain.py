"""The enrichment chain: every enricher applied to a table of flat ECS documents, in place.

It works on `flowd.output.table` tables: a decoded data set as columns (`DocumentTable`, what
`flowd run` writes as NDJSON) or documents that are dicts already (`DocumentsView`: sFlow,
`flowd decode --enrich`), one implementation for both. This module orchestrates: it owns the
components and runs them in order over each table, per distinct value. Each distinct address is
looked up once per table (address facts, GeoIP/ASN: `address_ends.py`; reverse DNS: `dns.py`),
each distinct MAC, port and interface once. Direction and the Community ID (its input built in
numpy, one SHA-1 per flow: `community_id_column.py`) are computed for all rows at once, and
`network.application` by `applications.py`. Reverse DNS runs last and waits at most
`dns_deadline_ms` for first-seen addresses, so the rest of the chain never waits on the network.

Fields written (design.md section 4): `source.geo.*` (`geo.name` from the operator's named
networks), `source.as.*` (and `destination.*`), `flowd.source_address_class`/
`flowd.destination_address_class`, `network.direction`, `flow.locality`, `network.community_id`,
`network.application`, `network.transport` (name for a bare protocol number), `observer.hostname`,
`observer.name` (configured per exporter), `source.domain`/`destination.domain`, `related.ip`,
`related.hosts`, `observer.ingress/egress.interface.name` (and `.alias` from the interface
description), `flowd.source_mac_vendor`/`flowd.destination_mac_vendor`; and where the operator
configured an exporter's sampling rate, `flowd.sampling_rate` and the totals scaled by it
(`sampling.py`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.config import EnrichSettings
from flowd.config_values import parse_network_names, parse_networks
from flowd.decode.memo import MEMO_CLEARS
from flowd.enrich.address_ends import AddressEnds, End
from flowd.enrich.addresses import AddressClassifier, PrefixMap
from flowd.enrich.applications import ApplicationNamer, parse_endpoint_applications
from flowd.enrich.cache import Clock
from flowd.enrich.columns import distinct_pairs, factorized
from flowd.enrich.community_id import seed_bytes
from flowd.enrich.community_id_column import community_id_column
from flowd.enrich.dns import ReverseDnsResolver
from flowd.enrich.geoip import GeoIpLookup
from flowd.enrich.interfaces import InterfaceNames, parse_configured_names
from flowd.enrich.oui import OuiRegistry, load_registry
from flowd.enrich.sampling import SamplingRates
from flowd.enrich.services import ApplicationTable, ServiceNames
from flowd.errors import ConfigError
from flowd.output.table import DocumentsView, FieldGroup, Table

Document = dict[str, Any]

RESOLVE_MODES = ("false", "true", "exporters", "endpoints")
RELOADABLE_KEYS = (
    "internal_networks",
    "network_names",
    "exporter_names",
    "interface_names",
    "endpoint_applications",
    "sampling_rates",
    "default_sampling_rates",
)
"""The `[enrich]` tables a running collector takes on SIGHUP (`reload_tables`); other keys need a restart."""
OPTIONS_ACTION = "netflow_options"
_NOT_RESOLVED = frozenset(("invalid", "unspecified", "multicast", "broadcast"))
_DIRECTIONS = {
    (True, True): ("internal", "internal"),
    (True, False): ("outbound", "external"),
    (False, True): ("inbound", "external"),
    (False, False): ("external", "external"),
}


_DIRECTION_GROUPS = [
    FieldGroup({"network.direction": direction, "flow.locality": locality})
    for direction, locality in (
        _DIRECTIONS[(False, False)],
        _DIRECTIONS[(False, True)],
        _DIRECTIONS[(True, False)],
        _DIRECTIONS[(True, True)],
    )
]
"""Indexed by 2 * source internal + destination internal; a fifth entry, None, for no direction."""


class EnrichmentChain:
    """Implements the `Enricher` protocol over the components configured in `EnrichSettings`."""

    def __init__(
        self,
        settings: EnrichSettings,
        *,
        clock: Clock = time.monotonic,
        oui: OuiRegistry | None = None,
        resolver: ReverseDnsResolver | None = None,
        protocols_path: str = "/etc/protocols",
    ) -> None:
        mode = str(settings.resolve_ip2host).strip().lower()
        if mode not in RESOLVE_MODES:
            raise ConfigError(f"enrich.resolve_ip2host: {settings.resolve_ip2host!r} is not one of {RESOLVE_MODES}")
        self._clock = clock
        self.addresses = AddressClassifier([], settings.geoip_cache_size, clock)  # networks: reload_tables
        self.geoip = GeoIpLookup(settings)
        self.oui: OuiRegistry | None = None
        if settings.oui_lookup:
            self.oui = oui if oui is not None else load_registry(settings.oui_path)
        self.services = ServiceNames(settings.services_path, protocols_path)
        self.applications = ApplicationTable(clock=clock)
        self.application_names = ApplicationNamer(self.services, self.applications)
        self.interfaces = InterfaceNames(clock=clock)
        self.sampling = SamplingRates({}, {})
        self.exporter_names: PrefixMap[str] = PrefixMap(())
        self._tables: dict[str, Any] = {}
        """The operator's tables as configured, to tell what a reload changes."""
        self.resolve_exporters = mode in ("true", "exporters")
        self.resolve_endpoints = mode in ("true", "endpoints")
        self.resolver: ReverseDnsResolver | None = None
        if self.resolve_exporters or self.resolve_endpoints:
            self.resolver = resolver if resolver is not None else ReverseDnsResolver.from_settings(settings, clock)
        # Flow addresses, merged with their GeoIP fields, are cached there, not in the classifier.
        self.ends = AddressEnds(self.addresses, self.geoip, settings.geoip_cache_size, clock, self.resolver is not None)
        self._seed = seed_bytes(settings.community_id_seed)
        self._protocol_numbers: dict[str, int] = {}
        self.counters: dict[str, int] = {
            "enrich_batches": 0,
            "enrich_documents": 0,
            "options_learned": 0,
            "oui_cache_hits": 0,
            "oui_cache_evictions": 0,
        }
        self._vendor_groups: dict[tuple[str, Any], FieldGroup | None] = {}
        """(vendor field, MAC as text or number) -> its vendor field, or None for no vendor."""
        self.reload_tables(settings)  # the operator's tables, built the one way a SIGHUP builds them

    # -- the Enricher protocol ------------------------------------------------------------

    async def enrich(self, documents: list[Document]) -> None:
        await self.enrich_table(DocumentsView(documents))

    def begin_batch(self) -> None:
        """A worker's batch starts: its tables share one reverse DNS deadline."""
        if self.resolver is not None:
            self.resolver.begin_batch()

    async def enrich_table(self, table: Table) -> None:
        """Enrich a table of documents (a decoded data set, or dicts through `DocumentsView`)."""
        now = self._clock()
        self.counters["enrich_batches"] += 1
        self.counters["enrich_documents"] += len(table)
        if not len(table):
            return
        self.sampling.apply(table)
        full = self.ends.full()
        if self.geoip.maybe_reload(now) or full:
            if full:
                MEMO_CLEARS["enrich_address_groups"] += 1
            self.ends.clear()
        ends = [self.ends.add(table, key, now) for key in ("source.ip", "destination.ip")]
        protocols = self._protocols(table)
        self._add_direction_and_community_id(table, ends[0], ends[1], protocols)
        if ends[0] is not None and ends[1] is not None and isinstance(table, DocumentsView):
            table.override("related.ip", _related_ips(table))
        self.application_names.add(table)
        if self.oui is not None:
            for key, vendor_key in (
                ("source.mac", "flowd.source_mac_vendor"),
                ("destination.mac", "flowd.destination_mac_vendor"),
            ):
                found = table.factorize(key, raw=True)  # numbers where the decoder kept them so
                if found is not None:
                    macs, index = found
                    table.add_groups([self._vendor_group(vendor_key, mac) for mac in macs], index)
        self._add_interfaces(table, now)
        if self.exporter_names:
            self._add_exporter_names(table)
        if self.resolver is not None:
            await self._add_names(table, ends)

    async def close(self) -> None:
        if self.resolver is not None:
            await self.resolver.close()
        self.geoip.close()

    def reload_tables(self, settings: EnrichSettings) -> list[str]:
        """Take the operator's tables (`RELOADABLE_KEYS`) from `settings`, at construction and on
        SIGHUP, keeping what options data taught and every counter; returns the keys that changed.
        An invalid table raises `ConfigError` and changes nothing."""
        internal = parse_networks(settings.internal_networks, "enrich.internal_networks")
        network_names = PrefixMap(parse_network_names(settings.network_names, "enrich.network_names"))
        exporter_names = PrefixMap(parse_network_names(settings.exporter_names, "enrich.exporter_names"))
        interface_names = parse_configured_names(settings.interface_names)
        endpoint_applications = parse_endpoint_applications(settings.endpoint_applications)
        sampling = SamplingRates(settings.sampling_rates, settings.default_sampling_rates)
        tables = {key: getattr(settings, key) for key in RELOADABLE_KEYS}
        changed = [key for key in RELOADABLE_KEYS if key not in self._tables or tables[key] != self._tables[key]]
        if not changed:
            return []
        if {"internal_networks", "network_names"} & set(changed):
            self.addresses.internal_networks = internal
            self.addresses.network_names = network_names
            self.addresses.cache.clear()
            self.ends.clear()  # cached address facts hold the old internal flags and names
        self.exporter_names = exporter_names
        self.interfaces.configured = interface_names
        self.application_names.endpoint_applications = endpoint_applications
        sampling.counters = self.sampling.counters
        self.sampling = sampling
        self._tables = tables
        return changed

    # -- options data ---------------------------------------------------------------------

    def learn_from_options(self, documents: list[Document]) -> int:
        """Feed interface and application tables from options documents; returns records used."""
        used = 0
        for document in documents:
            if document.get("event.action") != OPTIONS_ACTION:
                continue
            learned = self.interfaces.learn_from_options(document)
            application_id = document.get("netflow.application_id")
            exporter = document.get("observer.ip")
            if application_id is not None and isinstance(exporter, str):
                learned |= self.applications.learn(exporter, application_id, document.get("netflow.application_name"))
            used += learned
        self.counters["options_learned"] += used
        return used

    # -- per table ------------------------------------------------------------------------

    def _protocols(self, table: Table) -> npt.NDArray[np.int64] | None:
        """Protocol number per row (-1: none); names a bare number in `network.transport`."""
        found = table.factorize("network.iana_number")
        if found is None:
            return None
        numbers, index = found
        resolved = [
            self._protocol_numbers.get(n) if n in self._protocol_numbers else self._protocol_number(n) for n in numbers
        ]
        protocols = np.array([-1 if p is None else p for p in resolved], dtype=np.int64)[index]
        self._name_bare_transports(table, numbers, resolved, index)
        return protocols

    def _name_bare_transports(
        self, table: Table, numbers: list[Any], resolved: list[int | None], index: npt.NDArray[np.intp]
    ) -> None:
        """`network.transport` from the protocols table where it is missing or only the number."""
        names = [None if p is None else self.services.protocol(p) for p in resolved]
        name_of = dict(zip(numbers, names, strict=True))
        pairs, pair_index = distinct_pairs((numbers, index), factorized(table, "network.transport"))
        renamed = [name_of[n] is not None and (transport is None or transport == n) for n, transport in pairs]
        rename = np.array(renamed, dtype=np.bool_)[pair_index]
        if rename.any():
            table.override(
                "network.transport",
                [names[n] if r else None for n, r in zip(index.tolist(), rename.tolist(), strict=True)],
            )

    def _add_direction_and_community_id(
        self, table: Table, source: End | None, destination: End | None, protocols: npt.NDArray[np.int64] | None
    ) -> None:
        if source is None or destination is None:
            return
        source_valid, source_internal, source_length = source.facts_arrays()
        destination_valid, destination_internal, destination_length = destination.facts_arrays()
        both = source_valid & destination_valid
        code = np.where(both, 2 * source_internal + destination_internal, 4)
        table.add_groups([*_DIRECTION_GROUPS, None], code.astype(np.intp))
        if protocols is None:
            return
        eligible = both & (protocols >= 0) & (source_length == destination_length)
        if not eligible.any():
            return
        table.add(
            "network.community_id", community_id_column(table, source, destination, protocols, eligible, self._seed)
        )

    def _vendor_group(self, key: str, mac: Any) -> FieldGroup | None:
        """The vendor field of a MAC (text or 48-bit number), through a bounded cache: switches'
        samples bring the same few thousand MACs batch after batch."""
        cached = self._vendor_groups.get((key, mac), _UNKNOWN)
        if cached is not _UNKNOWN:
            self.counters["oui_cache_hits"] += 1
            return cached
        if self.oui is None:
            return None
        if type(mac) is int:
            vendor = self.oui.lookup_number(mac)
        elif isinstance(mac, str):
            vendor = self.oui.lookup(mac)
        else:
            return None
        group = None if vendor is None else FieldGroup.shared({key: vendor})
        if len(self._vendor_groups) >= MAX_VENDOR_GROUPS:
            self.counters["oui_cache_evictions"] += len(self._vendor_groups)
            self._vendor_groups.clear()
        self._vendor_groups[(key, mac)] = group
        return group

    def _add_exporter_names(self, table: Table) -> None:
        """`observer.name`: the name the operator gave the exporter (its address or network)."""
        exporters = table.factorize("observer.ip")
        if exporters is None:
            return
        distinct, index = exporters
        names = [self.exporter_names.lookup_text(exporter) for exporter in distinct]
        table.add_groups([None if n is None else FieldGroup.shared({"observer.name": n}) for n in names], index)

    def _add_interfaces(self, table: Table, now: float) -> None:
        interfaces = self.interfaces
        if not (interfaces.configured or len(interfaces.learned)):
            return
        exporters = table.factorize("observer.ip")
        if exporters is None:
            return
        for id_key, name_key, alias_key in _INTERFACE_KEYS:
            ifindexes = table.factorize(id_key)
            if ifindexes is None:
                continue
            pairs, index = distinct_pairs(exporters, ifindexes)
            groups: list[FieldGroup | None] = []
            for exporter, ifindex in pairs:
                names = None if exporter is None or ifindex is None else interfaces.lookup(exporter, ifindex, now)
                fields = {}
                if names is not None:
                    if names[0] is not None:
                        fields[name_key] = names[0]
                    if names[1] is not None:
                        fields[alias_key] = names[1]
                groups.append(FieldGroup(fields) if fields else None)
            table.add_groups(groups, index)

    def _protocol_number(self, iana: Any) -> int | None:
        try:
            number = int(iana)
        except (TypeError, ValueError):
            return None
        if not 0 <= number <= 255:
            return None
        if len(self._protocol_numbers) < 256:
            self._protocol_numbers[iana] = number
        return number

    async def _add_names(self, table: Table, ends: list[End | None]) -> None:
        resolver = self.resolver
        assert resolver is not None
        wanted: set[str] = set()
        if self.resolve_endpoints:
            for end in ends:
                if end is not None:
                    wanted.update(
                        a
                        for a, info in zip(end.texts(), end.infos, strict=True)
                        if a is not None and info is not None and info.address_class not in _NOT_RESOLVED
                    )
        exporters = table.factorize("observer.ip") if self.resolve_exporters else None
        if exporters is not None:
            now = self._clock()
            wanted.update(
                e
                for e in exporters[0]
                if isinstance(e, str) and self.addresses.facts(e, now).address_class not in _NOT_RESOLVED
            )
        if not wanted:
            return
        names = await resolver.resolve_many(wanted)
        if not names:
            return
        per_row: list[list[str | None]] = []
        sources = [(exporters, "observer.hostname")] if exporters is not None else []
        if self.resolve_endpoints:
            for end, key in zip(ends, ("source.domain", "destination.domain"), strict=True):
                if end is not None:
                    sources.append(((end.texts(), end.index), key))
        for found, key in sources:
            assert found is not None
            distinct, index = found
            resolved = [_name_of(names, value) for value in distinct]
            table.add_groups([None if n is None else FieldGroup({key: n}) for n in resolved], index)
            per_row.append([resolved[i] for i in index.tolist()])
        existing = table.column("related.hosts")
        hosts_column: list[Any] = []
        for row, row_names in enumerate(zip(*per_row, strict=True)):
            hosts = [n for n in row_names if n is not None]
            if not hosts:
                hosts_column.append(None)
                continue
            before = existing[row] if existing is not None else None
            if isinstance(before, list):
                hosts = before + [h for h in hosts if h not in before]
            hosts_column.append(list(dict.fromkeys(hosts)))
        if any(h is not None for h in hosts_column):
            table.override("related.hosts", hosts_column)

    # -- metrics --------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Every component's counters, flat, for the collector's metrics."""
        counters = {**self.counters, **self.addresses.stats(), **self.geoip.stats()}
        counters.update(self.ends.stats())
        counters.update(self.applications.stats())
        counters.update(self.interfaces.stats())
        counters.update(self.sampling.counters)
        if self.oui is not None:
            counters.update(self.oui.stats())
        if self.resolver is not None:
            counters.update(self.resolver.stats())
        return counters


MAX_VENDOR_GROUPS = 65_536
"""MACs whose vendor field is cached (cleared whole when full, as the address groups are)."""
_UNKNOWN = FieldGroup({})
"""The vendor cache's "not looked up yet" (None there means "no vendor")."""


def _related_ips(table: Table) -> list[Any]:
    """`related.ip` for documents with both ends and none yet (the columnar path always has it)."""
    count = len(table)
    nothing: list[Any] = [None] * count
    source = table.column("source.ip") or nothing
    destination = table.column("destination.ip") or nothing
    existing = table.column("related.ip") or nothing
    return [
        None if e is not None or s is None or d is None else ([s] if s == d else [s, d])
        for s, d, e in zip(source, destination, existing, strict=True)
    ]


_INTERFACE_KEYS = tuple(
    (f"{prefix}.id", f"{prefix}.name", f"{prefix}.alias")
    for prefix in ("observer.ingress.interface", "observer.egress.interface")
)


def _name_of(names: dict[str, str], address: object) -> str | None:
    return names.get(address) if isinstance(address, str) else None


def build_enricher(settings: EnrichSettings, clock: Clock = time.monotonic) -> EnrichmentChain:
    """The chain for `settings`; raises `ConfigError` for invalid settings."""
    return EnrichmentChain(settings, clock=clock)
