"""NetFlow version 9 (RFC 3954).

A 20-byte header (version, count, sysUpTime, UNIX seconds, sequence, source id) and then
FlowSets: id 0 holds templates, id 1 options templates, ids from 256 data. The source id joins
the template key (RFC 3954 section 5.1). Each FlowSet is read inside its declared length and
may end in padding; a damaged FlowSet is reported and the cursor moves to the next one.
"""

from __future__ import annotations

import struct
from itertools import starmap

from flowd.decode.flowsets import (
    FIRST_DATA_SET_ID,
    SET_HEADER,
    MessageContext,
    decode_sets,
    raise_if_nothing_decoded,
    release_parked,
)
from flowd.decode.records import TemplateField, compile_template
from flowd.decode.templates import TemplateCache
from flowd.errors import TemplateError, TruncatedError
from flowd.model import DecodeResult, Exporter, SoftError

HEADER = struct.Struct("!HHIIII")
TEMPLATE_SET_ID = 0
OPTIONS_TEMPLATE_SET_ID = 1
MAX_FIELDS = 512


def decode_netflow_v9(
    data: bytes | memoryview, exporter: Exporter, templates: TemplateCache, received_at: float
) -> DecodeResult:
    if len(data) < HEADER.size:
        raise TruncatedError(f"NetFlow v9 header needs {HEADER.size} bytes, datagram has {len(data)}", offset=0)
    version, count, uptime_ms, unix_secs, sequence, source_id = HEADER.unpack_from(data, 0)
    context = MessageContext(exporter, version, source_id, unix_secs, sequence, uptime_ms, received_at)
    result = DecodeResult(version=9, declared_records=count)
    pos = HEADER.size
    end = len(data)
    decode_sets(
        data,
        pos,
        end,
        context,
        templates,
        result,
        template_set_id=TEMPLATE_SET_ID,
        options_set_id=OPTIONS_TEMPLATE_SET_ID,
        parse_templates=_parse_templates,
    )
    # RFC 3954 section 5.1: the count is of this datagram's templates and records together. A set
    # parked (or refused a place to park) holds at least one record, how many only its template
    # tells; a template refused by the caps was one record too.
    found = result.templates_added + len(result.flows) + len(result.options) - result.unparked_records
    found += sum(error.reason == "template_cap" for error in result.errors)
    waiting = result.parked + sum(error.reason == "parked_overflow" for error in result.errors)
    if found + waiting > count or (found != count and not waiting):
        result.errors.append(SoftError("record_count_mismatch", f"header count {count}, found {found}", 0))
    raise_if_nothing_decoded(result)
    return result


def _parse_templates(
    data: bytes | memoryview,
    start: int,
    end: int,
    context: MessageContext,
    templates: TemplateCache,
    result: DecodeResult,
    options: bool,
) -> None:
    pos = start
    minimum = 6 if options else 4
    while end - pos >= minimum:
        if options:
            template_id, scope_bytes, option_bytes = struct.unpack_from("!HHH", data, pos)
            pos += 6
            if scope_bytes % 4 or option_bytes % 4:
                raise TemplateError(f"options template {template_id}: lengths not multiples of 4", offset=pos)
            scope_count, field_count = scope_bytes // 4, scope_bytes // 4 + option_bytes // 4
        else:
            template_id, field_count = SET_HEADER.unpack_from(data, pos)
            pos += 4
            scope_count = 0
        if template_id < FIRST_DATA_SET_ID:
            if template_id == 0 and field_count == 0:
                return  # zero padding at the end of the set
            raise TemplateError(f"template id {template_id} is below 256", offset=pos)
        if field_count == 0 or field_count > MAX_FIELDS:
            raise TemplateError(f"template {template_id} has {field_count} fields", offset=pos)
        if pos + field_count * 4 > end:
            raise TruncatedError(f"template {template_id} overruns its FlowSet", offset=pos)
        fields = tuple(starmap(TemplateField, SET_HEADER.iter_unpack(data[pos : pos + field_count * 4])))
        pos += field_count * 4
        key = (context.exporter, context.version, context.domain_id, template_id)
        released = None
        if templates.admits(key, fields):  # before compiling: a refused template costs nothing
            template = compile_template(template_id, fields, scope_count, netflow_v9=True, options=options)
            released = templates.put(key, template, context.received_at)
        if released is None:
            result.errors.append(SoftError("template_cap", f"template {template_id} refused: cache full", pos))
            continue
        result.templates_added += 1
        if released:
            release_parked(context, templates, template, released, result)
