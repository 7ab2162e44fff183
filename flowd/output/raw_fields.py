"""The raw protocol fields that flow documents keep (`output.raw_fields`).

ECS and `flowd.*` fields hold what the dashboards and most searches use. The raw `netflow.*` and
`sflow.*` fields repeat much of it under the exporter's own names, and they are a third (NetFlow,
IPFIX) to a half (sFlow) of a document's bytes. Operators who never search them drop them, as
ElastiFlow's `KEEP_ORIG_DATA=false` did, and save that share of the storage and of the serialising.
The exporter's identity (`netflow.type`, `netflow.exporter.*`) always stays: Filebeat's views and
the Overview dashboard use it.

Only flow documents are trimmed: options, counter and drop documents consist of their raw
fields. The trimming runs after enrichment, which reads raw fields (ICMP types, application ids,
sampled headers).
"""

from __future__ import annotations

from typing import Any

from flowd.config_values import RAW_NAMESPACES, parse_raw_fields
from flowd.model import KIND_NETFLOW_FLOW, KIND_SFLOW_FLOW
from flowd.output.table import DocumentTable, FieldGroup

ALWAYS_KEPT_NAMES = frozenset({"netflow.type"})
ALWAYS_KEPT_PREFIXES = ("netflow.exporter.",)
TRIMMED_KINDS = frozenset({KIND_NETFLOW_FLOW, KIND_SFLOW_FLOW})


class RawFieldFilter:
    """Drops the raw fields `output.raw_fields` does not list from flow documents."""

    __slots__ = ("_decisions", "_names", "_prefixes")

    def __init__(self, names: frozenset[str], prefixes: tuple[str, ...]) -> None:
        self._names = names | ALWAYS_KEPT_NAMES
        self._prefixes = prefixes + ALWAYS_KEPT_PREFIXES
        self._decisions: dict[str, bool] = {}
        """Each key's verdict, computed once: documents repeat a few hundred keys."""

    @classmethod
    def from_patterns(cls, patterns: list[str]) -> RawFieldFilter | None:
        """The filter `output.raw_fields` asks for, or None when every raw field stays."""
        parsed = parse_raw_fields(patterns)
        return None if parsed is None else cls(*parsed)

    def keeps(self, key: str) -> bool:
        decision = self._decisions.get(key)
        if decision is None:
            decision = not key.startswith(RAW_NAMESPACES) or key in self._names or key.startswith(self._prefixes)
            self._decisions[key] = decision
        return decision

    def trim_table(self, table: DocumentTable) -> None:
        """Removes the unlisted raw columns and constants of a flow table, before it renders."""
        if table.constants.get("event.action") not in TRIMMED_KINDS:
            return
        keeps = self.keeps
        for key in [k for k in table.fields if not keeps(k)]:
            del table.fields[key]
        for key in [k for k in table.constants if not keeps(k)]:
            del table.constants[key]
        for position, (distinct, index) in enumerate(table.groups):
            if any(group is not None and not all(map(keeps, group.keys)) for group in distinct):
                trimmed = [None if group is None else self._trimmed_group(group) for group in distinct]
                table.groups[position] = (trimmed, index)

    def _trimmed_group(self, group: FieldGroup) -> FieldGroup | None:
        if all(map(self.keeps, group.keys)):
            return group
        fields = {key: value for key, value in group.fields.items() if self.keeps(key)}
        return FieldGroup(fields) if fields else None

    def trim_documents(self, documents: list[dict[str, Any]]) -> None:
        """As `trim_table`, for documents decoded one by one (each is checked for its kind)."""
        keeps = self.keeps
        for document in documents:
            if document.get("event.action") in TRIMMED_KINDS:
                for key in [k for k in document if not keeps(k)]:
                    del document[key]
