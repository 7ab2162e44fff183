"""Templates compiled once into record decoders (RFC 3954 section 5, RFC 7011 section 3.4).

Fixed-length templates decode a whole data set into one numpy structured array (design.md
section 5); the per-record cost is paid only when records become documents, column by column.
Templates with variable-length fields (RFC 7011 section 7: a 1-byte length, or 255 and a 2-byte
length) take a record-by-record path. Values become what a document holds: ints, floats,
address and MAC strings, text, hex for opaque octets, epoch milliseconds for absolute times.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from flowd.decode import fields as ie
from flowd.decode.memo import MEMO_CLEARS
from flowd.errors import DecodeError, TruncatedError

VARIABLE_LENGTH = 0xFFFF
NTP_EPOCH_OFFSET_S = 2_208_988_800
"""Seconds from 1900-01-01 (the NTP era IPFIX microsecond/nanosecond times count from) to 1970."""
_ADDRESS_CACHE_MAX = 65_536

Converter = Callable[[Any], Any]


class TemplateField(NamedTuple):
    """One field specifier as the exporter sent it. A tuple: routers resend their templates
    every few datagrams, and each resend builds, hashes and compares these (to find the
    compiled template and to tell a refresh from a redefinition) at tuple speed."""

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
            MEMO_CLEARS["record_address_text"] += 1
        text = _ipv4_strings[raw] = socket.inet_ntoa(raw)
    return text


_ipv6_strings: dict[bytes, str] = {}


def ipv6_string(raw: bytes) -> str:
    """RFC 5952 text for 16 bytes, as `socket.inet_ntop` writes it, through the same kind of cache."""
    text = _ipv6_strings.get(raw)
    if text is None:
        if len(_ipv6_strings) >= _ADDRESS_CACHE_MAX:
            _ipv6_strings.clear()
            MEMO_CLEARS["record_address_text"] += 1
        text = _ipv6_strings[raw] = socket.inet_ntop(socket.AF_INET6, raw)
    return text


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


IGNORED_NAMES = frozenset({"padding_octets"})
"""RFC 7012 paddingOctets (210) only aligns records; it carries no information."""
MPLS_LABEL = "mpls_label"
"""Not an RFC 7012 type: label stack entries (RFC 3032, 3 bytes) decode to the 20-bit label."""


def _mpls_label(raw: bytes) -> int:
    return int.from_bytes(raw, "big") >> 4


def _bytes_converter(kind: str, length: int) -> Converter:
    """Conversion from the raw bytes of one field (variable-length fields and odd sizes)."""
    if kind == MPLS_LABEL:
        return _mpls_label
    if kind in (ie.UNSIGNED, ie.DATETIME_S, ie.DATETIME_MS, ie.DATETIME_US, ie.DATETIME_NS, ie.BOOLEAN):
        if length > 8 or length == 0:
            return hex_string
        if kind == ie.DATETIME_S:
            return lambda raw: int.from_bytes(raw, "big") * 1000
        if kind in (ie.DATETIME_US, ie.DATETIME_NS) and length == 8:
            return lambda raw: _ntp_to_ms(int.from_bytes(raw, "big"))
        if kind == ie.BOOLEAN:
            return lambda raw: int.from_bytes(raw, "big") == 1  # RFC 7011 section 6.1.5: 2 is false
        return _unsigned_from_bytes  # includes reduced-size encoding (RFC 7011 section 6.2)
    if kind == ie.SIGNED and 0 < length <= 8:
        return _signed_from_bytes
    if kind == ie.FLOAT and length in (4, 8):
        single = struct.Struct("!f" if length == 4 else "!d")
        return lambda raw: single.unpack(raw)[0]
    if kind == ie.IPV4 and length == 4:
        return ipv4_string
    if kind == ie.IPV6 and length == 16:
        return ipv6_string
    if kind == ie.MAC and length == 6:
        return mac_string
    if kind == ie.STRING:
        return text_string
    return hex_string


def _unsigned_from_bytes(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _signed_from_bytes(raw: bytes) -> int:
    return int.from_bytes(raw, "big", signed=True)


_NUMERIC_KINDS = (ie.UNSIGNED, ie.DATETIME_S, ie.DATETIME_MS, ie.DATETIME_US, ie.DATETIME_NS, ie.BOOLEAN)


def _numpy_format(kind: str, length: int) -> str:
    """The big-endian numpy format a fixed-length field is read as; `V<n>` means raw bytes."""
    if kind in _NUMERIC_KINDS or kind == ie.IPV4:
        if length in (1, 2, 4, 8) and (kind != ie.IPV4 or length == 4):
            return ">u" + str(length)
    elif kind == ie.SIGNED and length in (1, 2, 4, 8):
        return ">i" + str(length)
    elif kind == ie.FLOAT and length in (4, 8):
        return ">f" + str(length)
    return f"V{length}"


def column_values(kind: str, length: int, column: npt.NDArray[Any]) -> list[Any]:
    """One field of every record of a set, as the Python values a document holds."""
    if column.dtype.kind == "V":
        raw = column.tobytes()
        convert = _bytes_converter(kind, length)
        if kind in (ie.IPV6, ie.MAC, ie.STRING):  # repeated values: convert each distinct one once
            chunks = [raw[i : i + length] for i in range(0, len(raw), length)]
            distinct = {chunk: convert(chunk) for chunk in set(chunks)}
            return [distinct[chunk] for chunk in chunks]
        return [convert(raw[i : i + length]) for i in range(0, len(raw), length)]
    if kind == ie.IPV4:
        values = column.tolist()
        names = {value: ipv4_string(value.to_bytes(4, "big")) for value in set(values)}
        return [names[value] for value in values]
    if kind == ie.DATETIME_S:
        return (column.astype(np.int64) * 1000).tolist()  # type: ignore[no-any-return]
    if kind in (ie.DATETIME_US, ie.DATETIME_NS) and length == 8:
        seconds = (column >> np.uint64(32)).astype(np.int64) - NTP_EPOCH_OFFSET_S
        fraction = (column & np.uint64(0xFFFFFFFF)) * np.uint64(1000) >> np.uint64(32)
        return (seconds * 1000 + fraction.astype(np.int64)).tolist()  # type: ignore[no-any-return]
    if kind == ie.BOOLEAN:
        return [value == 1 for value in column.tolist()]
    return column.tolist()  # type: ignore[no-any-return]


def is_plain_integer(kind: str, length: int, column: npt.NDArray[Any]) -> bool:
    """Whether `column_values` gives this column's integers unchanged (so numpy can keep them)."""
    if column.dtype.kind not in "ui" or kind in (ie.IPV4, ie.DATETIME_S, ie.BOOLEAN):
        return False
    return not (kind in (ie.DATETIME_US, ie.DATETIME_NS) and length == 8)


class CompiledTemplate:
    """A template ready to decode data records; built once per template (re)definition.

    Fixed-length templates read a whole set as one numpy structured array (`decode_array`);
    templates with variable-length fields are read record by record.
    """

    __slots__ = (
        "_slow",
        "columns",
        "dtype",
        "fields",
        "layout",
        "min_length",
        "names",
        "options",
        "record_length",
        "scope_count",
        "template_id",
    )

    def __init__(
        self,
        template_id: int,
        template_fields: tuple[TemplateField, ...],
        names: tuple[str, ...],
        kinds: tuple[str, ...],
        scope_count: int = 0,
        options: bool | None = None,
    ) -> None:
        self.template_id = template_id
        self.fields = template_fields
        self.scope_count = scope_count
        self.options = scope_count > 0 if options is None else options
        """An options template: RFC 3954 lets a v9 one have no scope field (exporter-wide)."""
        self.names = names
        variable = any(f.length == VARIABLE_LENGTH for f in template_fields)
        self.min_length = sum(1 if f.length == VARIABLE_LENGTH else f.length for f in template_fields)
        self.dtype: np.dtype[Any] | None = None
        self.columns: list[tuple[str, str, int]] = []
        self._slow: list[tuple[str, int, Converter]] = []
        self.layout: tuple[Any, ...] = ()
        """Equal for templates whose data sets decode to the same arrays (`merge_batches` joins them)."""
        if variable:  # decoded record by record, never joined
            self.record_length = 0
            self._slow = [
                (name, f.length, _bytes_converter(kind, f.length) if f.length != VARIABLE_LENGTH else _varlen(kind))
                for name, f, kind in zip(names, template_fields, kinds, strict=True)
            ]
            return
        self.record_length = self.min_length
        formats: list[str] = []
        offsets: list[int] = []
        offset = 0
        for name, f, kind in zip(names, template_fields, kinds, strict=True):
            if f.length and name not in IGNORED_NAMES:  # zero-length fields carry no value
                self.columns.append((name, kind, f.length))
                formats.append(_numpy_format(kind, f.length))
                offsets.append(offset)
            offset += f.length
        self.names = tuple(column[0] for column in self.columns)
        if self.record_length:
            self.dtype = np.dtype(
                {"names": list(self.names), "formats": formats, "offsets": offsets, "itemsize": self.record_length}
            )
        self.layout = (tuple(self.columns), self.dtype)

    def with_id(self, template_id: int) -> CompiledTemplate:
        """The same template under another id, sharing every part (they are never mutated)."""
        twin = object.__new__(CompiledTemplate)
        for slot in CompiledTemplate.__slots__:
            setattr(twin, slot, getattr(self, slot))
        twin.template_id = template_id
        return twin

    @property
    def is_options(self) -> bool:
        return self.options

    @property
    def is_fixed(self) -> bool:
        return self.dtype is not None

    def decode_array(self, data: bytes | memoryview, start: int, end: int) -> npt.NDArray[Any]:
        """Every record of a fixed-length set at once; trailing bytes shorter than a record are padding."""
        assert self.dtype is not None
        count = (end - start) // self.record_length
        return np.frombuffer(data, self.dtype, count, start)  # positional: numpy parses keywords slowly

    def column_lists(self, array: npt.NDArray[Any]) -> dict[str, list[Any]]:
        """Each field of every record of a decoded array, as document values."""
        return {name: column_values(kind, length, array[name]) for name, kind, length in self.columns}

    def rows(self, array: npt.NDArray[Any]) -> list[dict[str, Any]]:
        """Records of a decoded array as dicts of document values."""
        if not len(array):
            return []
        names = self.names
        columns = self.column_lists(array)
        return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]

    def decode_set(
        self, data: bytes | memoryview, start: int, end: int, stopped: list[DecodeError] | None = None
    ) -> list[dict[str, Any]]:
        """Every record in a data set body, as dicts. A variable-length record cut short raises,
        or, given `stopped`, ends the set there: the records before it are returned, its error
        appended to `stopped`."""
        if self.dtype is not None:
            return self.rows(self.decode_array(data, start, end))
        if self._slow:
            records: list[dict[str, Any]] = []
            try:
                self._decode_variable(data, start, end, records)
            except TruncatedError as error:
                if stopped is None:
                    raise
                stopped.append(error)
            return records
        return []

    def _decode_variable(self, data: bytes | memoryview, start: int, end: int, records: list[dict[str, Any]]) -> None:
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


def _varlen(kind: str) -> Converter:
    if kind == ie.STRING:
        return text_string
    return hex_string


_COMPILED: dict[tuple[Any, ...], CompiledTemplate] = {}
"""One compiled template per distinct field list; templates with other ids share its parts."""
MAX_DISTINCT_LAYOUTS = 65_536
MAX_COMPILED_FIELDS = 65_536
"""Fields of the compiled templates `_COMPILED` keeps (about 0.4 KB each): a template may have
512 fields, so the count of layouts alone let it hold gigabytes."""
_compiled_fields = 0


def compile_template(
    template_id: int,
    template_fields: tuple[TemplateField, ...],
    scope_count: int = 0,
    *,
    netflow_v9: bool = False,
    options: bool | None = None,
) -> CompiledTemplate:
    """Resolve every field's name and type and build the decoder.

    Thousands of exporters send the same few templates (one per vendor and flow type), and a
    numpy structured dtype alone costs about 3 KB: a template whose field list was compiled
    before shares every part of that one (dtype, columns, converters, the fields themselves) and
    costs only its own small object.
    """
    is_options = scope_count > 0 if options is None else options
    key = (template_fields, scope_count, netflow_v9, is_options)
    known = _COMPILED.get(key)
    if known is None:
        global _compiled_fields
        if len(_COMPILED) >= MAX_DISTINCT_LAYOUTS or _compiled_fields + len(template_fields) > MAX_COMPILED_FIELDS:
            _COMPILED.clear()  # hostile exporters inventing layouts: start over
            MEMO_CLEARS["compiled_layouts"] += 1
            _compiled_fields = 0
        known = _COMPILED[key] = _compile(template_id, template_fields, scope_count, netflow_v9, is_options)
        _compiled_fields += len(template_fields)
    if known.template_id == template_id:
        return known
    return known.with_id(template_id)


def _compile(
    template_id: int, template_fields: tuple[TemplateField, ...], scope_count: int, netflow_v9: bool, options: bool
) -> CompiledTemplate:
    names: list[str] = []
    kinds: list[str] = []
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
        kind = spec.type
        if f.length == 3 and "label_stack_section" in name:
            kind = MPLS_LABEL
        names.append(name)
        kinds.append(kind)
    names_tuple = _encapsulation_names(names)
    return CompiledTemplate(template_id, template_fields, names_tuple, tuple(kinds), scope_count, options)


def _encapsulation_names(names: list[str]) -> tuple[str, ...]:
    """Name repeated elements apart: the last occurrence keeps the name, earlier ones are tunnels.

    Templates repeat 5-tuple elements when they describe an encapsulated packet (Cisco's SRv6
    templates: the outer IPv6 header, then the inner one); the inner header is the flow, as
    pmacct reports it, and the outer fields become `tunnel_<name>`, `tunnel_<name>_2`, ...
    Ignored elements (padding) keep their name however often they appear, and stay ignored.
    """
    total: dict[str, int] = {}
    for name in names:
        total[name] = total.get(name, 0) + 1
    if all(count == 1 or name in IGNORED_NAMES for name, count in total.items()):
        return tuple(names)
    seen: dict[str, int] = {}
    renamed = []
    for name in names:
        if name in IGNORED_NAMES:
            renamed.append(name)
            continue
        seen[name] = seen.get(name, 0) + 1
        if seen[name] == total[name]:
            renamed.append(name)
        else:
            renamed.append(f"tunnel_{name}" if seen[name] == 1 else f"tunnel_{name}_{seen[name]}")
    return tuple(renamed)


V9_SCOPE_NAMES = {1: "scope_system", 2: "scope_interface", 3: "scope_line_card", 4: "scope_cache", 5: "scope_template"}
"""RFC 3954 section 6.1: options scope field types."""
