"""NetFlow v9 and IPFIX datagrams that carry one data set of a known fixed-length template,
decoded a receive batch at a time.

Most datagrams a router sends have that shape: its templates travel in their own datagrams,
resent every so often. One at a time, each costs `decode_netflow_v9`/`decode_ipfix` a call
chain with its context, result and batch objects; here it costs a header unpack, a template
lookup and a slice, and the records of all of them that share a layout become one array.

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
from flowd.decode.flowsets import FIRST_DATA_SET_ID, SAMPLING_FIELD_NAMES
from flowd.decode.records import CompiledTemplate
from flowd.decode.templates import TemplateCache
from flowd.model import KIND_NETFLOW_FLOW, Exporter

V9_HEAD = struct.Struct("!HHIIIIHH")
"""A NetFlow v9 header (version, count, sysUpTime, UNIX seconds, sequence, source id) and the
first FlowSet's id and length."""
IPFIX_HEAD = struct.Struct("!HHIIIHH")
"""An IPFIX message header (version, length, export time, sequence, domain) and the first
set's id and length."""
SET_HEADER_SIZE = 4
V9_PREFIX = b"\x00\x09"
IPFIX_PREFIX = b"\x00\x0a"

Item = tuple[bytes, Exporter, float]
"""A datagram, its exporter, and when it was received."""


class _Layout:
    """The datagrams of one record layout (and version): their record bytes and header runs."""

    __slots__ = ("headers", "rates", "records", "template", "version")

    def __init__(self, template: CompiledTemplate, version: int) -> None:
        self.template = template
        self.version = version
        self.records: list[bytes] = []
        self.rates: list[int] = []
        self.headers = RowHeaders([], [], [], [], [], [], [], [])

    def add(
        self,
        record_bytes: bytes,
        count: int,
        template_id: int,
        header: tuple[Exporter, int, int, int | None, int, float],
        rate: int,
    ) -> None:
        exporter, domain_id, export_time, uptime_ms, sequence, received_at = header
        headers = self.headers
        self.records.append(record_bytes)
        self.rates.append(rate)
        headers.lengths.append(count)
        headers.exporter.append(exporter)
        headers.domain_id.append(domain_id)
        headers.template_id.append(template_id)
        headers.export_time.append(export_time)
        headers.uptime_ms.append(uptime_ms)
        headers.sequence.append(sequence)
        headers.received_at.append(received_at)

    def batch(self) -> RecordBatch:
        headers = self.headers
        rates: int | list[int] = self.rates[0]
        if any(rate != rates for rate in self.rates):
            rates = headers.per_row(self.rates)
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
    items: Sequence[Item], templates: TemplateCache, decode_other: Callable[[int], None]
) -> list[RecordBatch]:
    """Flow records of the v9/IPFIX datagrams of `items` that are one data set of a known
    fixed-length flow template, one batch per layout (rows in datagram order, their headers as
    runs, one per datagram); `decode_other(index)` is called, in order, for every other datagram.

    Taken: a v9 datagram whose header count is its records, or an IPFIX message whose length
    is the datagram's, and whose one set fills it to the end with at least one record (a
    shorter tail is padding), under a template without per-record sampling fields. For those
    the per-datagram decoders report no error and yield what this yields.
    """
    layouts: dict[tuple[Any, int], _Layout] = {}
    get, peek_domain = templates.get, templates.peek_domain
    for index, (data, exporter, received_at) in enumerate(items):
        prefix = data[:2]
        size = len(data)
        if prefix == V9_PREFIX and size >= V9_HEAD.size:
            version, count, uptime, export_time, sequence, domain_id, set_id, set_length = V9_HEAD.unpack_from(data)
            head = V9_HEAD.size - SET_HEADER_SIZE
        elif prefix == IPFIX_PREFIX and size >= IPFIX_HEAD.size:
            version, length, export_time, sequence, domain_id, set_id, set_length = IPFIX_HEAD.unpack_from(data)
            head = IPFIX_HEAD.size - SET_HEADER_SIZE
            count = -1  # IPFIX headers carry no record count
            uptime = None
            if length != size:
                decode_other(index)
                continue
        else:
            decode_other(index)
            continue
        if set_id < FIRST_DATA_SET_ID or head + set_length != size:
            decode_other(index)
            continue
        template = get((exporter, version, domain_id, set_id), received_at)
        if (
            template is None
            or template.dtype is None
            or template.is_options
            or not SAMPLING_FIELD_NAMES.isdisjoint(template.names)
        ):
            decode_other(index)
            continue
        records = (set_length - SET_HEADER_SIZE) // template.record_length
        if records == 0 or (count >= 0 and count != records):
            decode_other(index)
            continue
        state = peek_domain((exporter, version, domain_id))
        rate = 1
        if state is not None:
            rate = state.sampling_rate or 1
            if uptime is None and state.system_init_ms is not None:  # IPFIX: sysUpTime from the init time
                uptime = export_time * 1000 - state.system_init_ms
        key = (template.layout, version)
        layout = layouts.get(key)
        if layout is None:
            layout = layouts[key] = _Layout(template, version)
        start = head + SET_HEADER_SIZE
        layout.add(
            data[start : start + records * template.record_length],
            records,
            set_id,
            (exporter, domain_id, export_time, uptime, sequence, received_at),
            rate,
        )
    return [layout.batch() for layout in layouts.values()]
