"""Data sets shared by NetFlow v9 and IPFIX: decode with a known template, park without one,
and turn options data into sampling and timing state for later records."""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from flowd.decode.batch import RecordBatch
from flowd.decode.records import CompiledTemplate, column_values
from flowd.decode.templates import DomainState, ParkedSet, TemplateCache
from flowd.errors import DecodeError
from flowd.model import KIND_NETFLOW_FLOW, KIND_NETFLOW_OPTIONS, DecodeResult, Exporter, FlowRecord, SoftError

SAMPLER_ID_NAMES = ("sampler_id", "flow_sampler_id", "selector_id")
INGRESS_INTERFACE = "ingress_interface"
INTERFACE_SCOPE_NAMES = ("scope_interface", INGRESS_INTERFACE)
MAX_SAMPLERS = 4096
"""Sampler ids (and interfaces) with their own rate, per domain."""
RATE_NAMES = ("sampling_interval", "sampler_random_interval", "flow_sampler_random_interval")
SAMPLING_FIELD_NAMES = frozenset(
    (
        *SAMPLER_ID_NAMES,
        *RATE_NAMES,
        "sampling_packet_interval",
        "sampling_packet_space",
        "sampling_size",
        "sampling_population",
        "sampling_probability",
    )
)
"""Every field `sampling_rate` reads in a record."""
LAST_INIT_MS = 253_402_300_799_999
"""The last systemInitTimeMilliseconds taken: the end of year 9999, the last date a document
holds (`output.timestamps.LAST_MS`). A later one is garbage, and the uptime it implies would
not even fit the 64-bit integers the columnar path and JSON hold."""


SET_HEADER = struct.Struct("!HH")
FIRST_DATA_SET_ID = 256

TemplateParser = Callable[[bytes | memoryview, int, int, "MessageContext", TemplateCache, DecodeResult, bool], None]
"""Parses a (options) template set body: (data, start, end, context, templates, result, options)."""


@dataclass(slots=True)
class MessageContext:
    """Header values every record of one message shares."""

    exporter: Exporter
    version: int
    domain_id: int
    export_time: int
    sequence: int
    uptime_ms: int | None
    received_at: float


def decode_sets(
    data: bytes | memoryview,
    pos: int,
    end: int,
    context: MessageContext,
    templates: TemplateCache,
    result: DecodeResult,
    *,
    template_set_id: int,
    options_set_id: int,
    parse_templates: TemplateParser,
) -> None:
    """Walk the sets (v9 FlowSets) of one message, each inside its declared length.

    A set that fails is reported and the walk moves on to the next one; a length that cannot
    be right ends the walk, unless what is left is zero padding.
    """
    while end - pos >= SET_HEADER.size:
        set_id, length = SET_HEADER.unpack_from(data, pos)
        if length < SET_HEADER.size:
            if any(data[pos:end]):  # zero bytes after the last set are exporter padding
                result.errors.append(SoftError("bad_set_length", f"set {set_id} declares {length} bytes", pos))
            return
        if pos + length > end:
            result.errors.append(SoftError("truncated", f"set {set_id} of {length} bytes overruns the message", pos))
            length = end - pos  # decode what is there: whole records only
        body_start, body_end = pos + SET_HEADER.size, pos + length
        try:
            if set_id == template_set_id:
                parse_templates(data, body_start, body_end, context, templates, result, False)
            elif set_id == options_set_id:
                parse_templates(data, body_start, body_end, context, templates, result, True)
            elif set_id >= FIRST_DATA_SET_ID:
                decode_data_set(context, templates, set_id, data, body_start, body_end, result)
            else:
                result.errors.append(SoftError("reserved_set_id", f"set id {set_id} is reserved", pos))
        except DecodeError as error:
            result.errors.append(SoftError(error.reason, str(error), error.offset))
        pos += length


def raise_if_nothing_decoded(result: DecodeResult) -> None:
    """A message that yielded nothing at all but errors is undecodable as a whole."""
    if not result.flows and not result.options and result.errors and not result.templates_added and not result.parked:
        first = result.errors[0]
        raise DecodeError(first.message, offset=first.offset, reason=first.reason)


def decode_data_set(
    context: MessageContext,
    templates: TemplateCache,
    template_id: int,
    data: bytes | memoryview,
    start: int,
    end: int,
    result: DecodeResult,
) -> None:
    """Decode one data set, or park it until its template is known (design.md section 3)."""
    key = (context.exporter, context.version, context.domain_id, template_id)
    template = templates.get(key, context.received_at)
    if template is None:
        parked = ParkedSet(
            bytes(data[start:end]), context.received_at, context.export_time, context.sequence, context.uptime_ms
        )
        if templates.park(key, parked):
            result.parked += 1
        else:
            result.errors.append(SoftError("parked_overflow", f"no room to park template {template_id}", start))
        return
    if template.is_fixed and not template.is_options:
        emit_batch(context, templates, template, template.decode_array(data, start, end), result)
    else:
        stopped: list[DecodeError] = []
        emit_records(context, templates, template, template.decode_set(data, start, end, stopped), result)
        result.errors.extend(SoftError(error.reason, str(error), error.offset) for error in stopped)


def release_parked(
    context: MessageContext,
    templates: TemplateCache,
    template: CompiledTemplate,
    parked_sets: list[ParkedSet],
    result: DecodeResult,
) -> None:
    """Decode the sets a newly learned template releases, each with its own header context."""
    before = len(result.flows) + len(result.options)
    for parked in parked_sets:
        own = MessageContext(
            context.exporter,
            context.version,
            context.domain_id,
            parked.export_time,
            parked.sequence,
            parked.uptime_ms,
            parked.received_at,
        )
        try:
            if template.is_fixed and not template.is_options:
                emit_batch(own, templates, template, template.decode_array(parked.body, 0, len(parked.body)), result)
            else:
                stopped: list[DecodeError] = []
                rows = template.decode_set(parked.body, 0, len(parked.body), stopped)
                emit_records(own, templates, template, rows, result)
                result.errors.extend(SoftError(e.reason, f"parked set: {e}", e.offset) for e in stopped)
        except DecodeError as error:
            result.errors.append(SoftError(error.reason, f"parked set: {error}"))
    result.unparked_records += len(result.flows) + len(result.options) - before


def decode_restored(
    templates: TemplateCache, now: float, exporters: Collection[Exporter]
) -> list[tuple[Exporter, DecodeResult]]:
    """Restored parked sets of `exporters` whose template was known at start
    (`TemplateCache.take_releasable`), decoded as that template's arrival would have decoded them."""
    results = []
    for (exporter, version, domain_id, _), template, parked_sets in templates.take_releasable(now, exporters):
        result = DecodeResult(version=version)
        context = MessageContext(exporter, version, domain_id, 0, 0, None, now)
        release_parked(context, templates, template, parked_sets, result)
        results.append((exporter, result))
    return results


def emit_records(
    context: MessageContext,
    templates: TemplateCache,
    template: CompiledTemplate,
    rows: list[dict[str, Any]],
    result: DecodeResult,
) -> None:
    domain_key = (context.exporter, context.version, context.domain_id)
    if template.is_options:
        options_state = templates.domain(domain_key)
        for row in rows:
            apply_options(row, options_state, templates.take_sampling_entry)
            result.options.append(_record(KIND_NETFLOW_OPTIONS, context, template, row, context.uptime_ms, 1))
        return
    state = templates.peek_domain(domain_key)
    uptime_ms = _uptime_ms(context, state)
    flows = result.flows
    for row in rows:
        flows.append(_record(KIND_NETFLOW_FLOW, context, template, row, uptime_ms, sampling_rate(row, state)))


def _uptime_ms(context: MessageContext, state: DomainState | None) -> int | None:
    return message_uptime_ms(context.uptime_ms, context.export_time, state)


def message_uptime_ms(header_uptime_ms: int | None, export_time: int, state: DomainState | None) -> int | None:
    """The header's sysUpTime (v9), or for IPFIX the one its systemInitTimeMilliseconds implies."""
    if header_uptime_ms is None and state is not None and state.system_init_ms is not None:
        return export_time * 1000 - state.system_init_ms
    return header_uptime_ms


def domain_rate(state: DomainState | None) -> int:
    """The rate of records that name none: the domain's from options data, else 1."""
    return (state.sampling_rate or 1) if state is not None else 1


def rates_per_record(template: CompiledTemplate, state: DomainState | None) -> bool:
    """Whether the records of `template` may each have their own rate: they name a rate or a
    sampler, or they name their ingress interface and the domain has rates per interface."""
    if not SAMPLING_FIELD_NAMES.isdisjoint(template.names):
        return True
    return state is not None and bool(state.interface_rates) and INGRESS_INTERFACE in template.names


def record_rates(template: CompiledTemplate, array: npt.NDArray[Any], state: DomainState | None) -> list[int]:
    """Each record's `sampling_rate`, for templates `rates_per_record` holds true of: only the
    fields it reads are turned into values, with the domain's options state as it is now."""
    read = SAMPLING_FIELD_NAMES
    if state is not None and state.interface_rates:
        read = read | {INGRESS_INTERFACE}
    columns = {
        name: column_values(kind, length, array[name]) for name, kind, length in template.columns if name in read
    }
    names = tuple(columns)
    if names == (INGRESS_INTERFACE,) and state is not None:  # the interface alone picks the rate
        rates, default = state.interface_rates, domain_rate(state)
        return [rates.get(interface, default) for interface in columns[INGRESS_INTERFACE]]
    return [
        sampling_rate(dict(zip(names, values, strict=True)), state) for values in zip(*columns.values(), strict=True)
    ]


def emit_batch(
    context: MessageContext,
    templates: TemplateCache,
    template: CompiledTemplate,
    array: npt.NDArray[Any],
    result: DecodeResult,
) -> None:
    """Flow records of a fixed-length set, kept columnar until somebody reads them."""
    state = templates.peek_domain((context.exporter, context.version, context.domain_id))
    uptime_ms = _uptime_ms(context, state)
    batch = RecordBatch(
        template,
        array,
        KIND_NETFLOW_FLOW,
        context.exporter,
        context.version,
        context.received_at,
        context.domain_id,
        context.sequence,
        context.export_time,
        uptime_ms,
    )
    if rates_per_record(template, state):  # the rate, the sampler or the interface is in each record
        batch.rates = record_rates(template, array, state)
    else:
        batch.rates = domain_rate(state)
    result.flows.add_batch(batch)


def _record(
    kind: str,
    context: MessageContext,
    template: CompiledTemplate,
    row: dict[str, Any],
    uptime_ms: int | None,
    rate: int,
) -> FlowRecord:
    return FlowRecord(
        kind,
        context.exporter,
        context.version,
        context.received_at,
        row,
        context.domain_id,
        template.template_id,
        context.sequence,
        context.export_time,
        uptime_ms,
        rate,
    )


MAX_RATE = 2**32 - 1
"""The largest sampling rate taken: RFC 3954's and RFC 5477's rate elements are 32-bit; a larger
value (a field sent wider than its type) would scale counters past what a document holds."""
MIN_PROBABILITY = 1 / MAX_RATE


def rate_from(row: dict[str, Any]) -> int:
    """A sampling rate stated in one record (RFC 3954 field 34/50, RFC 5477 elements); 0 if none."""
    rate = _stated_rate(row)
    return rate if rate <= MAX_RATE else 0


def _stated_rate(row: dict[str, Any]) -> int:
    for name in RATE_NAMES:
        value = row.get(name)
        if isinstance(value, int) and value > 0:
            return value
    size, population = row.get("sampling_size"), row.get("sampling_population")
    if isinstance(size, int) and isinstance(population, int) and size > 0 and population >= size:
        return max(1, population // size)  # RFC 5477 random n-out-of-N sampling
    interval, space = row.get("sampling_packet_interval"), row.get("sampling_packet_space")
    if isinstance(interval, int) and isinstance(space, int) and interval > 0:
        return max(1, (interval + space) // interval)  # RFC 5477 systematic count-based sampling
    probability = row.get("sampling_probability")
    if isinstance(probability, float) and MIN_PROBABILITY <= probability <= 1.0:
        return max(1, round(1 / probability))  # RFC 5477 probabilistic sampling: one in 1/p
    return 0


def apply_options(row: dict[str, Any], state: DomainState, room: Callable[[], bool] = lambda: True) -> None:
    """Options data that changes how later flow records are read. A new sampler or interface
    rate is kept only when `room` says the cache has room for one more (it counts them)."""
    rate = rate_from(row)
    if rate:
        sampler = _sampler_id(row)
        interface = _scoped_interface(row) if sampler is None else None
        if interface:
            if interface in state.interface_rates or (len(state.interface_rates) < MAX_SAMPLERS and room()):
                state.interface_rates[interface] = rate
        elif sampler is None:
            state.sampling_rate = rate
            state.rate_sampler = None
        elif sampler in state.samplers or (len(state.samplers) < MAX_SAMPLERS and room()):
            state.samplers[sampler] = rate
            if not state.sampling_rate or sampler == state.rate_sampler:
                state.sampling_rate = rate
                state.rate_sampler = sampler
    init = row.get("system_init_time_milliseconds")
    if isinstance(init, int) and init <= LAST_INIT_MS:
        state.system_init_ms = init


def _scoped_interface(row: dict[str, Any]) -> int | None:
    """The interface an options record is scoped to (NetFlow v9 scope type 2, or IPFIX
    ingressInterface), 0 and None meaning none."""
    for name in INTERFACE_SCOPE_NAMES:
        value = row.get(name)
        if isinstance(value, int):
            return value
    return None


def _sampler_id(row: dict[str, Any]) -> int | None:
    for name in SAMPLER_ID_NAMES:
        value = row.get(name)
        if isinstance(value, int):
            return value
    return None


def sampling_rate(row: dict[str, Any], state: DomainState | None) -> int:
    """In-record rate first, then the record's sampler table entry, then the domain's rate."""
    rate = rate_from(row)
    if rate:
        return rate
    if state is None:
        return 1
    sampler = _sampler_id(row)
    if sampler is not None and sampler in state.samplers:
        return state.samplers[sampler]
    if state.interface_rates:
        interface = row.get(INGRESS_INTERFACE)
        if isinstance(interface, int) and interface in state.interface_rates:
            return state.interface_rates[interface]
    return state.sampling_rate or 1
