"""flowd's NetFlow v5 / v9 / IPFIX decoders against tshark, unit by unit over the shared corpus.

The oracle is `tshark -2` (two-pass, so templates that come later still apply) on one pcap per
unit: the unit's datagrams, in feed order, written with `write_pcap` (the same thing the
manifest's mergecap / text2pcap recipes produce). The RFC 5655 IPFIX file is read by tshark
directly. From tshark's JSON we take, for every data record (packet, set, record order):

- whether its template is an options template (looked up in the frame `cflow.template_frame`
  names: `Options Template (Id = N)` subtree there),
- the 5-tuple: `cflow.srcaddr` / `cflow.srcaddrv6`, `cflow.dstaddr` / `cflow.dstaddrv6`,
  `cflow.srcport`, `cflow.dstport`, `cflow.protocol`,
- the counters, each compared with the raw IE of the same number in our document:
  `cflow.octets` (IE 1, v5 dOctets) <-> `netflow.octet_delta_count`,
  `cflow.packets` (IE 2, v5 dPkts) <-> `netflow.packet_delta_count`,
  `cflow.permanent_octets` (IE 85) <-> `netflow.octet_total_count`,
  `cflow.permanent_packets` (IE 86) <-> `netflow.packet_total_count`,
  `cflow.post_octets` (IE 23) <-> `netflow.post_octet_delta_count`,
  `cflow.post_packets` (IE 24) <-> `netflow.post_packet_delta_count`,
  `cflow.initiator_octets` (IE 231, ASA NSEL) <-> `netflow.initiator_octets`,
  `cflow.responder_octets` (IE 232, ASA NSEL) <-> `netflow.responder_octets`.
  tshark shows an RFC 5103 reverse IE (PEN 29305) under the forward IE's field name; the
  template (from tshark's template subtree) says which occurrence is the reverse one, which is
  compared with `netflow.reverse_<name>`.

Our side: `decode_datagram` on the same datagrams with one `TemplateCache` per unit, and
`flow_document` on every record; `source.ip`, `destination.ip`, `source.port`,
`destination.port`, `network.iana_number` and the `netflow.*` counters above.

Where tshark -2 decodes a data set whose template only arrives later (later in the same packet,
or in a later packet), a streaming decoder parks those records and releases them when the
template comes, so the order differs: such units (akv:data+templates) are compared as
multisets; all others record by record in order (flow records and options records each in
their own sequence). Records must also come in the right list: `DecodeResult.options` holds
exactly the records of options templates (`event.action` "netflow_options").

5-tuple rules (see `_five_tuple_candidates`): Cisco SRv6 templates (pmacct 400/500/502) carry
the 5-tuple twice, outer IPv6 then inner IPv4/IPv6: ours must be one whole group (outer or
inner), never addresses of one with ports/protocol of the other. Templates with IPv4 and IPv6
address fields of which only one family is filled (Procera, pmacct template 313): ours must be
the filled family, not 0.0.0.0 / ::.

Where tshark itself falls short, the unit says so (`tests/corpus_units.py`) and the reference
decode is adjusted: files holding several PDUs back to back are split (both sides get the
split datagrams; `test_concatenated_file_as_one_datagram` checks the unsplit file), a v9
header count smaller than the records present is patched for tshark only, and for H3C (tshark
throws after the first record) ours must start with tshark's records and hold all 16.
`test_manifest_counts_match_tshark` runs the manifest's own recipe and guards the parser.

`test_raw_totals_match_tshark` checks `flowd.raw_bytes` / `flowd.raw_packets` = forward (delta,
else total, else initiator) + reverse (reverse delta, else reverse total, else responder).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from flowd.capture import Datagram
from tests.corpus_units import UNITS, UNITS_BY_NAME, Unit, corpus_available, unit_datagrams
from tests.tshark_oracle import needs_tshark, tshark_layers, write_pcap

pytestmark = [
    needs_tshark,
    pytest.mark.skipif(not corpus_available(), reason="shared corpus not found (set FLOWD_CORPUS)"),
]

REVERSE_PEN = 29305

COUNTERS: dict[str, tuple[int, str]] = {
    "cflow.octets": (1, "octet_delta_count"),
    "cflow.packets": (2, "packet_delta_count"),
    "cflow.permanent_octets": (85, "octet_total_count"),
    "cflow.permanent_packets": (86, "packet_total_count"),
    "cflow.post_octets": (23, "post_octet_delta_count"),
    "cflow.post_packets": (24, "post_packet_delta_count"),
    "cflow.initiator_octets": (231, "initiator_octets"),
    "cflow.responder_octets": (232, "responder_octets"),
}
"""tshark field -> (IANA element id, our `netflow.<name>`)."""
COUNTER_NAMES = [name for _, name in COUNTERS.values()]
ALL_COUNTER_KEYS = [f"netflow.{name}" for name in COUNTER_NAMES] + [f"netflow.reverse_{name}" for name in COUNTER_NAMES]
TUPLE_FIELDS = {
    "cflow.srcaddr": 8,
    "cflow.dstaddr": 12,
    "cflow.srcaddrv6": 27,
    "cflow.dstaddrv6": 28,
    "cflow.srcport": 7,
    "cflow.dstport": 11,
    "cflow.protocol": 4,
}
"""tshark field -> the element it shows in the 5-tuple."""
TUPLE_ALIASES = {"cflow.srcport": (7, 180, 182), "cflow.dstport": (11, 181, 183)}
"""tshark shows udp/tcpSourcePort (180/182) and udp/tcpDestinationPort (181/183) under the same
field names as the transport ports; the template tells the occurrences apart."""
ADDRESS_IES = {8, 12, 27, 28}
SOURCE_ADDRESS_IES = {8, 27}
PORT_IES = {7, 11, 4}

MAY_REJECT = {"lcn:nf5_invalid01", "lcn:nf5_invalid02"}
"""v5 datagrams whose header count exceeds what they hold: the manifest allows a decoder to
reject them or to bound the count by the datagram length (tshark does the latter)."""

FiveTuple = tuple[str | None, str | None, int | None, int | None, int | None]


# ---------------------------------------------------------------------------------------------
# tshark side


@dataclass
class OracleRecord:
    frame: int
    template_id: int | None
    options: bool
    candidates: list[FiveTuple]
    """Acceptable 5-tuples; one unless the template repeats 5-tuple elements."""
    counters: dict[str, int]
    """`netflow.<name>` -> value, forward and `reverse_` counters."""
    early: bool = False
    """tshark -2 used a template that a streaming decoder has not seen yet at this point."""

    def describe(self) -> str:
        kind = "options" if self.options else "flow"
        tuple_text = " | ".join(_tuple_text(c) for c in self.candidates)
        return f"{kind} frame {self.frame} tpl {self.template_id}: {tuple_text} {self.counters}"


@dataclass
class Oracle:
    flows: list[OracleRecord] = field(default_factory=list)
    options: list[OracleRecord] = field(default_factory=list)
    undecodable_sets: int = 0
    frames: int = 0
    malformed_frames: int = 0

    @property
    def any_early(self) -> bool:
        return any(r.early for r in self.flows + self.options)


_SET_KEY = re.compile(r"^(?:FlowSet|Set) (\d+) \[id=(\d+)\]")
_OPTIONS_TEMPLATE_KEY = re.compile(r"^Options Template \(Id = (\d+)\)")
_TEMPLATE_KEY = re.compile(r"^Template \(Id = (\d+)")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _template_fields(template: dict[str, Any]) -> list[tuple[int, int]]:
    """(PEN, element id) of every field of a template subtree, scope fields included."""
    fields = []
    for key, value in template.items():
        if not key.startswith("Field (") or not isinstance(value, dict):
            continue
        if "cflow.template_ipfix_field_type_enterprise" in value:
            pen = int(value.get("cflow.template_ipfix_field_pen", 0))
            element = int(value["cflow.template_ipfix_field_type_enterprise"])
        elif "cflow.template_ipfix_field_type" in value:  # IANA, or RFC 5103 reverse (PEN 29305)
            pen = int(value.get("cflow.template_ipfix_field_pen", 0))
            element = int(value["cflow.template_ipfix_field_type"])
        elif "cflow.template_field_type" in value:
            pen, element = 0, int(value["cflow.template_field_type"])
        elif "cflow.scope_field_type" in value:
            pen, element = 0, -int(value["cflow.scope_field_type"])  # v9 scope types are their own space
        else:
            continue
        fields.append((pen, element))
    return fields


@dataclass
class _TemplateInfo:
    options: bool
    fields: list[tuple[int, int]]
    set_index: int


def _frame_templates(cflow: dict[str, Any]) -> dict[int, _TemplateInfo]:
    found: dict[int, _TemplateInfo] = {}
    for key, value in cflow.items():
        match = _SET_KEY.match(key)
        if not match or not isinstance(value, dict):
            continue
        for sub_key, sub in value.items():
            if not isinstance(sub, dict):
                continue
            options = _OPTIONS_TEMPLATE_KEY.match(sub_key)
            plain = _TEMPLATE_KEY.match(sub_key)
            if options or plain:
                template_id = int((options or plain).group(1))  # type: ignore[union-attr]
                found[template_id] = _TemplateInfo(bool(options), _template_fields(sub), int(match.group(1)))
    return found


def _address(value: str) -> str:
    return str(ipaddress.ip_address(value))


def _five_tuple_candidates(flow: dict[str, Any], info: _TemplateInfo | None) -> list[FiveTuple]:
    """Acceptable 5-tuples of a tshark record.

    The 5-tuple elements are placed at their template positions and cut into groups: a group
    ends where an element repeats, or where a source address follows a group that already has
    addresses and ports (Cisco SRv6 templates: outer IPv6 addresses + ports + protocol, then
    inner IPv4 or IPv6 ones). Each group gives one candidate per address family it holds, except
    that a family whose addresses are all unspecified (0.0.0.0, ::) is dropped when the other
    family has a real address (templates with IPv4 and IPv6 fields, only one of them filled).
    """
    placed: list[tuple[int, int, str]] = []
    for name, element in TUPLE_FIELDS.items():
        values = _as_list(flow.get(name))
        if not values:
            continue
        aliases = TUPLE_ALIASES.get(name, (element,))
        positions = [(i, ie) for i, (pen, ie) in enumerate(info.fields) if pen == 0 and ie in aliases] if info else []
        if len(positions) != len(values):  # v5, or a field tshark fills from an element we do not know
            positions = [(-1, element)] + [(-1, -1)] * (len(values) - 1)
        placed += [(pos, ie, value) for (pos, ie), value in zip(positions, values, strict=True) if ie == element]
    placed.sort(key=lambda item: item[0])

    groups: list[dict[int, str]] = [{}]
    for _, element, value in placed:
        current = groups[-1]
        has_address = any(ie in current for ie in ADDRESS_IES)
        has_ports = any(ie in current for ie in PORT_IES)
        if element in current or (element in SOURCE_ADDRESS_IES and has_address and has_ports):
            current = {}
            groups.append(current)
        current[element] = value

    candidates: list[FiveTuple] = []
    for group in groups:
        ports = tuple(int(group[ie]) if ie in group else None for ie in (7, 11, 4))
        families = {}
        for src_ie, dst_ie in ((8, 12), (27, 28)):
            if src_ie in group or dst_ie in group:
                families[src_ie] = tuple(_address(group[ie]) if ie in group else None for ie in (src_ie, dst_ie))
        real = {
            key: pair
            for key, pair in families.items()
            if any(a is not None and not ipaddress.ip_address(a).is_unspecified for a in pair)
        }
        for src, dst in (real or families or {0: (None, None)}).values():
            candidate = (src, dst, ports[0], ports[1], ports[2])
            if candidate not in candidates:
                candidates.append(candidate)
    return candidates


def _oracle_record(
    flow: dict[str, Any], frame: int, template_id: int | None, info: _TemplateInfo | None, early: bool
) -> OracleRecord:
    candidates = _five_tuple_candidates(flow, info)
    counters: dict[str, int] = {}
    for tshark_name, (element, name) in COUNTERS.items():
        occurrences = _as_list(flow.get(tshark_name))
        if not occurrences:
            continue
        pens = [pen for pen, elem in (info.fields if info else []) if elem == element and pen in (0, REVERSE_PEN)]
        if len(pens) != len(occurrences):
            pens = [0] * len(occurrences)
        for pen, value in zip(pens, occurrences, strict=True):
            key = f"netflow.{name}" if pen == 0 else f"netflow.reverse_{name}"
            counters.setdefault(key, int(value))
    options = bool(info and info.options)
    return OracleRecord(frame, template_id, options, candidates, counters, early)


def parse_tshark(layers: list[dict[str, Any]]) -> Oracle:
    """Data records of a tshark -2 JSON decode, in packet, set and record order."""
    oracle = Oracle()
    templates_by_frame: dict[int, dict[int, _TemplateInfo]] = {}
    for number, packet in enumerate(layers, start=1):
        cflow = packet.get("cflow")
        frame = int(packet.get("frame", {}).get("frame.number", number))
        for part in _as_list(cflow):
            templates_by_frame.setdefault(frame, {}).update(_frame_templates(part))
    latest: dict[int, _TemplateInfo] = {}
    for frame_templates in templates_by_frame.values():
        latest.update(frame_templates)

    for number, packet in enumerate(layers, start=1):
        cflow = packet.get("cflow")
        if cflow is None:
            continue
        oracle.frames += 1
        oracle.malformed_frames += "_ws.malformed" in packet
        frame = int(packet.get("frame", {}).get("frame.number", number))
        for part in _as_list(cflow):
            if int(part.get("cflow.version", 0)) == 5:
                for key, value in part.items():
                    if key.startswith("pdu ") and isinstance(value, dict):
                        oracle.flows.append(_oracle_record(value, frame, None, None, early=False))
                continue
            for key, value in part.items():
                match = _SET_KEY.match(key)
                if not match or not isinstance(value, dict):
                    continue
                set_index, set_id = int(match.group(1)), int(match.group(2))
                oracle.undecodable_sets += sum(1 for k in value if k.startswith("Data (") and "no template" in k)
                flows = [v for k, v in value.items() if k.startswith("Flow ") and isinstance(v, dict)]
                if not flows:
                    continue
                template_frame = int(value.get("cflow.template_frame", frame))
                info = templates_by_frame.get(template_frame, {}).get(set_id) or latest.get(set_id)
                early = template_frame > frame or (
                    template_frame == frame and info is not None and info.set_index > set_index
                )
                target = oracle.options if info and info.options else oracle.flows
                for flow in flows:
                    target.append(_oracle_record(flow, frame, set_id, info, early))
    return oracle


def _reference_datagrams(unit: Unit) -> list[Datagram]:
    """What tshark is given to produce the reference decode (see the `Unit` flags)."""
    datagrams = unit_datagrams(unit, split=True)
    if unit.tshark_stops_at_count:
        datagrams = [
            replace(d, payload=d.payload[:2] + b"\xff\xff" + d.payload[4:]) if d.payload[:2] == b"\x00\x09" else d
            for d in datagrams
        ]
    return datagrams


@functools.cache
def tshark_oracle(unit_name: str, *, reference: bool = True) -> Oracle:
    """tshark -2's decode of a unit. `reference=False` is the manifest's own recipe (the files
    as they are); the default applies the unit's documented oracle fix-ups."""
    unit = UNITS_BY_NAME[unit_name]
    if reference and not (unit.concatenated or unit.tshark_stops_at_count):
        return tshark_oracle(unit_name, reference=False)
    if unit.tshark_reads_file:
        return parse_tshark(tshark_layers(unit.paths[0], unit.decode_as))
    datagrams = _reference_datagrams(unit) if reference else unit_datagrams(unit)
    with tempfile.TemporaryDirectory() as tmp:
        pcap = write_pcap(datagrams, Path(tmp) / "unit.pcap")
        return parse_tshark(tshark_layers(pcap, unit.decode_as))


# ---------------------------------------------------------------------------------------------
# flowd side


@dataclass
class OurRecord:
    options: bool
    five_tuple: FiveTuple
    counters: dict[str, int]
    document: dict[str, Any]

    def describe(self) -> str:
        kind = "options" if self.options else "flow"
        return f"{kind}: {_tuple_text(self.five_tuple)} {self.counters}"


@dataclass
class Ours:
    flows: list[OurRecord] = field(default_factory=list)
    options: list[OurRecord] = field(default_factory=list)
    parked: int = 0
    rejected: list[str] = field(default_factory=list)
    misfiled: list[str] = field(default_factory=list)
    """Records whose `event.action` disagrees with the result list they came in."""


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_address(value: Any) -> str | None:
    return None if value is None else str(ipaddress.ip_address(str(value)))


def _our_record(record: Any) -> OurRecord:
    from flowd.output.documents import flow_document

    document = flow_document(record)
    action = document.get("event.action", record.kind)
    five_tuple: FiveTuple = (
        _opt_address(document.get("source.ip")),
        _opt_address(document.get("destination.ip")),
        _opt_int(document.get("source.port")),
        _opt_int(document.get("destination.port")),
        _opt_int(document.get("network.iana_number")),
    )
    counters = {key: int(document[key]) for key in ALL_COUNTER_KEYS if document.get(key) is not None}
    return OurRecord(action == "netflow_options", five_tuple, counters, document)


def flowd_decode(unit: Unit, *, allow_reject: bool = False, split: bool = True) -> Ours:
    from flowd.decode import TemplateCache, decode_datagram
    from flowd.errors import DecodeError

    templates = TemplateCache()
    ours = Ours()
    for number, datagram in enumerate(unit_datagrams(unit, split=split), start=1):
        try:
            result = decode_datagram(datagram.payload, datagram.source, templates, datagram.timestamp)
        except DecodeError as error:
            if not allow_reject:
                raise AssertionError(f"{unit.name}: datagram {number} rejected: {error!r}") from error
            ours.rejected.append(f"datagram {number}: {error!r}")
            continue
        ours.parked += result.parked
        for records, target, options in ((result.flows, ours.flows, False), (result.options, ours.options, True)):
            for record in records:
                mine = _our_record(record)
                if mine.options != options:
                    ours.misfiled.append(
                        f"datagram {number}: {mine.describe()} in result.{'options' if options else 'flows'}"
                    )
                target.append(mine)
    return ours


# ---------------------------------------------------------------------------------------------
# comparison


def _endpoint(address: str | None, port: int | None) -> str:
    return f"[{address}]:{port}" if address and ":" in address else f"{address}:{port}"


def _tuple_text(t: FiveTuple) -> str:
    src, dst, sport, dport, proto = t
    return f"{_endpoint(src, sport)} -> {_endpoint(dst, dport)} proto {proto}"


def _matches(ours: OurRecord, theirs: OracleRecord) -> bool:
    return ours.five_tuple in theirs.candidates and ours.counters == theirs.counters


def _compare(kind: str, ours: list[OurRecord], theirs: list[OracleRecord], ordered: bool) -> list[str]:
    problems: list[str] = []
    if len(ours) != len(theirs):
        problems.append(f"{kind}: flowd {len(ours)} records, tshark {len(theirs)}")
    if ordered:
        for index, (mine, other) in enumerate(zip(ours, theirs, strict=False)):
            if not _matches(mine, other):
                problems.append(
                    f"{kind} #{index}: first mismatch\n    flowd : {mine.describe()}\n    tshark: {other.describe()}"
                )
                break
        else:
            common = min(len(ours), len(theirs))
            if len(ours) > common:
                problems.append(f"{kind} #{common}: first extra flowd record: {ours[common].describe()}")
            elif len(theirs) > common:
                problems.append(f"{kind} #{common}: first missing tshark record: {theirs[common].describe()}")
        return problems
    remaining = list(theirs)
    unmatched = []
    for mine in ours:
        for position, other in enumerate(remaining):
            if _matches(mine, other):
                del remaining[position]
                break
        else:
            unmatched.append(mine)
    if unmatched:
        problems.append(
            f"{kind}: {len(unmatched)} flowd records match no tshark record, e.g. {unmatched[0].describe()}"
        )
    if remaining:
        problems.append(f"{kind}: {len(remaining)} tshark records unmatched, e.g. {remaining[0].describe()}")
    return problems


UNIT_PARAMS = [pytest.param(unit, id=unit.name) for unit in UNITS]


@pytest.mark.parametrize("unit", UNIT_PARAMS)
def test_manifest_counts_match_tshark(unit: Unit) -> None:
    """Guards the oracle: our parse of tshark's JSON, on the manifest's recipe, finds the
    manifest's record counts, and the units flagged as tripping tshark really do."""
    oracle = tshark_oracle(unit.name, reference=False)
    assert oracle.frames == len(unit_datagrams(unit))
    assert (len(oracle.flows), len(oracle.options)) == (unit.data_records, unit.options_records)
    assert oracle.undecodable_sets == unit.undecodable_sets
    assert bool(oracle.malformed_frames) == unit.tshark_aborts
    if unit.concatenated:
        assert len(unit_datagrams(unit, split=True)) > len(unit_datagrams(unit))


@pytest.mark.parametrize("unit", UNIT_PARAMS)
def test_flowd_matches_tshark(unit: Unit) -> None:
    oracle = tshark_oracle(unit.name)
    ours = flowd_decode(unit, allow_reject=unit.name in MAY_REJECT)
    if ours.rejected and not ours.flows and not ours.options:
        return  # rejected as a whole, which the manifest allows for this unit
    if unit.undecodable_sets:
        assert ours.parked > 0, "data sets without a template must be parked (and counted), not dropped"
    assert not ours.misfiled, ours.misfiled[:3]
    ordered = not oracle.any_early
    if unit.tshark_aborts:
        # tshark shows only the records before its exception: those must be our first ones.
        assert len(ours.flows) == unit.flowd_data_records
        problems = _compare("flow", ours.flows[: len(oracle.flows)], oracle.flows, ordered)
    else:
        problems = _compare("flow", ours.flows, oracle.flows, ordered)
    problems += _compare("options", ours.options, oracle.options, ordered)
    assert not problems, f"{unit.name} ({'in order' if ordered else 'as multisets'}):\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("unit", [pytest.param(u, id=u.name) for u in UNITS if u.concatenated])
def test_concatenated_file_as_one_datagram(unit: Unit) -> None:
    """Fed as one datagram, a file of back-to-back PDUs decodes as its first PDU (what tshark
    and logstash do) or as all of them (splitting on the v5 count / IPFIX length), never as
    anything else: no following PDU header read as a record."""
    ours = flowd_decode(unit, split=False)
    first, everything = tshark_oracle(unit.name, reference=False), tshark_oracle(unit.name)
    as_first = _compare("flow", ours.flows, first.flows, True) + _compare("options", ours.options, first.options, True)
    as_all = _compare("flow", ours.flows, everything.flows, True)
    as_all += _compare("options", ours.options, everything.options, True)
    assert not as_first or not as_all, (
        f"{unit.name} as one datagram:\n  as first PDU: "
        + "\n  ".join(as_first)
        + "\n  as all PDUs: "
        + "\n  ".join(as_all)
    )


def _expected_raw(counters: dict[str, int], kind: str) -> int | None:
    """Raw (unscaled) forward + reverse total from tshark's counters, as design.md's
    `flowd.raw_bytes`/`raw_packets`: forward = delta count, else total count, else initiator
    count; reverse = reverse delta, else reverse total, else responder count."""
    if kind == "bytes":
        forward = ["octet_delta_count", "octet_total_count", "initiator_octets"]
        reverse = ["reverse_octet_delta_count", "reverse_octet_total_count", "responder_octets"]
    else:
        forward = ["packet_delta_count", "packet_total_count"]
        reverse = ["reverse_packet_delta_count", "reverse_packet_total_count"]
    found = False
    total = 0
    for names in (forward, reverse):
        for name in names:
            if f"netflow.{name}" in counters:
                total += counters[f"netflow.{name}"]
                found = True
                break
    return total if found else None


@pytest.mark.parametrize("unit", UNIT_PARAMS)
def test_raw_totals_match_tshark(unit: Unit) -> None:
    """`flowd.raw_bytes` / `flowd.raw_packets` of every flow record sum the right counters."""
    oracle = tshark_oracle(unit.name)
    ours = flowd_decode(unit, allow_reject=unit.name in MAY_REJECT)
    if unit.tshark_aborts:
        ours.flows = ours.flows[: len(oracle.flows)]
    if len(ours.flows) != len(oracle.flows):
        pytest.skip("record counts differ; test_flowd_matches_tshark reports it")
    theirs = list(oracle.flows)
    if oracle.any_early:  # pair records up by content instead of position
        paired = []
        for mine in ours.flows:
            match = next((t for t in theirs if _matches(mine, t)), None)
            if match is None:
                pytest.skip("records differ; test_flowd_matches_tshark reports it")
            theirs.remove(match)
            paired.append(match)
        theirs = paired
    for index, (mine, other) in enumerate(zip(ours.flows, theirs, strict=True)):
        for kind in ("bytes", "packets"):
            expected = _expected_raw(other.counters, kind)
            actual = mine.document.get(f"flowd.raw_{kind}")
            assert (actual or 0) == (expected or 0), (
                f"flow #{index} flowd.raw_{kind}={actual}, tshark counters {other.counters} -> {expected}"
            )


def test_oracle_sees_reverse_counters() -> None:
    """The reverse-IE labelling is exercised: YAF biflows carry reverse totals."""
    oracle = tshark_oracle("lcn:ipfix_yaf")
    assert any("netflow.reverse_octet_total_count" in r.counters for r in oracle.flows)


def test_data_before_template_unit_is_compared_as_multiset() -> None:
    assert tshark_oracle("akv:data+templates").any_early


def test_undecodable_only_unit_decodes_nothing() -> None:
    unit = UNITS_BY_NAME["ndpi:netflowv9"]
    oracle = tshark_oracle(unit.name)
    ours = flowd_decode(unit)
    assert len(oracle.flows) == len(oracle.options) == 0
    assert len(ours.flows) == len(ours.options) == 0
    assert ours.parked > 0
