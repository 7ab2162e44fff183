"""The enrichment chain: every enricher applied to a batch of flat ECS documents, in place.

Per batch, each distinct address is looked up once (address facts, GeoIP/ASN, reverse DNS) and
each distinct MAC once; the per-document work left is dictionary updates and the Community ID
hash. Reverse DNS runs last and waits at most `dns_deadline_ms` for first-seen addresses (see
`dns.py`), so the rest of the chain never waits on the network.

Fields written (design.md section 4): `source.geo.*`, `source.as.*` (and `destination.*`),
`flowd.source_address_class`/`flowd.destination_address_class`, `network.direction`,
`flow.locality`, `network.community_id`, `network.application`, `network.transport` (name for
a bare protocol number), `observer.hostname`, `source.domain`/`destination.domain`,
`related.ip`, `related.hosts`, `observer.ingress/egress.interface.name` (and `.alias` from the
interface description), `flowd.source_mac_vendor`/`flowd.destination_mac_vendor`.
"""

from __future__ import annotations

import time
from typing import Any

from flowd.config import EnrichSettings
from flowd.enrich.addresses import INVALID, AddressClassifier, AddressFacts
from flowd.enrich.cache import Clock, TtlLruCache
from flowd.enrich.community_id import PROTO_ICMP, PROTO_ICMPV6, community_id, icmp_type_code, seed_bytes
from flowd.enrich.dns import ReverseDnsResolver
from flowd.enrich.geoip import GEOIP_CACHE_TTL_S, NO_FIELDS, GeoFields, GeoIpLookup
from flowd.enrich.interfaces import InterfaceNames, Names
from flowd.enrich.oui import OuiRegistry, load_registry
from flowd.enrich.services import ApplicationTable, ServiceNames, clean_name
from flowd.errors import ConfigError

Document = dict[str, Any]

RESOLVE_MODES = ("false", "true", "exporters", "endpoints")
OPTIONS_ACTION = "netflow_options"
_NOT_RESOLVED = frozenset(("invalid", "unspecified", "multicast", "broadcast"))
_DIRECTIONS = {
    (True, True): ("internal", "internal"),
    (True, False): ("outbound", "external"),
    (False, True): ("inbound", "external"),
    (False, False): ("external", "external"),
}


class _AddressInfo:
    """What documents need about one address, merged once and cached."""

    __slots__ = ("address_class", "destination_fields", "facts", "source_fields")

    def __init__(self, facts: AddressFacts, geo: GeoFields) -> None:
        self.facts = facts
        self.address_class = facts.address_class
        self.source_fields = {**geo[0], "flowd.source_address_class": facts.address_class}
        self.destination_fields = {**geo[1], "flowd.destination_address_class": facts.address_class}


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
        self.addresses = AddressClassifier(settings.internal_networks, settings.geoip_cache_size, clock)
        self.geoip = GeoIpLookup(settings, clock)
        # Address facts and GeoIP fields merged per address; cleared when a database is reloaded.
        self.address_cache: TtlLruCache[str, _AddressInfo] = TtlLruCache(
            settings.geoip_cache_size, GEOIP_CACHE_TTL_S, clock, "address_info"
        )
        self.oui: OuiRegistry | None = None
        if settings.oui_lookup:
            self.oui = oui if oui is not None else load_registry(settings.oui_path)
        self.services = ServiceNames(settings.services_path, protocols_path)
        self.applications = ApplicationTable(clock=clock)
        self.interfaces = InterfaceNames(settings.interface_names, clock=clock)
        self.resolve_exporters = mode in ("true", "exporters")
        self.resolve_endpoints = mode in ("true", "endpoints")
        self.resolver: ReverseDnsResolver | None = None
        if self.resolve_exporters or self.resolve_endpoints:
            self.resolver = resolver if resolver is not None else ReverseDnsResolver.from_settings(settings, clock)
        self._seed = seed_bytes(settings.community_id_seed)
        self._protocol_numbers: dict[str, int] = {}
        self.counters: dict[str, int] = {"enrich_batches": 0, "enrich_documents": 0, "options_learned": 0}

    # -- the Enricher protocol ------------------------------------------------------------

    async def enrich(self, documents: list[Document]) -> None:
        now = self._clock()
        self.counters["enrich_batches"] += 1
        self.counters["enrich_documents"] += len(documents)
        if self.geoip.maybe_reload(now):
            self.address_cache.clear()
        batch: dict[str, _AddressInfo] = {}
        vendors: dict[str, str | None] = {}
        interface_names: dict[tuple[str, int], Names | None] = {}
        for document in documents:
            self._enrich_document(document, batch, vendors, interface_names, now)
        if self.resolver is not None:
            await self._add_names(documents, batch)

    async def close(self) -> None:
        if self.resolver is not None:
            await self.resolver.close()
        self.geoip.close()

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

    def _address(self, address: str, batch: dict[str, _AddressInfo], now: float) -> _AddressInfo:
        info = self.address_cache.get(address, now)
        if info is None:
            facts = self.addresses.facts(address, now)
            geo = self.geoip.lookup(address, facts.address_class, now) if facts is not INVALID else NO_FIELDS
            info = _AddressInfo(facts, geo)
            if facts is not INVALID:
                self.address_cache.put(address, info, now)
        batch[address] = info
        return info

    def _enrich_document(
        self,
        doc: Document,
        batch: dict[str, _AddressInfo],
        vendors: dict[str, str | None],
        interface_names: dict[tuple[str, int], Names | None],
        now: float,
    ) -> None:
        get = doc.get
        source_ip = get("source.ip")
        destination_ip = get("destination.ip")
        source = destination = None
        if source_ip is not None:
            source = batch.get(source_ip) or self._address(source_ip, batch, now)
            doc.update(source.source_fields)
        if destination_ip is not None:
            destination = batch.get(destination_ip) or self._address(destination_ip, batch, now)
            doc.update(destination.destination_fields)

        iana = get("network.iana_number")
        protocol = None
        if iana is not None:
            protocol = self._protocol_numbers.get(iana)
            if protocol is None:
                protocol = self._protocol_number(iana)
            transport = get("network.transport")
            if protocol is not None and (transport is None or transport == iana):
                name = self.services.protocol(protocol)
                if name is not None:
                    doc["network.transport"] = name

        if source is not None and destination is not None:
            source_facts, destination_facts = source.facts, destination.facts
            if source_facts is not INVALID and destination_facts is not INVALID:
                doc["network.direction"], doc["flow.locality"] = _DIRECTIONS[
                    (source_facts.internal, destination_facts.internal)
                ]
                if protocol is not None and len(source_facts.packed) == len(destination_facts.packed):
                    if protocol in (PROTO_ICMP, PROTO_ICMPV6):
                        source_port, destination_port = icmp_type_code(doc, protocol == PROTO_ICMPV6)
                    else:
                        source_port = get("source.port") or 0
                        destination_port = get("destination.port") or 0
                    doc["network.community_id"] = community_id(
                        source_facts.packed,
                        destination_facts.packed,
                        protocol,
                        source_port,
                        destination_port,
                        self._seed,
                    )
            if "related.ip" not in doc:
                doc["related.ip"] = [source_ip] if source_ip == destination_ip else [source_ip, destination_ip]

        if "network.application" not in doc:
            application = self._application(doc)
            if application is not None:
                doc["network.application"] = application

        if self.oui is not None:
            mac = get("source.mac")
            if mac is not None:
                vendor = vendors[mac] if mac in vendors else vendors.setdefault(mac, self.oui.lookup(mac))
                if vendor is not None:
                    doc["flowd.source_mac_vendor"] = vendor
            mac = get("destination.mac")
            if mac is not None:
                vendor = vendors[mac] if mac in vendors else vendors.setdefault(mac, self.oui.lookup(mac))
                if vendor is not None:
                    doc["flowd.destination_mac_vendor"] = vendor

        interfaces = self.interfaces
        if interfaces.configured or len(interfaces.learned):
            exporter = get("observer.ip")
            if exporter is not None:
                for id_key, name_key, alias_key in _INTERFACE_KEYS:
                    ifindex = get(id_key)
                    if ifindex is None:
                        continue
                    key = (exporter, ifindex)
                    if key in interface_names:
                        names = interface_names[key]
                    else:
                        names = interface_names[key] = interfaces.lookup(exporter, ifindex, now)
                    if names is not None:
                        name, description = names
                        if name is not None:
                            doc[name_key] = name
                        if description is not None:
                            doc[alias_key] = description

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

    def _application(self, doc: Document) -> str | None:
        get = doc.get
        named = get("netflow.panos_app_id") or get("netflow.application_name")
        if named is not None:
            name = clean_name(named)
            if name is not None:
                return name
        application_id = get("netflow.application_id")
        if application_id is not None:
            exporter = get("observer.ip")
            if isinstance(exporter, str):
                name = self.applications.name(exporter, application_id)
                if name is not None:
                    return name
        transport = get("network.transport")
        if transport is None:
            return None
        return self.services.server_service(transport, get("source.port"), get("destination.port"))

    async def _add_names(self, documents: list[Document], batch: dict[str, _AddressInfo]) -> None:
        resolver = self.resolver
        assert resolver is not None
        wanted: set[str] = set()
        if self.resolve_endpoints:
            wanted.update(a for a, info in batch.items() if info.address_class not in _NOT_RESOLVED)
        if self.resolve_exporters:
            now = self._clock()
            for document in documents:
                exporter = document.get("observer.ip")
                if (
                    exporter is not None
                    and exporter not in wanted
                    and self.addresses.facts(exporter, now).address_class not in _NOT_RESOLVED
                ):
                    wanted.add(exporter)
        if not wanted:
            return
        names = await resolver.resolve_many(wanted)
        if not names:
            return
        endpoints, exporters = self.resolve_endpoints, self.resolve_exporters
        for document in documents:
            hosts: list[str] = []
            if exporters:
                name = _name_of(names, document.get("observer.ip"))
                if name is not None:
                    document["observer.hostname"] = name
                    hosts.append(name)
            if endpoints:
                name = _name_of(names, document.get("source.ip"))
                if name is not None:
                    document["source.domain"] = name
                    hosts.append(name)
                name = _name_of(names, document.get("destination.ip"))
                if name is not None:
                    document["destination.domain"] = name
                    if name not in hosts:
                        hosts.append(name)
            if hosts:
                existing = document.get("related.hosts")
                if isinstance(existing, list):
                    hosts = existing + [h for h in hosts if h not in existing]
                document["related.hosts"] = list(dict.fromkeys(hosts))

    # -- metrics --------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Every component's counters, flat, for the collector's metrics."""
        counters = {**self.counters, **self.address_cache.stats(), **self.addresses.stats(), **self.geoip.stats()}
        counters.update(self.applications.stats())
        counters.update(self.interfaces.stats())
        if self.oui is not None:
            counters.update(self.oui.stats())
        if self.resolver is not None:
            counters.update(self.resolver.stats())
        return counters


_INTERFACE_KEYS = tuple(
    (f"{prefix}.id", f"{prefix}.name", f"{prefix}.alias")
    for prefix in ("observer.ingress.interface", "observer.egress.interface")
)


def _name_of(names: dict[str, str], address: object) -> str | None:
    return names.get(address) if isinstance(address, str) else None


def build_enricher(settings: EnrichSettings, clock: Clock = time.monotonic) -> EnrichmentChain:
    """The chain for `settings`; raises `ConfigError` for invalid settings."""
    return EnrichmentChain(settings, clock=clock)
