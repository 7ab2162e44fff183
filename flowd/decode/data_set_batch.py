"""NetFlow v9 and IPFIX datagrams made only of data sets of known fixed-length templates,
decoded a receive batch at a time.

Most datagrams a router sends have that shape: its templates travel in their own datagrams,
resent every so often. One at a time, each costs `decode_netflow_v9`/`decode_ipfix` a call
chain with its context, result and batch objects; here it costs a header unpack, a template
lookup and a slice per set, and the records of all the sets that share a layout become one
array.

The batch is walked in its order, and any other datagram goes to `decode_other` where it
stands, so a template learned, changed or withdrawn within the batch, or options data that
set a sampling rate or an IPFIX system init time, applies to the datagrams after it exactly as
it does one datagram at a time. A test holds the two paths to the same records.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from flowd.decode.batch import RecordBatch, RowHeaders
from flowd.decode.flowsets import (
    FIRST_DATA_SET_ID,
    SAMPLING_FIELD_NAMES,
    SET_HEADER,
    domain_rate,
    message_uptime_ms,
    rates_per_record,
    record_rates,
)
from flowd.decode.records import CompiledTemplate
from flowd.decode.templates import TemplateCache
from flowd.model import KIND_NETFLOW_FLOW, Exporter

V9_HEADER = struct.Struct("!HHIIII")
"""A NetFlow v9 header: version, count, sysUpTime, UNIX seconds, sequence, source id."""
IPFIX_HEADER = struct.Struct("!HHIII")
"""An IPFIX message header: version, length, export time, sequence, observation domain."""
V9_PREFIX = b"\x00\x09"
IPFIX_PREFIX = b"\x00\x0a"

Item = tuple[bytes, Exporter, float]
"""A datagram, its exporter, and when it was received."""


class _Layout:
    """The datagrams of one record layout (and version): their record bytes and header runs."""

    __slots__ = ("headers", "rates", "rates_per_record", "records", "template", "version")

    def __init__(self, template: CompiledTemplate, version: int) -> None:
        self.template = template
        self.version = version
        self.rates_per_record = not SAMPLING_FIELD_NAMES.isdisjoint(template.names)
        """The records name a rate or sampler (the layout's names say it once for all its sets)."""
        self.records: list[bytes] = []
        self.rates: list[int | list[int]] = []
        self.headers = RowHeaders([], [], [], [], [], [], [], [])

    def add(
        self,
        record_bytes: bytes,
        count: int,
        template: CompiledTemplate,
        header: tuple[Exporter, int, int, int | None, int, float],
        rate: int | list[int],
    ) -> None:
        """One data set's records; `rate` is theirs, or one per record."""
        exporter, domain_id, export_time, uptime_ms, sequence, received_at = header
        headers = self.headers
        self.records.append(record_bytes)
        self.rates.append(rate)
        headers.lengths.append(count)
        headers.exporter.append(exporter)
        headers.domain_id.append(domain_id)
        headers.template_id.append(template.template_id)
        headers.export_time.append(export_time)
        headers.uptime_ms.append(uptime_ms)
        headers.sequence.append(sequence)
        headers.received_at.append(received_at)

    def batch(self) -> RecordBatch:
        headers = self.headers
        first = self.rates[0]
        rates: int | list[int] = first if isinstance(first, int) else []
        if any(rate != rates for rate in self.rates):
            rates = []
            for rate, length in zip(self.rates, headers.lengths, strict=True):
                rates += [rate] * length if isinstance(rate, int) else rate
        batch = RecordBatch(
            self.template,
            np.frombuffer(b"".join(self.records), self.template.dtype),
            KIND_NETFLOW_FLOW,
            headers.exporter[0],
            self.version,
            headers.received_at[0],
            headers.domain_id[0],
            headers.sequence[0],
            headers.export_time[0],
            headers.uptime_ms[0],
            rates,
        )
        batch.row_headers = headers
        return batch


def decode_data_datagrams(
    items: Sequence[Item],
    templates: TemplateCache,
    decode_other: Callable[[int], None],
    counted: dict[int, int] | None = None,
) -> tuple[list[RecordBatch], dict[int, int]]:
    """Flow records of the v9/IPFIX datagrams of `items` made only of data sets of known
    fixed-length flow templates, one batch per layout (rows in datagram order, their headers as
    runs, one per data set), and how many datagrams they came from per version;
    `decode_other(index)` is called, in order, for every other datagram.

    Taken: a v9 datagram whose header count is its records, or an IPFIX message whose length is
    the datagram's, whose sets follow one another to its end, each with at least one record (a
    shorter tail is padding). For those the per-datagram decoders report no error and yield
    what this yields. `counted`, when given, receives the data records of each IPFIX message
    taken, by its index (what its sequence number counts).
    """
    layouts: dict[tuple[Any, int], _Layout] = {}
    taken = {9: 0, 10: 0}
    get, peek_domain = templates.get, templates.peek_domain
    for index, (data, exporter, received_at) in enumerate(items):
        prefix = data[:2]
        size = len(data)
        if prefix == V9_PREFIX and size >= V9_HEADER.size:
            version, count, uptime, export_time, sequence, domain_id = V9_HEADER.unpack_from(data)
            head = V9_HEADER.size
        elif prefix == IPFIX_PREFIX and size >= IPFIX_HEADER.size:
            version, length, export_time, sequence, domain_id = IPFIX_HEADER.unpack_from(data)
            head = IPFIX_HEADER.size
            count = -1  # IPFIX headers carry no record count
            uptime = None
            if length != size:
                decode_other(index)
                continue
        else:
            decode_other(index)
            continue
        sets = _data_sets(data, head, (exporter, version, domain_id), received_at, get)
        if sets is None or (count >= 0 and count != sum(records for _, _, records in sets)):
            decode_other(index)
            continue
        state = peek_domain((exporter, version, domain_id))
        rate = domain_rate(state)
        header = (
            exporter,
            domain_id,
            export_time,
            message_uptime_ms(uptime, export_time, state),
            sequence,
            received_at,
        )
        for template, start, records in sets:
            key = (template.layout, version)
            layout = layouts.get(key)
            if layout is None:
                layout = layouts[key] = _Layout(template, version)
            record_bytes = data[start : start + records * template.record_length]
            if layout.rates_per_record or (state is not None and rates_per_record(template, state)):
                rates: int | list[int] = record_rates(template, np.frombuffer(record_bytes, template.dtype), state)
            else:
                rates = rate
            layout.add(record_bytes, records, template, header, rates)
        taken[version] += 1
        if counted is not None and version == 10:
            counted[index] = sum(records for _, _, records in sets)
    return [layout.batch() for layout in layouts.values()], taken


def _data_sets(
    data: bytes,
    pos: int,
    domain: tuple[Exporter, int, int],
    received_at: float,
    get: Callable[[tuple[Exporter, int, int, int], float], CompiledTemplate | None],
) -> list[tuple[CompiledTemplate, int, int]] | None:
    """(template, first record offset, records) of each set from `pos` to the end of `data`;
    None unless every one is a data set of records under a known fixed-length flow template, and
    the sets end where the datagram does."""
    sets = []
    size = len(data)
    exporter, version, domain_id = domain
    while pos < size:
        if size - pos < SET_HEADER.size:
            return None
        set_id, length = SET_HEADER.unpack_from(data, pos)
        if set_id < FIRST_DATA_SET_ID or length < SET_HEADER.size or pos + length > size:
            return None
        template = get((exporter, version, domain_id, set_id), received_at)
        if template is None or template.dtype is None or template.is_options:
            return None
        records = (length - SET_HEADER.size) // template.record_length
        if not records:
            return None
        sets.append((template, pos + SET_HEADER.size, records))
        pos += length
    return sets or None
