"""`network.application` of every flow in a table: the operator's name for the server endpoint,
else the exporter's application name or id, else the service name of the server port.

A decoded table without application columns is named in numpy (ports looked up per transport
in `ServiceNames.names_by_port`, one field group per distinct name); tables that carry the
exporter's application fields, or names already, go row by row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.config_values import parse_address_key
from flowd.decode.memo import MEMO_CLEARS
from flowd.enrich.columns import distinct_pairs, factorized, port_column
from flowd.enrich.services import ApplicationTable, ServiceNames, clean_name
from flowd.errors import ConfigError
from flowd.output.distinct import unique_inverse
from flowd.output.table import FieldGroup, Table

_APPLICATION_KEYS = ("netflow.panos_app_id", "netflow.application_name", "netflow.application_id")
MAX_APPLICATION_GROUPS = 65_536
"""Application names whose field group is kept (cleared whole when full, as the vendors' are)."""


def parse_endpoint_applications(configured: dict[str, str]) -> dict[tuple[str, int], str]:
    """`enrich.endpoint_applications` checked: (address as documents write it, port) -> name."""
    applications = {}
    for key, name in configured.items():
        clean = clean_name(name)
        if clean is None:
            raise ConfigError(f"enrich.endpoint_applications: the name of {key!r} is empty or not printable")
        applications[parse_address_key(key, "enrich.endpoint_applications", "server_ip:port", 65_535)] = clean
    return applications


class ApplicationNamer:
    """Writes `network.application` from the chain's service names, the application tables
    exporters sent, and the operator's endpoint names (`endpoint_applications`, set on reload)."""

    def __init__(self, services: ServiceNames, applications: ApplicationTable) -> None:
        self.services = services
        self.applications = applications
        self.endpoint_applications: dict[tuple[str, int], str] = {}
        self._application_groups: dict[str, FieldGroup] = {}

    def add(self, table: Table) -> None:
        """`network.application`: the operator's name for the server endpoint, else the exporter's
        application name or id, else the service name."""
        if any(table.column(key) is not None for key in (*_APPLICATION_KEYS, "network.application")):
            self._add_row_by_row(table)
            return
        count = len(table)
        configured, configured_names = self._endpoint_application_codes(table)
        transports = table.factorize("network.transport")
        if transports is None:
            transports = ([None], np.zeros(count, dtype=np.intp))
        names, transport_index = transports
        source_port = port_column(table, "source.port", count, missing=-1)
        destination_port = port_column(table, "destination.port", count, missing=-1)
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
            pairs, index = distinct_pairs(factorized(table, address_key), factorized(table, port_key))
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

    def _add_row_by_row(self, table: Table) -> None:
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


def _lookup_ports(ports: npt.NDArray[np.int64], names_by_port: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """`names_by_port` of each port; 0 for a missing one (-1) or one past 65,535."""
    if not len(ports):
        return np.zeros(0, dtype=np.int32)
    if ports.min() >= 0 and ports.max() < len(names_by_port):
        return names_by_port[ports]
    valid = (ports >= 0) & (ports < len(names_by_port))
    return np.where(valid, names_by_port[np.where(valid, ports, 0)], 0)
