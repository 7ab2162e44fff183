"""Service names of well-known ports, protocol names, and application names for `network.application`.

Ports and protocols come from /etc/services and /etc/protocols when present (any file in their
format), else from a small bundled table. Application names come, in order of preference, from
the flow itself (a Palo Alto App-ID string, an `application_name` element), from the NBAR/app-id
table an exporter sends in options records (`application_id` -> `application_name`, RFC 6759),
and last from the service name of the flow's server port.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.enrich.cache import Clock, TtlLruCache

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 128
APPLICATION_TABLE_SIZE = 65_536
PORT_COUNT = 65_536
APPLICATION_TABLE_TTL_S = 7 * 86_400.0
"""Exporters resend their application tables every few minutes to hours; a week outlives that."""

BUNDLED_SERVICES: dict[tuple[str, int], str] = {
    (transport, port): name
    for name, port, transports in (
        ("ftp-data", 20, ("tcp",)),
        ("ftp", 21, ("tcp",)),
        ("ssh", 22, ("tcp",)),
        ("telnet", 23, ("tcp",)),
        ("smtp", 25, ("tcp",)),
        ("domain", 53, ("tcp", "udp")),
        ("bootps", 67, ("udp",)),
        ("bootpc", 68, ("udp",)),
        ("tftp", 69, ("udp",)),
        ("http", 80, ("tcp", "udp")),
        ("kerberos", 88, ("tcp", "udp")),
        ("pop3", 110, ("tcp",)),
        ("ntp", 123, ("udp",)),
        ("imap2", 143, ("tcp",)),
        ("snmp", 161, ("udp",)),
        ("snmp-trap", 162, ("udp",)),
        ("bgp", 179, ("tcp",)),
        ("ldap", 389, ("tcp", "udp")),
        ("https", 443, ("tcp", "udp")),
        ("microsoft-ds", 445, ("tcp",)),
        ("syslog", 514, ("udp",)),
        ("submission", 587, ("tcp",)),
        ("ldaps", 636, ("tcp",)),
        ("imaps", 993, ("tcp",)),
        ("pop3s", 995, ("tcp",)),
        ("openvpn", 1194, ("tcp", "udp")),
        ("ms-sql-s", 1433, ("tcp",)),
        ("radius", 1812, ("udp",)),
        ("nfs", 2049, ("tcp", "udp")),
        ("netflow", 2055, ("udp",)),
        ("mysql", 3306, ("tcp",)),
        ("ms-wbt-server", 3389, ("tcp",)),
        ("ipfix", 4739, ("tcp", "udp", "sctp")),
        ("sip", 5060, ("tcp", "udp")),
        ("postgresql", 5432, ("tcp",)),
        ("sflow", 6343, ("udp",)),
        ("http-alt", 8080, ("tcp",)),
    )
    for transport in transports
}

BUNDLED_PROTOCOLS: dict[int, str] = {
    0: "hopopt", 1: "icmp", 2: "igmp", 4: "ipencap", 6: "tcp", 8: "egp", 17: "udp", 41: "ipv6", 43: "ipv6-route",
    44: "ipv6-frag", 46: "rsvp", 47: "gre", 50: "esp", 51: "ah", 58: "ipv6-icmp", 59: "ipv6-nonxt", 60: "ipv6-opts",
    88: "eigrp", 89: "ospf", 94: "ipip", 103: "pim", 112: "vrrp", 115: "l2tp", 132: "sctp", 136: "udplite",
    137: "mpls-in-ip",
}  # fmt: skip

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_name(value: object) -> str | None:
    """A printable, bounded name from exporter-supplied text, or None if nothing is left."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = _CONTROL.sub("", value).strip()[:MAX_NAME_CHARS]
    return text or None


def parse_services(lines: Iterable[str]) -> dict[tuple[str, int], str]:
    """`name port/transport [aliases] [# comment]` lines; the first name for a port wins."""
    table: dict[tuple[str, int], str] = {}
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        port_text, _, transport = fields[1].partition("/")
        if not port_text.isdigit() or not transport:
            continue
        port = int(port_text)
        if port < 65536:
            table.setdefault((transport.lower(), port), fields[0])
    return table


PSEUDO_PROTOCOL = (0, "ip")
"""netbase's first /etc/protocols line, `ip 0` ("pseudo protocol number": IPPROTO_IP, a socket
option level), not the protocol numbered 0, which IANA and ECS `network.transport` call HOPOPT."""


def parse_protocols(lines: Iterable[str]) -> dict[int, str]:
    """`name number [aliases]` lines; the first name for a number wins, the pseudo entry aside."""
    table: dict[int, str] = {}
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[1].isdigit() and int(fields[1]) < 256:
            number, name = int(fields[1]), fields[0].lower()
            if (number, name) != PSEUDO_PROTOCOL:
                table.setdefault(number, name)
    return table


def _read_lines(path: str) -> list[str] | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.readlines()
    except OSError as error:
        log.info("%s not read (%s); using the bundled table", path, error)
        return None


class ServiceNames:
    """(transport, port) -> service name, and IP protocol number -> name."""

    def __init__(self, services_path: str = "/etc/services", protocols_path: str = "/etc/protocols") -> None:
        lines = _read_lines(services_path) if services_path else None
        self.services = parse_services(lines) if lines else dict(BUNDLED_SERVICES)
        lines = _read_lines(protocols_path) if protocols_path else None
        self.protocols = {**BUNDLED_PROTOCOLS, **(parse_protocols(lines) if lines else {})}
        self._by_transport: dict[str, npt.NDArray[np.int32]] = {}
        self.service_names: list[str] = []
        self._name_numbers: dict[str, int] = {}

    def names_by_port(self, transport: str) -> npt.NDArray[np.int32] | None:
        """For every port 0-65535 on `transport`, 1 + the index of its name in `service_names`,
        0 without one (None when the transport has no named port): whole port columns are
        looked up with one gather."""
        found = self._by_transport.get(transport)
        if found is None:
            known = sorted((port, name) for (kind, port), name in self.services.items() if kind == transport)
            numbers = self._name_numbers
            found = np.zeros(PORT_COUNT, dtype=np.int32)
            for port, name in known:
                if name not in numbers:
                    numbers[name] = len(self.service_names)
                    self.service_names.append(name)
                if 0 <= port < PORT_COUNT:
                    found[port] = numbers[name] + 1
            if not found.any():
                found = np.zeros(0, dtype=np.int32)  # "no named port" is cached too
            if len(self._by_transport) < 64:  # transports are a handful; bound it anyway
                self._by_transport[transport] = found
        return found if len(found) else None

    def service(self, transport: str, port: int) -> str | None:
        return self.services.get((transport, port))

    def protocol(self, number: int) -> str | None:
        return self.protocols.get(number)

    def server_service(self, transport: str, source_port: Any, destination_port: Any) -> str | None:
        """Service name of the flow's server side: the port with a known service, the lower one if both."""
        services = self.services
        destination = services.get((transport, destination_port)) if destination_port is not None else None
        source = services.get((transport, source_port)) if source_port is not None else None
        if destination is not None and (source is None or destination_port <= source_port):
            return destination
        return source


class ApplicationTable:
    """Application names an exporter announced in options data, keyed by (exporter, application id)."""

    def __init__(
        self,
        max_size: int = APPLICATION_TABLE_SIZE,
        ttl_s: float = APPLICATION_TABLE_TTL_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self.table: TtlLruCache[tuple[str, str], str] = TtlLruCache(max_size, ttl_s, clock, "application_names")
        self.learned = 0

    def learn(self, exporter: str, application_id: object, name: object) -> bool:
        key_id = application_key(application_id)
        clean = clean_name(name)
        if key_id is None or clean is None:
            return False
        self.table.put((exporter, key_id), clean)
        self.learned += 1
        return True

    def name(self, exporter: str, application_id: object, now: float | None = None) -> str | None:
        key_id = application_key(application_id)
        if key_id is None:
            return None
        return self.table.get((exporter, key_id), now)

    def stats(self) -> dict[str, int]:
        return {**self.table.stats(), "application_names_learned": self.learned}


def application_key(application_id: object) -> str | None:
    """Application ids decode as hex strings (octetArray); some exporters send a number."""
    if isinstance(application_id, str):
        return application_id.lower() or None
    if isinstance(application_id, bytes):
        return application_id.hex() or None
    if isinstance(application_id, int):
        return format(application_id, "x")
    return None
