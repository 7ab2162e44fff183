"""GeoIP and ASN lookups over MaxMind-format databases (GeoIP2/GeoLite2 City, Country, ASN, ISP).

Each configured database is a `ReloadingDatabase`: opened with `geoip2`, and re-opened when the
file on disk changes (its mtime or size), checked at most every `check_interval_s`, so a weekly
`geoipupdate` takes effect without a restart. A database that fails to open keeps the previous
one serving. Readers map the file, so a database must be replaced by renaming a new file over
it (as geoipupdate does), never rewritten in place. Only `public` addresses are looked up (see
`addresses.py`), into ready-made `source.*` and `destination.*` fields; an IPv6 address that
stands for an IPv4 one (IPv4-mapped, NAT64 64:ff9b::/96, a Teredo client's) as that IPv4
address (`addresses.embedded_ipv4`): the databases map Teredo's 2001::/32 to the Teredo server.
The lookup itself keeps nothing: the enrichment chain caches what it makes of each address
(facts and these fields together) and starts its caches again when a database is reloaded.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from typing import Any

import geoip2.database
import geoip2.errors
import maxminddb

from flowd.config import EnrichSettings
from flowd.enrich.addresses import PUBLIC, embedded_ipv4

log = logging.getLogger(__name__)

GEOIP_CACHE_TTL_S = 3_600.0
"""How long the enrichment chain keeps an address's fields."""
RELOAD_CHECK_INTERVAL_S = 60.0

Fields = dict[str, Any]
GeoFields = tuple[Fields, Fields]
"""(source.* fields, destination.* fields) for one address."""

NO_FIELDS: GeoFields = ({}, {})


_EMBEDDING_PREFIXES = ("64:ff9b::", "2001:0:", "2001::", "::ffff:")
"""How addresses of the blocks `embedded_ipv4` reads are written (RFC 5952): the few worth parsing."""


def database_address(address: str) -> str:
    """The address a database is asked for: `address`, or the IPv4 address it stands for
    (`embedded_ipv4`: NAT64, Teredo, IPv4-mapped). MaxMind's databases alias Teredo to the
    server's address, which says nothing of where the client is."""
    if not address.startswith(_EMBEDDING_PREFIXES):
        return address
    try:
        embedded = embedded_ipv4(ipaddress.IPv6Address(address))
    except ValueError:
        return address
    return address if embedded is None else str(embedded)


GEO_KINDS = ("City", "Country", "Enterprise")
"""Database types whose records carry geography (`database_type` holds one of these words)."""
AS_KINDS = ("ASN", "ISP", "Enterprise")
"""Database types whose records carry the autonomous system."""
PROBE_ADDRESSES = ("1.1.1.1", "8.8.8.8", "81.2.69.142", "2001:4860::1", "2a02:ff00::1")
"""Looked up in a newly opened file before it replaces the one serving: a file whose metadata
reads but whose tree or data is damaged fails here, not on every lookup afterwards."""


class ReloadingDatabase:
    """One MaxMind database file, re-opened when it is replaced on disk. A file that fails to
    open, holds another kind of database than the setting names, or fails its probe lookups keeps
    the previous one serving."""

    def __init__(
        self, path: str, check_interval_s: float = RELOAD_CHECK_INTERVAL_S, kinds: tuple[str, ...] = ()
    ) -> None:
        self.path = path
        self.kinds = kinds
        """Accepted `database_type` words; empty: any."""
        self.check_interval_s = check_interval_s
        self._warned_at = float("-inf")
        self.reader: geoip2.database.Reader | None = None
        self.database_type = ""
        self._signature: tuple[int, int] | None = None
        self._next_check = float("-inf")
        self.reloads = 0
        self.load_errors = 0
        self._open()

    def _open(self) -> bool:
        try:
            stat = os.stat(self.path)
            signature = (stat.st_mtime_ns, stat.st_size)
            if signature == self._signature:
                return False
            reader = geoip2.database.Reader(self.path)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as error:
            # A half-written or corrupt file keeps the old reader serving.
            self.load_errors += 1
            log.warning("GeoIP database %s not loaded: %s", self.path, error)
            return False
        problem = self._unfit(reader)
        if problem:
            reader.close()
            self._signature = signature  # not tried again until the file changes
            self.load_errors += 1
            log.warning("GeoIP database %s not loaded: %s%s", self.path, problem, KEPT if self.reader else "")
            return False
        old, self.reader = self.reader, reader
        self.database_type = reader.metadata().database_type
        self._signature = signature
        if old is not None:
            old.close()
            self.reloads += 1
            log.info("GeoIP database %s reloaded (%s)", self.path, self.database_type)
        return True

    def _unfit(self, reader: geoip2.database.Reader) -> str:
        """Why a freshly opened file must not serve (empty when it may)."""
        kind = reader.metadata().database_type
        if self.kinds and not any(word in kind for word in self.kinds):
            return f"it is a {kind} database, not {' or '.join(self.kinds)}"
        for address in PROBE_ADDRESSES:
            try:
                _read(reader, kind, address)
            except (geoip2.errors.AddressNotFoundError, ValueError):
                continue
            except Exception as error:
                return f"looking up {address} failed: {type(error).__name__}: {error}"
        return ""

    def maybe_reload(self, now: float) -> bool:
        """Re-open the file if it changed; stats it at most every `check_interval_s`. True if reloaded."""
        if now < self._next_check:
            return False
        self._next_check = now + self.check_interval_s
        return self._open()

    def lookup(self, address: str) -> Any:
        """The geoip2 model for the address, or None when it is not in the database."""
        reader = self.reader
        if reader is None:
            return None
        try:
            return _read(reader, self.database_type, address)
        except (geoip2.errors.AddressNotFoundError, ValueError):
            return None
        except Exception as error:  # a damaged record: this address goes without, the rest go on
            self.load_errors += 1
            if time.monotonic() - self._warned_at >= self.check_interval_s:
                self._warned_at = time.monotonic()
                log.warning(
                    "GeoIP database %s: looking up %s failed: %s: %s", self.path, address, type(error).__name__, error
                )
            return None

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


KEPT = "; the previous one keeps serving"


def _read(reader: geoip2.database.Reader, kind: str, address: str) -> Any:
    """The geoip2 model of `address` for a database of type `kind` (None for an unknown type)."""
    if "City" in kind:
        return reader.city(address)
    if "Country" in kind:
        return reader.country(address)
    if "ASN" in kind:
        return reader.asn(address)
    if "ISP" in kind:
        return reader.isp(address)
    if "Enterprise" in kind:
        return reader.enterprise(address)
    return None


def _geo_fields(model: Any) -> Fields:
    fields: Fields = {}
    country = model.country
    if country.iso_code:
        fields["geo.country_iso_code"] = country.iso_code
    if country.name:
        fields["geo.country_name"] = country.name
    if model.continent.name:
        fields["geo.continent_name"] = model.continent.name
    city = getattr(model, "city", None)
    if city is not None and city.name:
        fields["geo.city_name"] = city.name
    subdivisions = getattr(model, "subdivisions", None)
    if subdivisions:
        region = subdivisions.most_specific.name
        if region:
            fields["geo.region_name"] = region
    location = getattr(model, "location", None)
    if location is not None and location.latitude is not None and location.longitude is not None:
        fields["geo.location"] = {"lat": location.latitude, "lon": location.longitude}
    return fields


def _as_fields(model: Any) -> Fields:
    fields: Fields = {}
    number = model.autonomous_system_number
    if number is not None:
        fields["as.number"] = number
    organization = model.autonomous_system_organization
    if organization:
        fields["as.organization.name"] = organization
    return fields


class GeoIpLookup:
    """Geo and AS fields per address from the configured databases."""

    def __init__(
        self,
        settings: EnrichSettings,
        reload_check_s: float = RELOAD_CHECK_INTERVAL_S,
    ) -> None:
        self.geo_databases: list[ReloadingDatabase] = []
        self.as_databases: list[ReloadingDatabase] = []
        if settings.geoip_lookup:
            # City carries everything Country does; Country is the fallback when City is absent.
            for path in (settings.geoip_city_db, settings.geoip_country_db):
                if path:
                    self.geo_databases.append(ReloadingDatabase(path, reload_check_s, GEO_KINDS))
        if settings.asn_lookup:
            for path in (settings.geoip_asn_db, settings.geoip_isp_db):
                if path:
                    self.as_databases.append(ReloadingDatabase(path, reload_check_s, AS_KINDS))
        self.lookups = 0
        self.not_found = 0

    @property
    def enabled(self) -> bool:
        return bool(self.geo_databases or self.as_databases)

    def maybe_reload(self, now: float) -> bool:
        """Reload changed databases (see `ReloadingDatabase`); True if any was."""
        reloaded = False
        for database in (*self.geo_databases, *self.as_databases):
            reloaded |= database.maybe_reload(now)
        return reloaded

    def lookup(self, address: str, address_class: str = PUBLIC) -> GeoFields:
        """Ready-made (source.*, destination.*) fields; empty for non-public addresses or no match."""
        if address_class != PUBLIC or not self.enabled:
            return NO_FIELDS
        self.lookups += 1
        address = database_address(address)
        fields: Fields = {}
        for database in self.geo_databases:
            model = database.lookup(address)
            if model is not None:
                fields.update(_geo_fields(model))
                break
        for database in self.as_databases:
            model = database.lookup(address)
            if model is not None and model.autonomous_system_number is not None:
                fields.update(_as_fields(model))
                break
        if not fields:
            self.not_found += 1
            return NO_FIELDS
        return (
            {"source." + key: value for key, value in fields.items()},
            {"destination." + key: value for key, value in fields.items()},
        )

    def stats(self) -> dict[str, int]:
        databases = (*self.geo_databases, *self.as_databases)
        return {
            "geoip_lookups": self.lookups,
            "geoip_not_found": self.not_found,
            "geoip_reloads": sum(d.reloads for d in databases),
            "geoip_load_errors": sum(d.load_errors for d in databases),
        }

    def close(self) -> None:
        for database in (*self.geo_databases, *self.as_databases):
            database.close()
