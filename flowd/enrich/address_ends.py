"""The addresses of one end of every flow in a table (source or destination): what is known of
each distinct address, looked up once and cached, added to the table as field groups.

What an address adds (address class, GeoIP/ASN fields, the operator's network name) is merged
once into an `AddressInfo`, rendered to JSON once while it is cached, and each row only points
at its group. IPv4 columns kept as integers and IPv6 ones as 16-byte values are looked up a whole
table at a time in numpy caches (`ipv4_cache.py`) that hold what an address adds as numbers
(`_ATTRIBUTES`, the groups by number); only first-seen addresses cost Python work. The `End`
that comes back is what direction, the Community ID and reverse DNS read of those addresses.
"""

from __future__ import annotations

import socket
from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.enrich.addresses import INVALID, AddressClassifier, AddressFacts
from flowd.enrich.cache import Clock, TtlLruCache
from flowd.enrich.geoip import GEOIP_CACHE_TTL_S, NO_FIELDS, GeoFields, GeoIpLookup
from flowd.enrich.ipv4_cache import Ipv4Cache, Ipv6Cache
from flowd.output.distinct import unique_inverse
from flowd.output.render import IPV6_DTYPE, ipv6_texts
from flowd.output.table import FieldGroup, Table

_ATTRIBUTES = ("valid", "internal", "length", "source_group", "destination_group")
"""What the enrichment needs of an address, as integers (the groups by number, -1: none)."""
_VALID, _INTERNAL, _LENGTH, _SOURCE_GROUP, _DESTINATION_GROUP = range(len(_ATTRIBUTES))
_NO_ROW = (0, 0, 0, -1, -1)
"""`_ATTRIBUTES` of a row without an address."""
MAX_ADDRESS_GROUPS = 65_536
"""Distinct address field groups numbered before the address caches start again (each is a few
hundred bytes; as many as `FieldGroup.shared` keeps)."""


class AddressInfo:
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


class End:
    """One end of every flow in a table: its distinct addresses, what is known of each
    (`_ATTRIBUTES` as numbers, and the `AddressInfo`s when reverse DNS needs them), each row's index."""

    __slots__ = ("_infos", "_texts", "addresses", "facts", "index")

    def __init__(
        self,
        addresses: list[Any] | npt.NDArray[np.uint32],
        index: npt.NDArray[np.intp],
        facts: npt.NDArray[np.int64],
        infos: list[AddressInfo | None] | None,
    ) -> None:
        self.addresses = addresses
        """Distinct addresses: strings (None among them for rows without one), or IPv4 integers."""
        self.index = index
        self.facts = facts
        self._infos = infos
        self._texts: list[str | None] | None = None

    @property
    def infos(self) -> list[AddressInfo | None]:
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


class AddressEnds:
    """The address caches of an enrichment chain, and the lookup of a table's end through them.

    Address facts and GeoIP fields are merged per address; the caches are cleared when a database
    is reloaded, the operator's networks change, or the numbered groups pass `MAX_ADDRESS_GROUPS`.
    Flow addresses are held only here: `_info` bypasses the classifier's own cache (which serves
    exporter addresses), and GeoIP lookups keep nothing; holding each address in three caches
    tripled their memory (75 MB full at the default size, 29 MB now)."""

    def __init__(
        self, classifier: AddressClassifier, geoip: GeoIpLookup, size: int, clock: Clock, keep_infos: bool
    ) -> None:
        self.classifier = classifier
        self.geoip = geoip
        self.keep_infos = keep_infos
        """Whether each `End` carries its `AddressInfo`s (reverse DNS reads them)."""
        self.address_cache: TtlLruCache[str, AddressInfo] = TtlLruCache(size, GEOIP_CACHE_TTL_S, clock, "address_info")
        # The same for IPv4 addresses as integers and IPv6 ones as 16-byte values, looked up a
        # table at a time in numpy.
        self.ipv4_cache: Ipv4Cache[AddressInfo] = Ipv4Cache(
            size, GEOIP_CACHE_TTL_S, len(_ATTRIBUTES), clock, "address_info"
        )
        self.ipv6_cache: Ipv6Cache[AddressInfo] = Ipv6Cache(
            size, GEOIP_CACHE_TTL_S, len(_ATTRIBUTES), clock, "address_info"
        )
        self._groups: list[FieldGroup] = []
        """Address field groups by number: the IPv4 cache keeps each address's as integers."""
        self._group_numbers: dict[int, int] = {}
        """id() of a group in `_groups` -> its number."""

    def full(self) -> bool:
        """Whether the numbered groups passed `MAX_ADDRESS_GROUPS` (the caches must start again)."""
        return len(self._groups) > MAX_ADDRESS_GROUPS

    def clear(self) -> None:
        self.address_cache.clear()
        self.ipv4_cache.clear()
        self.ipv6_cache.clear()
        self._groups.clear()
        self._group_numbers.clear()

    def stats(self) -> dict[str, int]:
        """One figure for the three address caches."""
        ipv4, ipv6 = self.ipv4_cache.stats(), self.ipv6_cache.stats()
        return {name: value + ipv4[name] + ipv6[name] for name, value in self.address_cache.stats().items()}

    def add(self, table: Table, key: str, now: float) -> End | None:
        """GeoIP, ASN and address class of one end, per distinct address."""
        raw = table.factorize_array(key)
        if raw is not None and raw[0].dtype.kind == "u" and raw[0].dtype.itemsize == 4:
            return self._add_cached(table, key, self.ipv4_cache, raw[0].astype(np.uint32), raw[1], now)
        if raw is not None and raw[0].dtype == IPV6_DTYPE:
            return self._add_cached(table, key, self.ipv6_cache, raw[0], raw[1], now)
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
        return End(addresses, index, facts, known)

    def _add_cached(
        self,
        table: Table,
        key: str,
        cache: Ipv4Cache[AddressInfo],
        numbers: npt.NDArray[Any],
        index: npt.NDArray[np.intp],
        now: float,
    ) -> End:
        """`add` for a column of IPv4 addresses as integers or IPv6 ones as 16-byte values
        (`numbers`, distinct): the cache is searched for all of them at once, and what each adds
        comes back as numbers (`_ATTRIBUTES`); only first-seen addresses cost Python work."""
        slots = cache.lookup(numbers, now)
        facts = cache.rows(slots)
        found = np.flatnonzero(slots >= 0)
        infos: list[AddressInfo | None] | None = None
        if self.keep_infos:  # reverse DNS reads the infos; taken before `put_many` can evict
            infos = [None] * len(numbers)
            for position, slot in zip(found.tolist(), slots[found].tolist(), strict=True):
                infos[position] = cache.value(slot)
        missing = np.flatnonzero(slots < 0)
        if len(missing):
            new_numbers = numbers[missing]
            new_infos = [self._info(text, now) for text in _texts(new_numbers)]
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
        return End(numbers, index, facts, infos)

    def _info(self, address: str, now: float) -> AddressInfo:
        """Facts and GeoIP fields of an address, for the address caches to keep."""
        facts = self.classifier.facts(address, now, cache=False)
        geo = self.geoip.lookup(address, facts.address_class) if facts is not INVALID else NO_FIELDS
        return AddressInfo(facts, geo)

    def _address(self, address: str, now: float) -> AddressInfo:
        """The facts of an address, cached."""
        info = self._info(address, now)
        if info.valid:
            self.address_cache.put(address, info, now)
        return info

    def _attributes(self, info: AddressInfo | None) -> tuple[int, int, int, int, int]:
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


def ipv4_text(number: int) -> str:
    return socket.inet_ntoa(number.to_bytes(4, "big"))


def _texts(addresses: npt.NDArray[Any]) -> list[str]:
    """IPv4 addresses (integers) or IPv6 ones (16-byte values) as text."""
    if addresses.dtype == IPV6_DTYPE:
        return ipv6_texts(addresses)
    return [ipv4_text(number) for number in addresses.tolist()]
