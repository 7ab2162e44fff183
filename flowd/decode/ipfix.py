"""IPFIX (RFC 7011), with RFC 7012 elements, RFC 5103 biflows and RFC 7133 data-link sections.

A 16-byte message header (version 10, length, export time, sequence, observation domain) and
Sets: id 2 templates, 3 options templates, from 256 data. A field specifier with the high bit
of its element id set carries a 4-byte enterprise number (RFC 7011 section 3.2). A template
record with no fields withdraws its template; template id 2 or 3 with none withdraws them all
(section 8.1). The message length bounds everything.
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
from flowd.errors import DecodeError, TemplateError, TruncatedError
from flowd.model import DecodeResult, Exporter, SoftError

HEADER = struct.Struct("!HHIII")
TEMPLATE_SET_ID = 2
OPTIONS_TEMPLATE_SET_ID = 3
ENTERPRISE_BIT = 0x8000
MAX_FIELDS = 512


def decode_ipfix(
    data: bytes | memoryview, exporter: Exporter, templates: TemplateCache, received_at: float
) -> DecodeResult:
    """Decode the IPFIX message at the start of `data`.

    RFC 7011 section 10.3.3 puts one message in each UDP datagram; bytes after the message's
    declared length are reported, not decoded (TCP streams and IPFIX files are split into
    messages by their readers before they get here).
    """
    if len(data) < HEADER.size:
        raise TruncatedError("IPFIX message header truncated", offset=0)
    version, length, export_time, sequence, domain_id = HEADER.unpack_from(data, 0)
    if version != 10 or length < HEADER.size:
        raise DecodeError(f"bad IPFIX message header (version {version}, length {length})", offset=0)
    result = DecodeResult(version=10)
    end = length
    if end > len(data):
        result.errors.append(SoftError("truncated", f"message of {length} bytes, {len(data)} received", 0))
        end = len(data)
    elif end < len(data):
        result.errors.append(SoftError("trailing_bytes", f"{len(data) - end} bytes after the message", end))
    context = MessageContext(exporter, 10, domain_id, export_time, sequence, None, received_at)
    decode_sets(
        data,
        HEADER.size,
        end,
        context,
        templates,
        result,
        template_set_id=TEMPLATE_SET_ID,
        options_set_id=OPTIONS_TEMPLATE_SET_ID,
        parse_templates=_parse_templates,
    )
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
    while end - pos >= 4:
        template_id, field_count = SET_HEADER.unpack_from(data, pos)
        pos += 4
        if field_count == 0:
            _withdraw(template_id, context, templates, result, options)
            continue
        scope_count = 0
        if options:
            if end - pos < 2:
                raise TruncatedError(f"options template {template_id} lacks its scope count", offset=pos)
            scope_count = struct.unpack_from("!H", data, pos)[0]
            pos += 2
            if scope_count == 0 or scope_count > field_count:
                raise TemplateError(f"options template {template_id}: scope count {scope_count}", offset=pos)
        if template_id < FIRST_DATA_SET_ID:
            raise TemplateError(f"template id {template_id} is below 256", offset=pos)
        if field_count > MAX_FIELDS:
            raise TemplateError(f"template {template_id} has {field_count} fields", offset=pos)
        fields, pos = _field_specifiers(data, pos, end, template_id, field_count)
        key = (context.exporter, 10, context.domain_id, template_id)
        released = None
        if templates.admits(key, fields):  # before compiling: a refused template costs nothing
            template = compile_template(template_id, fields, scope_count)
            released = templates.put(key, template, context.received_at)
        if released is None:
            result.errors.append(SoftError("template_cap", f"template {template_id} refused: cache full", pos))
            continue
        result.templates_added += 1
        if released:
            release_parked(context, templates, template, released, result)


def _field_specifiers(
    data: bytes | memoryview, pos: int, end: int, template_id: int, count: int
) -> tuple[tuple[TemplateField, ...], int]:
    """The template's `count` field specifiers from `pos`, and where they end. Without
    enterprise numbers (no first byte with its top bit set) they are 4 bytes each, read in one
    go: templates are resent every few datagrams."""
    plain_end = pos + 4 * count
    if plain_end <= end and max(data[pos:plain_end:4]) < 0x80:
        return tuple(starmap(TemplateField, SET_HEADER.iter_unpack(data[pos:plain_end]))), plain_end
    fields = []
    for _ in range(count):
        if end - pos < 4:
            raise TruncatedError(f"template {template_id} overruns its set", offset=pos)
        element_id, length = SET_HEADER.unpack_from(data, pos)
        pos += 4
        pen = 0
        if element_id & ENTERPRISE_BIT:
            if end - pos < 4:
                raise TruncatedError(f"template {template_id}: enterprise number truncated", offset=pos)
            pen = struct.unpack_from("!I", data, pos)[0]
            pos += 4
            element_id &= ~ENTERPRISE_BIT
        fields.append(TemplateField(element_id, length, pen))
    return tuple(fields), pos


def _withdraw(
    template_id: int, context: MessageContext, templates: TemplateCache, result: DecodeResult, options: bool
) -> None:
    if template_id in (TEMPLATE_SET_ID, OPTIONS_TEMPLATE_SET_ID):
        result.templates_withdrawn += templates.withdraw_domain(
            context.exporter, 10, context.domain_id, template_id == OPTIONS_TEMPLATE_SET_ID
        )
    else:
        result.templates_withdrawn += templates.withdraw((context.exporter, 10, context.domain_id, template_id))
