"""Records that leave the decoders, and the result type every decoder returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Exporter = tuple[str, int]
"""The datagram's source (address, port); the observation domain is kept apart."""

KIND_NETFLOW_FLOW = "netflow_flow"
KIND_NETFLOW_OPTIONS = "netflow_options"
KIND_SFLOW_FLOW = "sflow_flow"
KIND_SFLOW_COUNTERS = "sflow_counters"


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
    flows: list[FlowRecord] = field(default_factory=list)
    """Flow records and sFlow samples, including parked records released by a new template."""
    options: list[FlowRecord] = field(default_factory=list)
    """Options records (sampling, interface and application tables)."""
    errors: list[SoftError] = field(default_factory=list)
    templates_added: int = 0
    templates_withdrawn: int = 0
    parked: int = 0
    """Data records held back because their template is not known yet."""
    declared_records: int | None = None
    """Record count the header claims (v5, v9), when it has one."""
