"""The enrichment chain: every enricher applied to a table of flat ECS documents, in place.

It works on `flowd.output.table` tables: a decoded data set as columns (`DocumentTable`, what
`flowd run` writes as NDJSON) or documents that are dicts already (`DocumentsView`: sFlow,
`flowd decode --enrich`), one implementation for both. Each distinct address is looked up once
per table (address facts, GeoIP/ASN, reverse DNS; IPv4 columns by their integers, in a numpy cache
searched for the whole table at once: `ipv4_cache.py`), each distinct
MAC, port and interface once; what an address adds is a `FieldGroup` rendered to JSON once while
it is cached, and each row only points at its group. Direction and the Community ID (its input
built in numpy, one SHA-1 per flow) are computed for all rows at once. Reverse DNS runs last and
waits at most `dns_deadline_ms` for first-seen addresses (see `dns.py`), so the rest of the
chain never waits on the network.

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

import socket
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.config import EnrichSettings, parse_address_key, parse_network_names, parse_networks
from flowd.decode.memo import MEMO_CLEARS
from flowd.enrich.addresses import INVALID, AddressClassifier, AddressFacts, PrefixMap
from flowd.enrich.cache import Clock, TtlLruCache
from flowd.enrich.community_id import (
    ICMP_COUNTERPARTS,
    ICMPV6_COUNTERPARTS,
    PORT_PROTOCOLS,
    PROTO_ICMP,
    PROTO_ICMPV6,
    community_ids_bulk,
    seed_bytes,
)
from flowd.enrich.dns import ReverseDnsResolver
from flowd.enrich.geoip import GEOIP_CACHE_TTL_S, NO_FIELDS, GeoFields, GeoIpLookup
from flowd.enrich.interfaces import InterfaceNames, parse_configured_names
from flowd.enrich.ipv4_cache import Ipv4Cache, Ipv6Cache
from flowd.enrich.oui import OuiRegistry, load_registry
from flowd.enrich.sampling import SamplingRates
from flowd.enrich.services import ApplicationTable, ServiceNames, clean_name
from flowd.errors import ConfigError
from flowd.output.distinct import unique_inverse
from flowd.output.render import IPV6_DTYPE, ipv6_texts
from flowd.output.table import DocumentsView, FieldGroup, LazyColumn, Table

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


class _AddressInfo:
    """What documents need about one address, merged once and cached: the fields it adds as a
    source and as a destination, rendered to JSON once however many flows carry it."""

    __slots__ = ("address_class", "destination_group", "facts", "internal", "length", "row", "source_group", "valid")

    def __init__(self, facts: AddressFacts, geo: GeoFields) -> None:
        self.facts = facts
        self.address_class = facts.address_class
        self.valid = facts is not INVALID
        self.internal = int(facts.internal)
        self.length = len(facts.packed)
        source, destination = geo
        if facts.network_name is not None:  # the operator's name for the network (ECS geo.name)
            source = {**source, "source.geo.name": facts.network_name}
            destination = {**destination, "destination.geo.name": facts.network_name}
        self.source_group = FieldGroup.shared({**source, "flowd.source_address_class": facts.address_class})
        self.destination_group = FieldGroup.shared(
            {**destination, "flowd.destination_address_class": facts.address_class}
        )
        self.row = (int(self.valid), self.internal, self.length, -1, -1)
        """`_ATTRIBUTES` without group numbers (which only the IPv4 cache keeps)."""


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
        # Address facts and GeoIP fields merged per address; cleared when a database is reloaded.
        # Flow addresses are held only here: `_address_info` bypasses the classifier's own cache
        # (which serves exporter addresses), and GeoIP lookups keep nothing; holding each
        # address in three caches tripled their memory (75 MB full at the default size, 29 MB now).
        self.address_cache: TtlLruCache[str, _AddressInfo] = TtlLruCache(
            settings.geoip_cache_size, GEOIP_CACHE_TTL_S, clock, "address_info"
        )
        # The same for IPv4 addresses as integers and IPv6 ones as 16-byte values, looked up a
        # table at a time in numpy.
        self.ipv4_cache: Ipv4Cache[_AddressInfo] = Ipv4Cache(
            settings.geoip_cache_size, GEOIP_CACHE_TTL_S, len(_ATTRIBUTES), clock, "address_info"
        )
        self.ipv6_cache: Ipv6Cache[_AddressInfo] = Ipv6Cache(
            settings.geoip_cache_size, GEOIP_CACHE_TTL_S, len(_ATTRIBUTES), clock, "address_info"
        )
        self._groups: list[FieldGroup] = []
        """Address field groups by number: the IPv4 cache keeps each address's as integers."""
        self._group_numbers: dict[int, int] = {}
        """id() of a group in `_groups` -> its number."""
        self.oui: OuiRegistry | None = None
        if settings.oui_lookup:
            self.oui = oui if oui is not None else load_registry(settings.oui_path)
        self.services = ServiceNames(settings.services_path, protocols_path)
        self.applications = ApplicationTable(clock=clock)
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
        self._seed = seed_bytes(settings.community_id_seed)
        self._protocol_numbers: dict[str, int] = {}
        self._application_groups: dict[str, FieldGroup] = {}
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
        full = len(self._groups) > MAX_ADDRESS_GROUPS
        if self.geoip.maybe_reload(now) or full:
            if full:
                MEMO_CLEARS["enrich_address_groups"] += 1
            self._clear_address_caches()
        ends = [self._add_addresses(table, key, now) for key in ("source.ip", "destination.ip")]
        protocols = self._protocols(table)
        self._add_direction_and_community_id(table, ends[0], ends[1], protocols)
        if ends[0] is not None and ends[1] is not None and isinstance(table, DocumentsView):
            table.override("related.ip", _related_ips(table))
        self._add_application(table)
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
            self._clear_address_caches()  # cached address facts hold the old internal flags and names
        self.exporter_names = exporter_names
        self.interfaces.configured = interface_names
        self.endpoint_applications = endpoint_applications
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

    # -- per document ---------------------------------------------------------------------

    def _address_info(self, address: str, now: float) -> _AddressInfo:
        """Facts and GeoIP fields of an address, for the address caches to keep."""
        facts = self.addresses.facts(address, now, cache=False)
        geo = self.geoip.lookup(address, facts.address_class) if facts is not INVALID else NO_FIELDS
        return _AddressInfo(facts, geo)

    def _address(self, address: str, now: float) -> _AddressInfo:
        """The facts of an address, cached."""
        info = self._address_info(address, now)
        if info.valid:
            self.address_cache.put(address, info, now)
        return info

    def _add_addresses(self, table: Table, key: str, now: float) -> _End | None:
        """GeoIP, ASN and address class of one end, per distinct address."""
        raw = table.factorize_array(key)
        if raw is not None and raw[0].dtype.kind == "u" and raw[0].dtype.itemsize == 4:
            return self._add_cached_addresses(table, key, self.ipv4_cache, raw[0].astype(np.uint32), raw[1], now)
        if raw is not None and raw[0].dtype == IPV6_DTYPE:
            return self._add_cached_addresses(table, key, self.ipv6_cache, raw[0], raw[1], now)
        found = table.factorize(key)
        if found is None:
            return None
        addresses, index = found
        infos = list(self.address_cache.get_many([a for a in addresses if a is not None], now))
        infos.reverse()
        known = [None if a is None else (infos.pop() or self._address(str(a), now)) for a in addresses]
        source = key == "source.ip"
        table.add_groups(
            [None if i is None else (i.source_group if source else i.destination_group) for i in known], index
        )
        facts = np.array([_NO_ROW if i is None else i.row for i in known], dtype=np.int64).reshape(-1, len(_ATTRIBUTES))
        return _End(addresses, index, facts, known)

    def _add_cached_addresses(
        self,
        table: Table,
        key: str,
        cache: Ipv4Cache[_AddressInfo],
        numbers: npt.NDArray[Any],
        index: npt.NDArray[np.intp],
        now: float,
    ) -> _End:
        """`_add_addresses` for a column of IPv4 addresses as integers or IPv6 ones as 16-byte
        values (`numbers`, distinct): the cache is searched for all of them at once, and what each
        adds comes back as numbers (`_ATTRIBUTES`); only first-seen addresses cost Python work."""
        slots = cache.lookup(numbers, now)
        facts = cache.rows(slots)
        found = np.flatnonzero(slots >= 0)
        infos: list[_AddressInfo | None] | None = None
        if self.resolver is not None:  # reverse DNS reads the infos; taken before `put_many` can evict
            infos = [None] * len(numbers)
            for position, slot in zip(found.tolist(), slots[found].tolist(), strict=True):
                infos[position] = cache.value(slot)
        missing = np.flatnonzero(slots < 0)
        if len(missing):
            new_numbers = numbers[missing]
            new_infos = [self._address_info(text, now) for text in _texts(new_numbers)]
            rows = np.array([self._attributes(i) for i in new_infos], dtype=np.int64)
            facts[missing] = rows
            if infos is not None:
                for position, info in zip(missing.tolist(), new_infos, strict=True):
                    infos[position] = info
            cacheable = [k for k, info in enumerate(new_infos) if info.valid]
            cache.put_many(new_numbers[cacheable], [new_infos[k] for k in cacheable], rows[cacheable], now)
        group_numbers = facts[:, _SOURCE_GROUP if key == "source.ip" else _DESTINATION_GROUP]
        used, remap = unique_inverse(group_numbers)
        groups: list[FieldGroup | None] = [self._groups[number] for number in used.tolist()]
        table.add_groups(groups, remap[index])
        return _End(numbers, index, facts, infos)

    def _attributes(self, info: _AddressInfo | None) -> tuple[int, int, int, int, int]:
        """What the IPv4 cache keeps of an address as numbers, in `_ATTRIBUTES` order."""
        if info is None:
            return _NO_ROW
        return (
            int(info.valid),
            info.internal,
            info.length,
            self._group_number(info.source_group),
            self._group_number(info.destination_group),
        )

    def _group_number(self, group: FieldGroup) -> int:
        number = self._group_numbers.get(id(group))
        if number is None:
            number = self._group_numbers[id(group)] = len(self._groups)
            self._groups.append(group)
        return number

    def _clear_address_caches(self) -> None:
        self.address_cache.clear()
        self.ipv4_cache.clear()
        self.ipv6_cache.clear()
        self._groups.clear()
        self._group_numbers.clear()

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
        pairs, pair_index = _pairs((numbers, index), _factorized(table, "network.transport"))
        renamed = [name_of[n] is not None and (transport is None or transport == n) for n, transport in pairs]
        rename = np.array(renamed, dtype=np.bool_)[pair_index]
        if rename.any():
            table.override(
                "network.transport",
                [names[n] if r else None for n, r in zip(index.tolist(), rename.tolist(), strict=True)],
            )

    def _add_direction_and_community_id(
        self, table: Table, source: _End | None, destination: _End | None, protocols: npt.NDArray[np.int64] | None
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
        table.add("network.community_id", self._community_ids(table, source, destination, protocols, eligible))

    def _community_ids(
        self,
        table: Table,
        source: _End,
        destination: _End,
        protocols: npt.NDArray[np.int64],
        eligible: npt.NDArray[np.bool_],
    ) -> LazyColumn:
        """Community ID of the eligible rows (absent elsewhere), hashed in bulk per address
        family: with ports (TCP, UDP, SCTP; ICMP type and code mapped as the spec says) or
        without (every other protocol)."""
        count = len(table)
        text = np.zeros((count, 32), dtype=np.uint8)  # "1:" + 28 base64 characters, quoted
        text[:, :3] = np.frombuffer(b'"1:', dtype=np.uint8)
        text[:, 31] = ord('"')
        source_ports = _ports(table, "source.port", count)
        destination_ports = _ports(table, "destination.port", count)
        one_way = np.zeros(count, dtype=np.bool_)
        kind = _PROTOCOL_KINDS[np.where((protocols >= 0) & (protocols <= 255), protocols, 256)]
        icmp = eligible & (kind == _ICMP_KIND)
        if icmp.any():
            icmp_type, icmp_other, icmp_one_way = _icmp_ports(table, protocols, destination_ports)
            source_ports = np.where(icmp, icmp_type, source_ports)
            destination_ports = np.where(icmp, icmp_other, destination_ports)
            one_way = icmp & icmp_one_way
        with_ports = kind != _PORTLESS_KIND
        lengths = source.lengths()[source.index]
        for ported in (True, False):
            for length in (4, 16):
                rows = _selection(eligible & (with_ports == ported) & (lengths == length))
                if rows is not None:
                    text[rows, 3:31] = community_ids_bulk(
                        np.take(source.packed(length), source.index[rows], axis=0),
                        np.take(destination.packed(length), destination.index[rows], axis=0),
                        protocols[rows],
                        (source_ports[rows], destination_ports[rows], one_way[rows]) if ported else None,
                        self._seed,
                    )
        return LazyColumn(text, _identity, _quoted_strings, ~eligible)

    def _add_application(self, table: Table) -> None:
        """`network.application`: the operator's name for the server endpoint, else the exporter's
        application name or id, else the service name."""
        if any(table.column(key) is not None for key in (*_APPLICATION_KEYS, "network.application")):
            self._add_application_row_by_row(table)
            return
        count = len(table)
        configured, configured_names = self._endpoint_application_codes(table)
        transports = table.factorize("network.transport")
        if transports is None:
            transports = ([None], np.zeros(count, dtype=np.intp))
        names, transport_index = transports
        source_port = _ports(table, "source.port", count, missing=-1)
        destination_port = _ports(table, "destination.port", count, missing=-1)
        choice = np.zeros(count, dtype=np.intp)  # 1 + index in `services.service_names`, 0: none
        for position, transport in enumerate(names):
            if not isinstance(transport, str):
                continue
            names_by_port = self.services.names_by_port(transport)
            if names_by_port is None:
                continue
            rows = transport_index == position
            if not rows.any():
                continue
            source_name = _lookup_ports(source_port, names_by_port)
            destination_name = _lookup_ports(destination_port, names_by_port)
            use_destination = (destination_name > 0) & ((source_name == 0) | (destination_port <= source_port))
            chosen = np.where(use_destination, destination_name, source_name)
            choice = np.where(rows, chosen, choice)
        service_names = self.services.service_names
        if configured is not None:  # codes past the service names are the configured names
            choice = np.where(configured > 0, len(service_names) + configured, choice)
        used, index = unique_inverse(choice)
        if len(used) == 1 and used[0] == 0:
            return
        every_name = [*service_names, *configured_names] if configured_names else service_names
        table.add_groups(
            [None if number == 0 else self._application_group(every_name[number - 1]) for number in used.tolist()],
            index,
        )

    def _endpoint_application_codes(self, table: Table) -> tuple[npt.NDArray[np.intp] | None, list[str]]:
        """Per row, 1 + the index in the returned names of the `enrich.endpoint_applications` name
        of its destination (else its source) address and port, 0 for none; None when no row has one."""
        if not self.endpoint_applications:
            return None, []
        codes = np.zeros(len(table), dtype=np.intp)
        names: dict[str, int] = {}
        for address_key, port_key in (("source.ip", "source.port"), ("destination.ip", "destination.port")):
            pairs, index = _pairs(_factorized(table, address_key), _factorized(table, port_key))
            found = [self.endpoint_applications.get(pair) for pair in pairs]
            if any(name is not None for name in found):
                pair_codes = np.array([0 if n is None else names.setdefault(n, len(names) + 1) for n in found])
                row_codes = pair_codes[index]
                codes = np.where(row_codes > 0, row_codes, codes)  # the destination's, taken last, wins
        return (codes, list(names)) if names else (None, [])

    def _application_group(self, name: str) -> FieldGroup:
        group = self._application_groups.get(name)
        if group is None:
            if len(self._application_groups) >= MAX_APPLICATION_GROUPS:
                self._application_groups.clear()
                MEMO_CLEARS["application_groups"] += 1
            group = self._application_groups[name] = FieldGroup({"network.application": name})
        return group

    def _add_application_row_by_row(self, table: Table) -> None:
        existing = table.column("network.application")
        columns = {
            key: table.column(key)
            for key in (*_APPLICATION_KEYS, "observer.ip", "network.transport", "source.port", "destination.port")
        }
        count = len(table)
        nothing: list[Any] = [None] * count
        rows = zip(*(columns[key] or nothing for key in columns), strict=True)
        names: list[Any] = []
        for row, (panos, named, application_id, exporter, transport, source_port, destination_port) in enumerate(rows):
            if existing is not None and existing[row] is not None:
                names.append(None)
                continue
            names.append(
                self._application(panos or named, application_id, exporter, transport, source_port, destination_port)
            )
        configured, configured_names = self._endpoint_application_codes(table)
        if configured is not None:
            for row, code in enumerate(configured.tolist()):
                if code:
                    names[row] = configured_names[code - 1]
        table.override("network.application", names)

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
            pairs, index = _pairs(exporters, ifindexes)
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

    def _application(
        self, named: Any, application_id: Any, exporter: Any, transport: Any, source_port: Any, destination_port: Any
    ) -> str | None:
        if named is not None:
            name = clean_name(named)
            if name is not None:
                return name
        if application_id is not None and isinstance(exporter, str):
            name = self.applications.name(exporter, application_id)
            if name is not None:
                return name
        if transport is None:
            return None
        return self.services.server_service(transport, source_port, destination_port)

    async def _add_names(self, table: Table, ends: list[_End | None]) -> None:
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
        ipv4, ipv6 = self.ipv4_cache.stats(), self.ipv6_cache.stats()
        for name, value in self.address_cache.stats().items():  # one figure for the address caches
            counters[name] = value + ipv4[name] + ipv6[name]
        counters.update(self.applications.stats())
        counters.update(self.interfaces.stats())
        counters.update(self.sampling.counters)
        if self.oui is not None:
            counters.update(self.oui.stats())
        if self.resolver is not None:
            counters.update(self.resolver.stats())
        return counters


_APPLICATION_KEYS = ("netflow.panos_app_id", "netflow.application_name", "netflow.application_id")


class _End:
    """One end of every flow in a table: its distinct addresses, what is known of each
    (`_ATTRIBUTES` as numbers, and the `_AddressInfo`s when reverse DNS needs them), each row's index."""

    __slots__ = ("_infos", "_texts", "addresses", "facts", "index")

    def __init__(
        self,
        addresses: list[Any] | npt.NDArray[np.uint32],
        index: npt.NDArray[np.intp],
        facts: npt.NDArray[np.int64],
        infos: list[_AddressInfo | None] | None,
    ) -> None:
        self.addresses = addresses
        """Distinct addresses: strings (None among them for rows without one), or IPv4 integers."""
        self.index = index
        self.facts = facts
        self._infos = infos
        self._texts: list[str | None] | None = None

    @property
    def infos(self) -> list[_AddressInfo | None]:
        assert self._infos is not None, "infos are kept when reverse DNS is on"
        return self._infos

    def texts(self) -> list[str | None]:
        """The distinct addresses as strings (made once: reverse DNS asks twice)."""
        if self._texts is None:
            if isinstance(self.addresses, np.ndarray):
                self._texts = list(_texts(self.addresses))
            else:
                self._texts = [None if a is None else str(a) for a in self.addresses]
        return self._texts

    def facts_arrays(self) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Per row: whether the address is valid, whether it is internal, its packed length."""
        rows = self.facts[self.index]
        return rows[:, _VALID] != 0, rows[:, _INTERNAL], rows[:, _LENGTH]

    def lengths(self) -> npt.NDArray[np.int64]:
        """Packed length (4, 16, 0 when invalid) of each distinct address."""
        return self.facts[:, _LENGTH]

    def packed(self, length: int) -> npt.NDArray[np.uint8]:
        """Each distinct address packed, one row each (zeros for those of another length)."""
        if isinstance(self.addresses, np.ndarray):
            ipv6 = self.addresses.dtype == IPV6_DTYPE
            if length == 16 and ipv6:
                return np.ascontiguousarray(self.addresses).view(np.uint8).reshape(-1, 16)
            if length == 4 and not ipv6:
                return self.addresses.astype(">u4").view(np.uint8).reshape(-1, 4)
            return np.zeros((len(self.addresses), length), dtype=np.uint8)
        rows = [i.facts.packed if i is not None and i.length == length else bytes(length) for i in self.infos]
        return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), length)


_ATTRIBUTES = ("valid", "internal", "length", "source_group", "destination_group")
"""What the enrichment needs of an address, as integers (the groups by number, -1: none)."""
_VALID, _INTERNAL, _LENGTH, _SOURCE_GROUP, _DESTINATION_GROUP = range(len(_ATTRIBUTES))
_NO_ROW = (0, 0, 0, -1, -1)
"""`_ATTRIBUTES` of a row without an address."""
MAX_ADDRESS_GROUPS = 65_536
"""Distinct address field groups numbered before the address caches start again (each is a few
hundred bytes; as many as `FieldGroup.shared` keeps)."""
MAX_VENDOR_GROUPS = 65_536
"""MACs whose vendor field is cached (cleared whole when full, as the address groups are)."""
MAX_APPLICATION_GROUPS = 65_536
"""Application names whose field group is kept (cleared whole when full, as the vendors' are)."""
_UNKNOWN = FieldGroup({})
"""The vendor cache's "not looked up yet" (None there means "no vendor")."""


def ipv4_text(number: int) -> str:
    return socket.inet_ntoa(number.to_bytes(4, "big"))


def _texts(addresses: npt.NDArray[Any]) -> list[str]:
    """IPv4 addresses (integers) or IPv6 ones (16-byte values) as text."""
    if addresses.dtype == IPV6_DTYPE:
        return ipv6_texts(addresses)
    return [ipv4_text(number) for number in addresses.tolist()]


def _counterparts(mapping: dict[int, int]) -> npt.NDArray[np.int64]:
    table = np.full(256, -1, dtype=np.int64)
    for kind, counterpart in mapping.items():
        table[kind] = counterpart
    return table


_ICMP_COUNTERPARTS = _counterparts(ICMP_COUNTERPARTS)
_ICMPV6_COUNTERPARTS = _counterparts(ICMPV6_COUNTERPARTS)


def _icmp_ports(
    table: Table, protocols: npt.NDArray[np.int64], destination_ports: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Per row, the ICMP type, the port paired with it (the counterpart type, or the code for a
    one-way type) and whether it is one-way, as `community_id.icmp_type_code` reads them."""
    count = len(protocols)
    found = []
    for version in ("ipv4", "ipv6"):
        kind = _ports(table, f"netflow.icmp_type_{version}", count, missing=-1)
        code = _ports(table, f"netflow.icmp_code_{version}", count, missing=0)
        combined = _ports(table, f"netflow.icmp_type_code_{version}", count, missing=-1)
        combined = np.where(combined >= 0, combined, destination_ports)
        found.append((np.where(kind >= 0, kind, (combined >> 8) & 0xFF), np.where(kind >= 0, code, combined & 0xFF)))
    six = protocols == PROTO_ICMPV6
    kind = np.where(six, found[1][0], found[0][0])
    code = np.where(six, found[1][1], found[0][1])
    sampled = _ports(table, "sflow.icmp_type", count, missing=-1)  # from the sampled header
    if (sampled >= 0).any():
        code = np.where(sampled >= 0, _ports(table, "sflow.icmp_code", count, missing=0), code)
        kind = np.where(sampled >= 0, sampled, kind)
    in_table = (kind >= 0) & (kind <= 255)
    counterpart = np.where(six, _ICMPV6_COUNTERPARTS[kind & 0xFF], _ICMP_COUNTERPARTS[kind & 0xFF])
    counterpart = np.where(in_table, counterpart, -1)
    one_way = counterpart < 0
    return kind, np.where(one_way, code, counterpart), one_way


Factorized = tuple[list[Any], npt.NDArray[np.intp]]
"""Distinct values and each row's index among them (`DocumentTable.factorize`)."""


def _factorized(table: Table, key: str) -> Factorized:
    """`table.factorize(key)`, with a column no row has as the one value None."""
    found = table.factorize(key)
    return found if found is not None else ([None], np.zeros(len(table), dtype=np.intp))


def _pairs(first: Factorized, second: Factorized) -> tuple[list[tuple[Any, Any]], npt.NDArray[np.intp]]:
    """The distinct (first, second) value pairs of the rows, and each row's index among them:
    per distinct pair, not per row."""
    first_values, first_index = first
    second_values, second_index = second
    codes, index = unique_inverse(first_index * len(second_values) + second_index)
    pairs = [(first_values[c // len(second_values)], second_values[c % len(second_values)]) for c in codes.tolist()]
    return pairs, index


def _ports(table: Table, key: str, count: int, missing: int = 0) -> npt.NDArray[np.int64]:
    """A port column as int64 (`missing` where a row has none)."""
    array = table.integers(key)
    if array is not None:
        return array.astype(np.int64)
    column = table.column(key)
    if column is None:
        return np.full(count, missing, dtype=np.int64)
    return np.array([v if type(v) is int else missing for v in column], dtype=np.int64)


def _lookup_ports(ports: npt.NDArray[np.int64], names_by_port: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """`names_by_port` of each port; 0 for a missing one (-1) or one past 65,535."""
    if not len(ports):
        return np.zeros(0, dtype=np.int32)
    if ports.min() >= 0 and ports.max() < len(names_by_port):
        return names_by_port[ports]
    valid = (ports >= 0) & (ports < len(names_by_port))
    return np.where(valid, names_by_port[np.where(valid, ports, 0)], 0)


_PORTLESS_KIND, _PORTED_KIND, _ICMP_KIND = range(3)
_PROTOCOL_KINDS = np.full(257, _PORTLESS_KIND, dtype=np.int8)
"""Per protocol number (256: none or out of range), how the Community ID hashes it."""
_PROTOCOL_KINDS[list(PORT_PROTOCOLS)] = _PORTED_KIND
_PROTOCOL_KINDS[[PROTO_ICMP, PROTO_ICMPV6]] = _ICMP_KIND


def _selection(rows: npt.NDArray[np.bool_]) -> slice | npt.NDArray[np.intp] | None:
    """`rows` as an index: every row as a slice (indexing makes views, not copies), else the
    positions; None when there is none."""
    if rows.all():
        return slice(None)
    return np.flatnonzero(rows) if rows.any() else None


def _identity(matrix: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return matrix


def _quoted_strings(matrix: npt.NDArray[np.uint8]) -> list[Any]:
    """Rows of quoted ASCII JSON strings back to Python strings (the missing rows are masked)."""
    width = matrix.shape[1]
    text = matrix.tobytes().decode("ascii")
    return [text[i + 1 : i + width - 1] for i in range(0, len(text), width)]


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


def parse_endpoint_applications(configured: dict[str, str]) -> dict[tuple[str, int], str]:
    """`enrich.endpoint_applications` checked: (address as documents write it, port) -> name."""
    applications = {}
    for key, name in configured.items():
        clean = clean_name(name)
        if clean is None:
            raise ConfigError(f"enrich.endpoint_applications: the name of {key!r} is empty or not printable")
        applications[parse_address_key(key, "enrich.endpoint_applications", "server_ip:port", 65_535)] = clean
    return applications


def build_enricher(settings: EnrichSettings, clock: Clock = time.monotonic) -> EnrichmentChain:
    """The chain for `settings`; raises `ConfigError` for invalid settings."""
    return EnrichmentChain(settings, clock=clock)
