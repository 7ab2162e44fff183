"""Templates compiled once into record decoders (RFC 3954 section 5, RFC 7011 section 3.4).

A template whose fields all have fixed lengths becomes one `struct.Struct`; a data set is then
decoded with `iter_unpack` and a handful of per-field conversions. Templates with variable-length
fields (RFC 7011 section 7: a 1-byte length, or 255 followed by a 2-byte length) take a slower
field-by-field path. Values are converted to what a document holds: ints, floats, address and MAC
strings, text, hex for opaque octets, and epoch milliseconds for every absolute timestamp.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowd.decode import fields as ie
from flowd.errors import TruncatedError

VARIABLE_LENGTH = 0xFFFF
NTP_EPOCH_OFFSET_S = 2_208_988_800
"""Seconds from 1900-01-01 (the NTP era IPFIX microsecond/nanosecond times count from) to 1970."""
_ADDRESS_CACHE_MAX = 65_536

Converter = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class TemplateField:
    """One field specifier as the exporter sent it."""

    element_id: int
    length: int
    pen: int = 0


_ipv4_strings: dict[bytes, str] = {}


def ipv4_string(raw: bytes) -> str:
    """Dotted quad for 4 bytes, through a bounded cache: exporters repeat addresses a lot."""
    text = _ipv4_strings.get(raw)
    if text is None:
        if len(_ipv4_strings) >= _ADDRESS_CACHE_MAX:
            _ipv4_strings.clear()
        text = _ipv4_strings[raw] = socket.inet_ntoa(raw)
    return text


def ipv6_string(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, raw)


def mac_string(raw: bytes) -> str:
    return raw.hex(":")


def text_string(raw: bytes) -> str:
    """IPFIX strings are UTF-8; exporters pad them with NULs and sometimes send garbage."""
    return raw.split(b"\x00", 1)[0].decode("utf-8", "replace")


def hex_string(raw: bytes) -> str:
    return raw.hex()


def _ntp_to_ms(value: int) -> int:
    seconds, fraction = value >> 32, value & 0xFFFFFFFF
    return (seconds - NTP_EPOCH_OFFSET_S) * 1000 + (fraction * 1000 >> 32)


def _struct_code(kind: str, length: int) -> tuple[str, Converter | None]:
    """The struct code for a fixed-length field and the conversion its value still needs."""
    if kind in (ie.UNSIGNED, ie.DATETIME_S, ie.DATETIME_MS, ie.DATETIME_US, ie.DATETIME_NS, ie.BOOLEAN):
        code = {1: "B", 2: "H", 4: "I", 8: "Q"}.get(length)
        post: Converter | None = None
        if kind == ie.DATETIME_S:
            post = _seconds_to_ms
        elif kind in (ie.DATETIME_US, ie.DATETIME_NS) and length == 8:
            post = _ntp_to_ms
        elif kind == ie.BOOLEAN:
            post = _boolean
        if code is None:  # RFC 7011 section 6.2: reduced-size encoding of unsigned integers
            return f"{length}s", _chain(_unsigned_from_bytes, post)
        return code, post
    if kind == ie.SIGNED:
        code = {1: "b", 2: "h", 4: "i", 8: "q"}.get(length)
        return (code, None) if code else (f"{length}s", _signed_from_bytes)
    if kind == ie.FLOAT and length in (4, 8):
        return ("f" if length == 4 else "d"), None
    if kind == ie.IPV4 and length == 4:
        return "4s", ipv4_string
    if kind == ie.IPV6 and length == 16:
        return "16s", ipv6_string
    if kind == ie.MAC and length == 6:
        return "6s", mac_string
    if kind == ie.STRING:
        return f"{length}s", text_string
    return f"{length}s", hex_string


def _seconds_to_ms(value: int) -> int:
    return value * 1000


def _boolean(value: int) -> bool:
    return value == 1  # RFC 7011 section 6.1.5: 1 is true, 2 is false


def _unsigned_from_bytes(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _signed_from_bytes(raw: bytes) -> int:
    return int.from_bytes(raw, "big", signed=True)


def _chain(first: Converter, second: Converter | None) -> Converter:
    if second is None:
        return first
    return lambda value: second(first(value))


def _bytes_converter(kind: str, length: int) -> Converter:
    """Conversion from the raw bytes of one field (the variable-length path)."""
    code, post = _struct_code(kind, length)
    if code.endswith("s"):
        return post or bytes
    single = struct.Struct("!" + code)

    def convert(raw: bytes) -> Any:
        value = single.unpack(raw)[0]
        return post(value) if post else value

    return convert


class CompiledTemplate:
    """A template ready to decode data records; built once per template (re)definition."""

    __slots__ = (
        "template_id",
        "fields",
        "scope_count",
        "names",
        "record_length",
        "min_length",
        "_struct",
        "_post",
        "_slow",
    )

    def __init__(
        self,
        template_id: int,
        template_fields: tuple[TemplateField, ...],
        names: tuple[str, ...],
        kinds: tuple[str, ...],
        scope_count: int = 0,
    ) -> None:
        self.template_id = template_id
        self.fields = template_fields
        self.scope_count = scope_count
        self.names = names
        variable = any(f.length == VARIABLE_LENGTH for f in template_fields)
        self.min_length = sum(1 if f.length == VARIABLE_LENGTH else f.length for f in template_fields)
        self._struct: struct.Struct | None = None
        self._post: list[tuple[int, Converter]] = []
        self._slow: list[tuple[str, int, Converter]] = []
        if variable:
            self.record_length = 0
            self._slow = [
                (name, f.length, _bytes_converter(kind, f.length) if f.length != VARIABLE_LENGTH else _varlen(kind))
                for name, f, kind in zip(names, template_fields, kinds, strict=True)
            ]
            return
        self.record_length = self.min_length
        codes = []
        kept_names = []
        for name, f, kind in zip(names, template_fields, kinds, strict=True):
            if f.length == 0:  # zero-length fields carry no value (tshark shows them empty)
                continue
            code, post = _struct_code(kind, f.length)
            if post is not None:
                self._post.append((len(codes), post))
            codes.append(code)
            kept_names.append(name)
        self.names = tuple(kept_names)
        self._struct = struct.Struct("!" + "".join(codes))

    @property
    def is_options(self) -> bool:
        return self.scope_count > 0

    def decode_set(self, data: bytes | memoryview, start: int, end: int) -> list[dict[str, Any]]:
        """Every record in a data set body; trailing bytes shorter than a record are padding."""
        if self._struct is not None:
            return self._decode_fixed(data, start, end)
        return self._decode_variable(data, start, end)

    def _decode_fixed(self, data: bytes | memoryview, start: int, end: int) -> list[dict[str, Any]]:
        size = self.record_length
        if size == 0:
            return []
        count = (end - start) // size
        assert self._struct is not None
        body = memoryview(data)[start : start + count * size]
        names = self.names
        post = self._post
        records = []
        for values in self._struct.iter_unpack(body):
            if post:
                row = list(values)
                for index, convert in post:
                    row[index] = convert(row[index])
                records.append(dict(zip(names, row, strict=True)))
            else:
                records.append(dict(zip(names, values, strict=True)))
        return records

    def _decode_variable(self, data: bytes | memoryview, start: int, end: int) -> list[dict[str, Any]]:
        records = []
        pos = start
        raw = bytes(data[start:end])
        limit = len(raw)
        pos = 0
        while limit - pos >= self.min_length and limit - pos > 0:
            record: dict[str, Any] = {}
            for name, length, convert in self._slow:
                if length == VARIABLE_LENGTH:
                    if pos >= limit:
                        raise TruncatedError("variable-length field past the set end", offset=start + pos)
                    length = raw[pos]
                    pos += 1
                    if length == 255:
                        if pos + 2 > limit:
                            raise TruncatedError("long variable length past the set end", offset=start + pos)
                        length = (raw[pos] << 8) | raw[pos + 1]
                        pos += 2
                if pos + length > limit:
                    raise TruncatedError(f"field {name} of {length} bytes past the set end", offset=start + pos)
                if length:
                    record[name] = convert(raw[pos : pos + length])
                pos += length
            records.append(record)
        return records


def _varlen(kind: str) -> Converter:
    if kind == ie.STRING:
        return text_string
    return hex_string


def compile_template(
    template_id: int,
    template_fields: tuple[TemplateField, ...],
    scope_count: int = 0,
    *,
    netflow_v9: bool = False,
) -> CompiledTemplate:
    """Resolve every field's name and type and build the decoder."""
    names: list[str] = []
    kinds: list[str] = []
    seen: dict[str, int] = {}
    for index, f in enumerate(template_fields):
        if netflow_v9 and index < scope_count:
            spec = ie.FieldSpec(V9_SCOPE_NAMES.get(f.element_id, f"scope_{f.element_id}"), ie.UNSIGNED)
            if f.length > 8:
                spec = ie.FieldSpec(spec.name, ie.OCTETS)
        elif netflow_v9:
            spec = ie.v9_field_spec(f.element_id)
        else:
            spec = ie.field_spec(f.pen, f.element_id)
        name = spec.name
        if name in seen:  # repeated IEs (e.g. several MPLS labels of one id): keep each, numbered
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 1
        names.append(name)
        kinds.append(spec.type)
    return CompiledTemplate(template_id, template_fields, tuple(names), tuple(kinds), scope_count)


V9_SCOPE_NAMES = {1: "scope_system", 2: "scope_interface", 3: "scope_line_card", 4: "scope_cache", 5: "scope_template"}
"""RFC 3954 section 6.1: options scope field types."""
