"""Interface names per (exporter, ifIndex), from configuration and from options data.

Exporters announce their interface table in options records (IPFIX `interfaceName` 82 and
`interfaceDescription` 83, scoped by `ingressInterface` or the v9 interface scope). Names the
operator configures (`enrich.interface_names`, "exporter_ip:ifindex" -> name) win over learned
ones. The learned table is bounded like every table keyed by what the network sends.
"""

from __future__ import annotations

import time
from typing import Any

from flowd.config_values import parse_address_key
from flowd.enrich.cache import Clock, TtlLruCache
from flowd.enrich.services import clean_name

INTERFACE_TABLE_SIZE = 65_536
"""Learned (exporter, ifIndex) names per worker, least recently used evicted (counted). A worker
learns only its own exporters' tables; at 128-character names and descriptions an entry costs
about 780 bytes, so 262,144 could take 195 MB, more than a worker's whole budget."""
INTERFACE_TABLE_TTL_S = 7 * 86_400.0
IFINDEX_KEYS = ("netflow.ingress_interface", "netflow.scope_interface", "netflow.egress_interface")

Names = tuple[str | None, str | None]
"""(name, description)"""


def parse_interface_key(text: str) -> tuple[str, int]:
    """Parse "exporter:ifindex", with the exporter an IPv4 address or a (bracketed or bare) IPv6 address."""
    return parse_address_key(text, "enrich.interface_names", "exporter_ip:ifindex")


def parse_configured_names(configured: dict[str, str]) -> dict[tuple[str, int], str]:
    """`enrich.interface_names` checked and cleaned; `ConfigError` for a key that is not exporter:ifindex."""
    names = {}
    for key, name in configured.items():
        clean = clean_name(name)
        if clean is not None:
            names[parse_interface_key(key)] = clean
    return names


class InterfaceNames:
    def __init__(
        self,
        configured: dict[str, str] | None = None,
        max_size: int = INTERFACE_TABLE_SIZE,
        ttl_s: float = INTERFACE_TABLE_TTL_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self.configured = parse_configured_names(configured or {})
        self.learned: TtlLruCache[tuple[str, int], Names] = TtlLruCache(max_size, ttl_s, clock, "interface_names")
        self.learned_records = 0

    def learn(self, exporter: str, ifindex: int, name: Any, description: Any = None) -> bool:
        names = (clean_name(name), clean_name(description))
        if names == (None, None):
            return False
        self.learned.put((exporter, ifindex), names)
        self.learned_records += 1
        return True

    def learn_from_options(self, document: dict[str, Any]) -> bool:
        exporter = document.get("observer.ip")
        if not isinstance(exporter, str):
            return False
        name = document.get("netflow.interface_name")
        description = document.get("netflow.interface_description")
        if name is None and description is None:
            return False
        for key in IFINDEX_KEYS:
            ifindex = document.get(key)
            if isinstance(ifindex, int):
                return self.learn(exporter, ifindex, name, description)
        return False

    def lookup(self, exporter: str, ifindex: int, now: float | None = None) -> Names | None:
        key = (exporter, ifindex)
        configured = self.configured.get(key)
        if configured is not None:
            return configured, None
        return self.learned.get(key, now)

    def stats(self) -> dict[str, int]:
        return {
            **self.learned.stats(),
            "interface_names_configured": len(self.configured),
            "interface_names_learned": self.learned_records,
        }
