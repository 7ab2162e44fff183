"""Records that leave the decoders, and the result type every decoder returns."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

Exporter = tuple[str, int]
"""The datagram's source (address, port); the observation domain is kept apart."""

KIND_NETFLOW_FLOW = "netflow_flow"
KIND_NETFLOW_OPTIONS = "netflow_options"
KIND_SFLOW_FLOW = "sflow_flow"
KIND_SFLOW_COUNTERS = "sflow_counters"
KIND_SFLOW_DROP = "sflow_drop"


@dataclass(slots=True)
class FlowRecord:
    """One decoded flow, options record or sFlow sample.

    `fields` holds the raw values keyed by information-element name in snake_case
    (NetFlow/IPFIX) or by `sflow.*`-relative names (sFlow); documents are built from it.
    """

    kind: str
    exporter: Exporter
    version: int
    received_at: float
    fields: dict[str, Any]
    domain_id: int = 0
    """IPFIX observation domain, v9 source id, or sFlow sub-agent id."""
    template_id: int = 0
    sequence: int = 0
    export_time: int = 0
    """Export time from the message header, seconds since the epoch."""
    uptime_ms: int | None = None
    """Exporter sysUpTime from the header (v5, v9, sFlow), for relative timestamps."""
    sampling_rate: int = 1
    """Packet sampling rate the raw counters are to be scaled by (1: unsampled or unknown)."""


class FlowList(Sequence[FlowRecord]):
    """The records of one datagram, in order: single records and whole decoded data sets.

    A data set decoded at once (a columnar batch) is kept as one part and only turned into
    FlowRecords when somebody iterates it, so counting and batch-wise consumers pay nothing per
    record.
    """

    __slots__ = ("_length", "_parts")

    def __init__(self, records: Iterable[FlowRecord] = ()) -> None:
        self._parts: list[Sequence[FlowRecord]] = []
        self._length = 0
        if records:
            self.extend(records)

    def append(self, record: FlowRecord) -> None:
        if self._parts and isinstance(self._parts[-1], list):
            self._parts[-1].append(record)
        else:
            self._parts.append([record])
        self._length += 1

    def extend(self, records: Iterable[FlowRecord]) -> None:
        for record in records:
            self.append(record)

    def add_batch(self, batch: Sequence[FlowRecord]) -> None:
        """Add a whole decoded set; it stays unmaterialised until iterated."""
        if len(batch):
            self._parts.append(batch)
            self._length += len(batch)

    @property
    def parts(self) -> list[Sequence[FlowRecord]]:
        return self._parts

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[FlowRecord]:
        for part in self._parts:
            yield from part

    @overload
    def __getitem__(self, index: int) -> FlowRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[FlowRecord]: ...

    def __getitem__(self, index: int | slice) -> FlowRecord | list[FlowRecord]:
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(index)
        for part in self._parts:
            if index < len(part):
                return part[index]
            index -= len(part)
        raise IndexError(index)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FlowList | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FlowList({len(self)} records in {len(self._parts)} parts)"


@dataclass(slots=True)
class SoftError:
    """A problem inside a datagram that did not stop the rest of it from decoding."""

    reason: str
    message: str
    offset: int | None = None


@dataclass(slots=True)
class DecodeResult:
    """What one datagram produced."""

    version: int
    flows: FlowList = field(default_factory=FlowList)
    """Flow records and sFlow samples, including parked records released by a new template."""
    options: list[FlowRecord] = field(default_factory=list)
    """Options records (sampling, interface and application tables)."""
    errors: list[SoftError] = field(default_factory=list)
    templates_added: int = 0
    templates_withdrawn: int = 0
    parked: int = 0
    """Data sets held back because their template is not known yet."""
    unparked_records: int = 0
    """Of `flows` and `options`, the records of parked sets that a template in this datagram released."""
    declared_records: int | None = None
    """Record count the header claims (v5, v9), when it has one."""
