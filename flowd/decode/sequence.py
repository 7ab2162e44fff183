"""Export sequence numbers: what was lost between an exporter and flowd's socket.

Every protocol numbers its exports per exporter and domain, so a collector that knows the
number to expect next sees exports that never arrived (dropped on the path, or by the exporter's
own queues): flowd's own socket drops are counted apart, from the kernel. What a number counts
differs by protocol, and so does what is reported missing:

- NetFlow v5: flows sent before this datagram (per engine type and id): + the header's count.
- NetFlow v9: export packets (RFC 3954 section 5.1), per source id: + 1 a datagram.
- IPFIX: data records sent before this message (RFC 7011 section 3.1), per transport session
  (over UDP: the exporter's address and port) and observation domain: + the data records it
  carries, options data included, template records not. Counting them needs every data set's
  template; a message with one unknown or of variable length leaves the next message unchecked.
  Two exporting processes on one device (line cards, or a restart from a new port) number apart.
- sFlow v5: datagrams, per agent address and sub-agent: + 1 a datagram.

Pure: bytes and numbers in, events out; the worker counts the events per exporter.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from flowd.decode.flowsets import FIRST_DATA_SET_ID, SET_HEADER
from flowd.decode.records import CompiledTemplate
from flowd.model import Exporter

SEQUENCE_SPACE = 1 << 32
"""Every protocol's sequence number is an unsigned 32-bit counter that wraps."""

LARGEST_GAP = 1 << 24
"""A jump further ahead than this is an exporter that restarted, not loss (16 M flows or
datagrams lost between two exports that did arrive)."""

LATE_EXPORTS = 64
"""An export numbered up to this many exports' worth (of its own size) behind the expected one
arrived out of order; further behind, the exporter restarted its count."""

MAX_STREAMS = 65_536
"""Streams (exporter, protocol, domain) tracked; beyond, the longest-known is forgotten, so a
spoofed flood cannot grow the table without bound."""

GAP, LATE, DUPLICATE, RESET, UNNUMBERED = "gap", "late", "duplicate", "reset", "unnumbered"
"""Events: exports missing before this one; an export older than the expected one; the same
number as the export before it (sent twice); a number that is neither (the exporter restarted);
the same number a third time in a row: an exporter that does not number its exports (many v5
exporters send 0), reported once and not checked again until its number moves."""

_REPEATED = -1
_NOT_NUMBERED = -2
"""Markers in a stream's third slot (never a sequence number): its last export repeated the
number before it; it repeats its number every time."""

_V5 = struct.Struct("!HH12xIBB")
"""NetFlow v5 header: version, count, (uptime, seconds, nanoseconds), flow sequence, engine type, id."""
_V9 = struct.Struct("!H10xII")
"""NetFlow v9 header: version, (count, uptime, seconds), sequence, source id."""
_IPFIX = struct.Struct("!HH4xII")
"""IPFIX header: version, length, (export time), sequence, observation domain."""
_SFLOW_IPV4 = struct.Struct("!II4sII")
_SFLOW_IPV6 = struct.Struct("!II16sII")
"""sFlow v5 header to the sequence: version, agent address type, agent address, sub-agent, sequence."""

StreamKey = tuple[str, str, Any]
"""(exporter address, protocol, domain): what one sequence counter numbers."""
Mark = tuple[str, Any, int, int | None]
"""(protocol, domain, sequence, units this export adds, None when not known)."""
TemplateLookup = Callable[[tuple[Exporter, int, int, int], float], CompiledTemplate | None]


UNCOUNTED = -1
"""`export_mark`'s `data_records` when nobody counted an IPFIX message's records as it was decoded."""


def export_mark(
    data: bytes, exporter: Exporter, templates: TemplateLookup, now: float, data_records: int | None = UNCOUNTED
) -> Mark | None:
    """The sequence number a datagram carries and what it counts; None for anything else
    (unknown versions, truncated headers: the decoders count those). `data_records` is an IPFIX
    message's (`ipfix_data_records`) counted when it was decoded, with the templates of that
    moment; UNCOUNTED counts them now."""
    size = len(data)
    if size < 16:
        return None
    version = (data[0] << 8) | data[1]
    if version == 5 and size >= _V5.size:
        _, count, sequence, engine_type, engine_id = _V5.unpack_from(data)
        return "netflow_v5", (engine_type, engine_id), sequence, count
    if version == 9 and size >= _V9.size:
        _, sequence, source_id = _V9.unpack_from(data)
        return "netflow_v9", source_id, sequence, 1
    if version == 10:
        _, _, sequence, domain = _IPFIX.unpack_from(data)
        if data_records == UNCOUNTED:
            data_records = ipfix_data_records(data, exporter, templates, now)
        return "ipfix", (exporter[1], domain), sequence, data_records  # per transport session
    if version == 0 and data[2] == 0 and data[3] == 5 and size >= _SFLOW_IPV4.size:
        _, address_type, agent, sub_agent, sequence = _SFLOW_IPV4.unpack_from(data)
        if address_type == 2:
            if size < _SFLOW_IPV6.size:
                return None
            _, _, agent, sub_agent, sequence = _SFLOW_IPV6.unpack_from(data)
        elif address_type != 1:
            return None
        return "sflow", (agent, sub_agent), sequence, 1
    return None


def ipfix_data_records(data: bytes, exporter: Exporter, templates: TemplateLookup, now: float) -> int | None:
    """Data records in an IPFIX message's data sets, counted from their templates' record
    lengths; None when a data set's template is unknown or of variable length, or the message
    or its sets do not parse."""
    if len(data) < _IPFIX.size:
        return None
    version, length, _, domain_id = _IPFIX.unpack_from(data)
    size = min(length, len(data))
    records = 0
    pos = _IPFIX.size
    while size - pos >= SET_HEADER.size:
        set_id, length = SET_HEADER.unpack_from(data, pos)
        if length < SET_HEADER.size or pos + length > size:
            return None
        if set_id >= FIRST_DATA_SET_ID:
            template = templates((exporter, version, domain_id, set_id), now)
            if template is None or not template.is_fixed:
                return None
            records += (length - SET_HEADER.size) // template.record_length
        pos += length
    return records


class SequenceTracker:
    """The number each stream's next export should carry, and what an arriving one says."""

    def __init__(self, max_streams: int = MAX_STREAMS) -> None:
        self.max_streams = max_streams
        self.evicted = 0
        """Streams forgotten to make room: their next export is checked against nothing."""
        self.streams: dict[StreamKey, tuple[int | None, int, int | None]] = {}
        """key -> (the number expected next, None when not known; the last number seen; the
        number after the last late export, which the next one carries if the exporter restarted
        its count a little way back rather than sent out of order, or a marker of repeats). A
        caller may take an export numbered as expected itself (the worker does, for speed):
        (next, number, None)."""

    def __len__(self) -> int:
        return len(self.streams)

    def observe(self, key: StreamKey, sequence: int, units: int | None) -> tuple[str | None, int]:
        """The event an export numbered `sequence` makes (None: as expected, or nothing to check
        against) and how many units went missing before it."""
        streams = self.streams
        known = streams.get(key)
        following = None if units is None else (sequence + units) % SEQUENCE_SPACE
        if known is None:
            if len(streams) >= self.max_streams:
                del streams[next(iter(streams))]
                self.evicted += 1
            streams[key] = (following, sequence, None)
            return None, 0
        expected, last, after_late = known
        if after_late == _NOT_NUMBERED:
            if sequence != last:  # numbering now: check from the next export on
                streams[key] = (following, sequence, None)
            return None, 0
        if expected is None or sequence == expected:
            streams[key] = (following, sequence, None)
            return None, 0
        if sequence == after_late:  # the late export's successor: the count restarted there
            streams[key] = (following, sequence, None)
            return RESET, 0
        ahead = (sequence - expected) % SEQUENCE_SPACE
        if ahead <= LARGEST_GAP:
            streams[key] = (following, sequence, None)
            return GAP, ahead
        if sequence == last:
            if after_late == _REPEATED:
                streams[key] = (None, sequence, _NOT_NUMBERED)
                return UNNUMBERED, 0
            if after_late is None:
                streams[key] = (expected, sequence, _REPEATED)
            return DUPLICATE, 0
        if SEQUENCE_SPACE - ahead <= LATE_EXPORTS * max(units or 1, 1):
            streams[key] = (expected, sequence, following)  # the exports after `expected` are still to come
            return LATE, 0
        streams[key] = (following, sequence, None)
        return RESET, 0
