"""Information-element registry: (PEN, element id) -> name and abstract data type.

Names are the IANA (RFC 7012) or vendor names in snake_case, used as `netflow.<name>` keys.
PEN 0 is IANA; PEN 29305 marks RFC 5103 reverse elements, named `reverse_<forward name>`.
Unknown elements are not an error: they decode as raw hex under `pen_<PEN>_ie_<ID>`.

The data lives next to this module:

- `iana_ies.tsv`: the whole IANA "IPFIX Information Elements" registry, one line per
  assigned element id: `id<TAB>camelName<TAB>abstractDataType`. Names are converted to
  snake_case at import with `snake_case()`.
- `vendor_ies.tsv`: enterprise-specific elements, `pen<TAB>id<TAB>name<TAB>abstractDataType`
  with names already in snake_case. A `pen` column of `v9` marks NetFlow v9 field types
  >= 32768 (vendor-specific, no PEN on the wire), looked up with `v9_field_spec()`.

Both files are read once at import; lookups are plain dict gets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

UNSIGNED = "unsigned"
SIGNED = "signed"
FLOAT = "float"
BOOLEAN = "boolean"
MAC = "mac"
STRING = "string"
OCTETS = "octets"
IPV4 = "ipv4"
IPV6 = "ipv6"
DATETIME_S = "datetime_s"
DATETIME_MS = "datetime_ms"
DATETIME_US = "datetime_us"
DATETIME_NS = "datetime_ns"

REVERSE_PEN = 29305
"""RFC 5103 section 6.1: reverse information elements use this enterprise number."""

CERT_PEN = 6871
"""CERT NetSA (YAF): bit 0x4000 of a CERT element id marks the reverse-direction element."""
CERT_REVERSE_BIT = 0x4000


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: str


# RFC 7012 section 3.1 abstract data types (plus names seen in vendor tables) -> decoder type.
ABSTRACT_TYPES: dict[str, str] = {
    "unsigned8": UNSIGNED,
    "unsigned16": UNSIGNED,
    "unsigned32": UNSIGNED,
    "unsigned64": UNSIGNED,
    "unsigned256": UNSIGNED,
    "signed8": SIGNED,
    "signed16": SIGNED,
    "signed32": SIGNED,
    "signed64": SIGNED,
    "float32": FLOAT,
    "float64": FLOAT,
    "boolean": BOOLEAN,
    "macAddress": MAC,
    "string": STRING,
    "octetArray": OCTETS,
    "basicList": OCTETS,
    "subTemplateList": OCTETS,
    "subTemplateMultiList": OCTETS,
    "unknown": OCTETS,
    "ipv4Address": IPV4,
    "ipv6Address": IPV6,
    "dateTimeSeconds": DATETIME_S,
    "dateTimeMilliseconds": DATETIME_MS,
    "dateTimeMicroseconds": DATETIME_US,
    "dateTimeNanoseconds": DATETIME_NS,
}


def abstract_type(name: str) -> str:
    """Decoder type for an IPFIX abstract data type name; unknown names decode as octets."""
    return ABSTRACT_TYPES.get(name, OCTETS)


# Words kept whole although their case pattern would split them (IPv4 -> "I", "Pv4").
_TOKEN = re.compile(
    r"IPv4|IPv6|MCast|TEid|VRF"  # fixed words
    r"|[A-Z]+(?=[A-Z][a-z]|\d|$)"  # acronym run: NAT in postNATSource, ID in ingressVRFID
    r"|[A-Z]?[a-z]+"  # ordinary word
    r"|\d+"  # digits, glued to the previous word below
    r"|[A-Z]+"
)


def snake_case(name: str) -> str:
    """Deterministic camelCase -> snake_case for IE names.

    Acronyms are words (`postNATSourceIPv4Address` -> `post_nat_source_ipv4_address`,
    `VRFname` -> `vrf_name`); digits stay on the word before them, and a lower-case run
    right after digits stays too (`layer2SegmentId` -> `layer2_segment_id`,
    `dot1qVlanId` -> `dot1q_vlan_id`, `p2pTechnology` -> `p2p_technology`).
    """
    words: list[str] = []
    for part in name.split("_"):
        glue = False  # previous token ended in digits
        for match in _TOKEN.finditer(part):
            token = match.group(0)
            if words and (token[0].isdigit() or (glue and token[0].islower())):
                words[-1] += token.lower()
            else:
                words.append(token.lower())
            glue = token[-1].isdigit()
    return "_".join(words)


def _rows(resource: str) -> list[list[str]]:
    text = resources.files(__package__).joinpath(resource).read_text(encoding="utf-8")
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            rows.append(line.split("\t"))
    return rows


def _load_iana() -> dict[int, FieldSpec]:
    table: dict[int, FieldSpec] = {}
    for element_id, camel, adt in _rows("iana_ies.tsv"):
        table[int(element_id)] = FieldSpec(snake_case(camel), abstract_type(adt))
    return table


def _load_vendor() -> tuple[dict[tuple[int, int], FieldSpec], dict[int, FieldSpec]]:
    vendor: dict[tuple[int, int], FieldSpec] = {}
    v9: dict[int, FieldSpec] = {}
    for pen, number, name, adt in _rows("vendor_ies.tsv"):
        spec = FieldSpec(name, abstract_type(adt))
        if pen == "v9":
            v9[int(number)] = spec
        else:
            vendor[(int(pen), int(number))] = spec
    # CERT/YAF: every forward element has a reverse twin at id | 0x4000.
    for (pen_id, element_id), spec in list(vendor.items()):
        if pen_id == CERT_PEN and not element_id & CERT_REVERSE_BIT:
            reverse_key = (CERT_PEN, element_id | CERT_REVERSE_BIT)
            if reverse_key not in vendor:
                vendor[reverse_key] = FieldSpec("reverse_" + spec.name, spec.type)
    return vendor, v9


_IANA: dict[int, FieldSpec] = _load_iana()
_VENDOR: dict[tuple[int, int], FieldSpec]
_V9_VENDOR: dict[int, FieldSpec]
_VENDOR, _V9_VENDOR = _load_vendor()


def field_spec(pen: int, element_id: int) -> FieldSpec:
    """Name and type of an element; never raises."""
    if pen == 0:
        spec = _IANA.get(element_id)
    elif pen == REVERSE_PEN:
        forward = _IANA.get(element_id)
        spec = FieldSpec("reverse_" + forward.name, forward.type) if forward else None
    else:
        spec = _VENDOR.get((pen, element_id))
    return spec if spec is not None else FieldSpec(f"pen_{pen}_ie_{element_id}", OCTETS)


def v9_field_spec(field_id: int) -> FieldSpec:
    """Name and type of a NetFlow v9 field type; never raises.

    v9 has no enterprise numbers: ids below 32768 share the IANA numbering (RFC 3954 /
    RFC 7012), ids from 32768 up are vendor-specific (Cisco ASA NSEL 33000-40005, Palo Alto
    56701/56702, nProbe 57472 + n). A few exporters squat ids below 32768 too (Streamcore
    8192-8393); those are listed in the vendor table and win over the IANA name.
    """
    spec = _V9_VENDOR.get(field_id)
    if spec is not None:
        return spec
    if field_id < 32768:
        return field_spec(0, field_id)
    return FieldSpec(f"pen_0_ie_{field_id}", OCTETS)


def element_names() -> frozenset[str]:
    """Every name the registry can give an element (IANA, their RFC 5103 reverse twins, vendor
    and NetFlow v9 vendor elements): the raw `netflow.*` fields a deployment may come to hold."""
    names = {spec.name for spec in _IANA.values()}
    names |= {"reverse_" + name for name in names}
    names |= {spec.name for spec in _VENDOR.values()} | {spec.name for spec in _V9_VENDOR.values()}
    return frozenset(names)
