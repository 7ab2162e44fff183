"""sFlow version 5 decoder (sflow.org "sFlow Version 5", July 2004, and its structure registry).

Theory of operation: a datagram is a header (version 5, agent address, sub-agent id, sequence
number, uptime, sample count) followed by samples, each `(data_format, length, body)` where the
data format is enterprise << 12 | format. Flow samples (1, expanded 3) and counter samples (2,
expanded 4) hold records framed the same way. Every sample and record is decoded only within its
declared length (the `Reader.sub` rule, checked inline: a Reader object per sample and record cost
a quarter of the decode time), and the cursor moves to its end whatever happens inside, so an
error in one sample or record becomes a `SoftError` and the rest decodes. A sample or record
whose length overruns its container ends the walk with a "truncated" soft error.
Unknown sample formats and enterprises are skipped and reported as soft errors; unknown records
inside a known sample are skipped and counted in the sample's `unknown_records` field, because
vendor records are routine rather than faults. A discarded packet sample (sflow.org
sflow_drops.txt: a packet the device dropped, the reason, and the packet's flow records) becomes
a record of its own kind. An agent address of type 0 (unknown) leaves the samples without
`agent_address`.

Each flow sample and each counter sample becomes one `FlowRecord` whose `fields` is a flat dict
of snake_case values (documents map them to `sflow.*` and ECS keys). Only the datagram header
can make the whole datagram fail, with a `DecodeError`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from socket import AF_INET6, inet_ntoa, inet_ntop
from typing import Any

from flowd.decode.headers import HEADER_PROTOCOL_ETHERNET, parse_ethernet, parse_sampled_header
from flowd.decode.reader import Reader
from flowd.decode.sflow_batch import (
    INTERFACE_INTERNAL,
    INTERFACE_INTERNAL_EXPANDED,
    SFLOW_VERSION,
    SampleBatch,
    sample_record,
    walk_simple_sample,
)
from flowd.decode.sflow_counters import COUNTER_DECODERS, RecordDecoder, read_unbounded_string
from flowd.decode.sflow_routing import (
    ADDRESS_IPV4,
    ADDRESS_IPV6,
    ADDRESS_UNKNOWN,
    decode_extended_gateway,
    decode_extended_router,
    need,
    read_address,
    read_u32_list,
)
from flowd.errors import DecodeError, TruncatedError
from flowd.model import (
    KIND_SFLOW_COUNTERS,
    KIND_SFLOW_DROP,
    KIND_SFLOW_FLOW,
    DecodeResult,
    Exporter,
    FlowRecord,
    SoftError,
)

SAMPLE_FLOW = 1
SAMPLE_COUNTERS = 2
SAMPLE_FLOW_EXPANDED = 3
SAMPLE_COUNTERS_EXPANDED = 4
SAMPLE_DISCARDED_PACKET = 5
"""sFlow drops extension (sflow.org sflow_drops.txt): a packet the device dropped, and why."""

FORMAT_IFINDEX = 0
FORMAT_DISCARDED = 1
FORMAT_MULTIPLE = 2

MAX_URL_BYTES = 2048
MAX_NAME_BYTES = 255
"""Bounds on the text kept from `extended_url` and `extended_user` strings, which the spec leaves
unbounded (`string url<>`): longer ones are cut, so documents stay bounded."""

_II = struct.Struct("!II")
_DISCARDED = struct.Struct("!8I")
"""Discarded packet sample: sequence, source id type and index, drops, input and output ifIndex,
reason, record count."""

DROP_REASONS: dict[int, str] = {
    code: name
    for code, name in enumerate(
        (
            "net_unreachable",
            "host_unreachable",
            "protocol_unreachable",
            "port_unreachable",
            "frag_needed",
            "src_route_failed",
            "dst_net_unknown",
            "dst_host_unknown",
            "src_host_isolated",
            "dst_net_prohibited",
            "dst_host_prohibited",
            "dst_net_tos_unreachable",
            "dst_host_tos_unreachable",
            "comm_admin_prohibited",
            "host_precedence_violation",
            "precedence_cutoff",
        )
    )
} | {
    code: name
    for code, name in enumerate(
        (
            "unknown",
            "ttl_exceeded",
            "acl",
            "no_buffer_space",
            "red",
            "traffic_shaping",
            "pkt_too_big",
            "src_mac_is_multicast",
            "vlan_tag_mismatch",
            "ingress_vlan_filter",
            "ingress_spanning_tree_filter",
            "port_list_is_empty",
            "port_loopback_filter",
            "blackhole_route",
            "non_ip",
            "uc_dip_over_mc_dmac",
            "dip_is_loopback_address",
            "sip_is_mc",
            "sip_is_loopback_address",
            "ip_header_corrupted",
            "ipv4_sip_is_limited_bc",
            "ipv6_mc_dip_reserved_scope",
            "ipv6_mc_dip_interface_local_scope",
            "unresolved_neigh",
            "mc_reverse_path_forwarding",
            "non_routable_packet",
            "decap_error",
            "overlay_smac_is_mc",
            "unknown_l2",
            "unknown_l3",
            "unknown_l3_exception",
            "unknown_buffer",
            "unknown_tunnel",
            "unknown_l4",
        ),
        start=256,
    )
}
"""sflow_drops.txt `drop_reason`: ICMP unreachable codes (0-15), then device reasons from 256."""
_HEADER_TAIL = struct.Struct("!IIII")
_FLOW = struct.Struct("!8I")
_FLOW_EXPANDED = struct.Struct("!11I")
_COUNTERS = struct.Struct("!III")
_COUNTERS_EXPANDED = struct.Struct("!IIII")
_RAW_HEADER = struct.Struct("!IIII")
_SAMPLED_ETHERNET = struct.Struct("!I6s2x6s2xI")
_SAMPLED_IPV4 = struct.Struct("!II4s4sIIII")
_SAMPLED_IPV6 = struct.Struct("!II16s16sIIII")
_SWITCH = struct.Struct("!IIII")
_U32 = struct.Struct("!I")

Fields = dict[str, Any]

_INPUT_KEYS = ("input_ifindex", "input_internal", "input_discard_reason", "input_interface_count")
_OUTPUT_KEYS = ("output_ifindex", "output_internal", "output_discard_reason", "output_interface_count")
_INTERNAL = (INTERFACE_INTERNAL, INTERFACE_INTERNAL_EXPANDED)


def decode_sflow(data: bytes | memoryview, exporter: Exporter, received_at: float) -> DecodeResult:
    """Decode one sFlow v5 datagram. Raises `DecodeError` only when its header is unreadable."""
    reader = Reader(data)
    version = reader.u32()
    if version != SFLOW_VERSION:
        raise DecodeError(f"sFlow version {version} is not 5", offset=0, reason="unsupported_version")
    agent_type = reader.u32()
    agent: str | None
    if agent_type == ADDRESS_IPV4:
        agent = inet_ntoa(reader.take(4))
    elif agent_type == ADDRESS_IPV6:
        agent = inet_ntop(AF_INET6, reader.take(16))
    elif agent_type == ADDRESS_UNKNOWN:
        agent = None  # sFlow v5 `address`: "case UNKNOWN: void"; the samples still decode
    else:
        raise DecodeError(f"agent address type {agent_type} is unknown", offset=4, reason="bad_address")
    sub_agent, sequence, uptime_ms, sample_count = _HEADER_TAIL.unpack_from(data, reader.need(16))
    reader.pos += 16

    result = DecodeResult(version=SFLOW_VERSION, declared_records=sample_count)
    flows: list[FlowRecord] = []
    parts: list[Sequence[FlowRecord]] = [flows]
    simple: SampleBatch | None = None  # flow samples of the common shape, decoded later in bulk
    errors = result.errors
    # Samples and records are many and small, so `Reader.sub`'s rule is applied inline rather than
    # through a Reader per sample: a sample must end inside the datagram, it is decoded within
    # [start, stop), and the cursor then jumps to stop whatever happened inside.
    pos = reader.pos
    end = reader.end
    for index in range(sample_count):
        if end - pos < 8:
            errors.append(SoftError("truncated", f"datagram ends before sample {index + 1} of {sample_count}", pos))
            break
        offset = pos
        data_format, length = _II.unpack_from(data, pos)
        start = pos + 8
        pos = start + length
        if pos > end:
            errors.append(SoftError("truncated", f"sample {index + 1} of {length} bytes overruns the datagram", offset))
            break
        try:
            if data_format in (SAMPLE_FLOW, SAMPLE_FLOW_EXPANDED):
                expanded = data_format == SAMPLE_FLOW_EXPANDED
                walked = walk_simple_sample(data, start, pos, expanded)
                if walked is not None and agent is not None:  # the batch's rows all have an agent
                    if simple is None or parts[-1] is not simple:  # keep the samples' order
                        simple = SampleBatch(decode_flow_sample)
                        simple.add_datagram(data, exporter, received_at, agent, (sub_agent, sequence, uptime_ms))
                        parts.append(simple)
                    simple.add_row(walked)
                    continue
                fields, rate = decode_flow_sample(data, start, pos, expanded, agent, errors)
                kind = KIND_SFLOW_FLOW
            elif data_format in (SAMPLE_COUNTERS, SAMPLE_COUNTERS_EXPANDED):
                fields = _decode_counter_sample(
                    data, start, pos, data_format == SAMPLE_COUNTERS_EXPANDED, agent, errors
                )
                rate = 1
                kind = KIND_SFLOW_COUNTERS
            elif data_format == SAMPLE_DISCARDED_PACKET:
                fields = decode_discarded_packet(data, start, pos, agent, errors)
                rate = 1  # one packet, not a sample standing for others
                kind = KIND_SFLOW_DROP
            else:
                errors.append(
                    SoftError(
                        "unknown_sample_format",
                        f"sample {index + 1}: enterprise {data_format >> 12} format {data_format & 0xFFF} skipped",
                        offset,
                    )
                )
                continue
        except DecodeError as error:
            errors.append(SoftError(error.reason, f"sample {index + 1}: {error}", error.offset))
            continue
        if parts[-1] is not flows:
            flows = []
            parts.append(flows)
        flows.append(sample_record(kind, exporter, received_at, fields, (sub_agent, sequence, uptime_ms), rate))
    for part in parts:
        result.flows.add_batch(part)
    return result


def decode_flow_sample(
    data: bytes | memoryview, pos: int, end: int, expanded: bool, agent: str | None, errors: list[SoftError]
) -> tuple[Fields, int]:
    """A flow sample (format 1) or expanded flow sample (format 3) in `data[pos:end]`."""
    if expanded:
        if end - pos < 44:
            raise TruncatedError(f"expanded flow sample needs 44 bytes, has {end - pos}", offset=pos)
        (sequence, id_type, id_index, rate, pool, drops, in_format, in_value, out_format, out_value, count) = (
            _FLOW_EXPANDED.unpack_from(data, pos)
        )
        pos += 44
    else:
        if end - pos < 32:
            raise TruncatedError(f"flow sample needs 32 bytes, has {end - pos}", offset=pos)
        sequence, source_id, rate, pool, drops, in_word, out_word, count = _FLOW.unpack_from(data, pos)
        pos += 32
        # Compact form: source id = type << 24 | index; interface = format << 30 | value.
        id_type = source_id >> 24
        id_index = source_id & 0xFFFFFF
        in_format = in_word >> 30
        in_value = in_word & 0x3FFFFFFF
        out_format = out_word >> 30
        out_value = out_word & 0x3FFFFFFF
    fields: Fields = {
        "agent_address": agent,
        "sample_sequence": sequence,
        "source_id_type": id_type,
        "source_id_index": id_index,
        "sampling_rate": rate,
        "sample_pool": pool,
        "drops": drops,
        "input_format": in_format,
        "output_format": out_format,
    }
    if agent is None:
        del fields["agent_address"]
    if in_format == FORMAT_IFINDEX and in_value not in _INTERNAL:
        fields["input_ifindex"] = in_value
    else:
        _set_interface(fields, _INPUT_KEYS, in_format, in_value)
    if out_format == FORMAT_IFINDEX and out_value not in _INTERNAL:
        fields["output_ifindex"] = out_value
    else:
        _set_interface(fields, _OUTPUT_KEYS, out_format, out_value)
    _decode_records(data, pos, end, count, FLOW_DECODERS, fields, errors)
    return fields, rate


def decode_discarded_packet(
    data: bytes | memoryview, pos: int, end: int, agent: str | None, errors: list[SoftError]
) -> Fields:
    """A discarded packet sample (format 5, sflow_drops.txt) in `data[pos:end]`: its sequence
    number, expanded source id, the notifications the agent could not send (`drops`), the
    interfaces (0: not known), the drop reason, then flow records as in a flow sample."""
    if end - pos < _DISCARDED.size:
        raise TruncatedError(f"discarded packet sample needs {_DISCARDED.size} bytes, has {end - pos}", offset=pos)
    sequence, id_type, id_index, drops, input_ifindex, output_ifindex, reason, count = _DISCARDED.unpack_from(data, pos)
    fields: Fields = {
        "sample_sequence": sequence,
        "source_id_type": id_type,
        "source_id_index": id_index,
        "drops": drops,
        "drop_reason": reason,
    }
    if agent is not None:
        fields["agent_address"] = agent
    name = DROP_REASONS.get(reason)
    if name is not None:
        fields["drop_reason_name"] = name
    if input_ifindex:
        fields["input_ifindex"] = input_ifindex
    if output_ifindex:
        fields["output_ifindex"] = output_ifindex
    _decode_records(data, pos + _DISCARDED.size, end, count, FLOW_DECODERS, fields, errors)
    return fields


def _set_interface(fields: Fields, keys: tuple[str, str, str, str], interface_format: int, value: int) -> None:
    if interface_format == FORMAT_IFINDEX:
        if value in _INTERNAL:  # 0xFFFFFFFF only in an expanded sample
            fields[keys[1]] = True
        else:
            fields[keys[0]] = value
    elif interface_format == FORMAT_DISCARDED:
        fields[keys[2]] = value
    elif interface_format == FORMAT_MULTIPLE:
        fields[keys[3]] = value  # 0 means "more than one, number unknown"


def _decode_counter_sample(
    data: bytes | memoryview, pos: int, end: int, expanded: bool, agent: str | None, errors: list[SoftError]
) -> Fields:
    """A counter sample (format 2) or expanded counter sample (format 4) in `data[pos:end]`."""
    if expanded:
        if end - pos < 16:
            raise TruncatedError(f"expanded counter sample needs 16 bytes, has {end - pos}", offset=pos)
        sequence, id_type, id_index, count = _COUNTERS_EXPANDED.unpack_from(data, pos)
        pos += 16
    else:
        if end - pos < 12:
            raise TruncatedError(f"counter sample needs 12 bytes, has {end - pos}", offset=pos)
        sequence, source_id, count = _COUNTERS.unpack_from(data, pos)
        pos += 12
        id_type = source_id >> 24
        id_index = source_id & 0xFFFFFF
    fields: Fields = {
        "agent_address": agent,
        "sample_sequence": sequence,
        "source_id_type": id_type,
        "source_id_index": id_index,
    }
    if agent is None:
        del fields["agent_address"]
    _decode_records(data, pos, end, count, COUNTER_DECODERS, fields, errors)
    return fields


def _decode_records(
    data: bytes | memoryview,
    pos: int,
    end: int,
    count: int,
    decoders: dict[int, RecordDecoder],
    fields: Fields,
    errors: list[SoftError],
) -> None:
    """The records of one sample in `data[pos:end]`, each decoded within its declared length;
    an error stays in its record and the next record still decodes."""
    unknown = 0
    for index in range(count):
        if end - pos < 8:
            errors.append(SoftError("truncated", f"sample ends before record {index + 1} of {count}", pos))
            break
        data_format, length = _II.unpack_from(data, pos)
        start = pos + 8
        stop = start + length
        if stop > end:
            errors.append(SoftError("truncated", f"record {index + 1} of {length} bytes overruns its sample", pos))
            break
        pos = stop
        decoder = decoders.get(data_format)
        if decoder is None:
            unknown += 1
            continue
        try:
            decoder(data, start, stop, fields)
        except DecodeError as error:
            errors.append(SoftError(error.reason, f"record format {data_format}: {error}", error.offset))
    if unknown:
        fields["unknown_records"] = unknown


def decode_raw_header(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """Raw packet header (flow format 1): protocol, frame length, stripped bytes, header snapshot."""
    if end - pos < 16:
        raise TruncatedError(f"raw packet header needs 16 bytes, record has {end - pos}", offset=pos)
    protocol, frame_length, stripped, header_length = _RAW_HEADER.unpack_from(data, pos)
    fields["header_protocol"] = protocol
    fields["frame_length"] = frame_length
    fields["stripped"] = stripped
    fields["header_length"] = header_length
    pos += 16
    if end - pos < header_length:
        raise TruncatedError(f"sampled header of {header_length} bytes overruns its record", offset=pos)
    if protocol == HEADER_PROTOCOL_ETHERNET:
        parse_ethernet(data, pos, pos + header_length, fields)
    else:
        parse_sampled_header(protocol, data, pos, pos + header_length, fields)


def decode_sampled_ethernet(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """Sampled Ethernet (flow format 2). A raw header in the same sample takes precedence."""
    need(pos, end, 24, "sampled Ethernet")
    length, src, dst, ether_type = _SAMPLED_ETHERNET.unpack_from(data, pos)
    fields.setdefault("frame_length", length)
    fields.setdefault("src_mac", bytes(src).hex(":"))
    fields.setdefault("dst_mac", bytes(dst).hex(":"))
    fields.setdefault("ether_type", ether_type)


def decode_sampled_ipv4(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """Sampled IPv4 (flow format 3)."""
    need(pos, end, 32, "sampled IPv4")
    length, protocol, src, dst, src_port, dst_port, tcp_flags, tos = _SAMPLED_IPV4.unpack_from(data, pos)
    _set_sampled_ip(fields, 4, length, protocol, inet_ntoa(src), inet_ntoa(dst), src_port, dst_port, tcp_flags, tos)


def decode_sampled_ipv6(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """Sampled IPv6 (flow format 4)."""
    need(pos, end, 56, "sampled IPv6")
    length, protocol, src, dst, src_port, dst_port, tcp_flags, priority = _SAMPLED_IPV6.unpack_from(data, pos)
    src_ip = inet_ntop(AF_INET6, src)
    dst_ip = inet_ntop(AF_INET6, dst)
    _set_sampled_ip(fields, 6, length, protocol, src_ip, dst_ip, src_port, dst_port, tcp_flags, priority)


def _set_sampled_ip(fields: Fields, version: int, length: int, protocol: int, src: str, dst: str, *rest: int) -> None:
    values = (version, length, protocol, src, dst, *rest)
    keys = ("ip_version", "ip_length", "protocol", "src_ip", "dst_ip", "src_port", "dst_port", "tcp_flags", "ip_tos")
    for key, value in zip(keys, values, strict=True):
        fields.setdefault(key, value)


def decode_extended_switch(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """Extended switch (flow format 1001): 802.1Q VLAN and priority in and out."""
    if end - pos < 16:
        raise TruncatedError(f"extended switch needs 16 bytes, record has {end - pos}", offset=pos)
    fields["src_vlan"], fields["src_priority"], fields["dst_vlan"], fields["dst_priority"] = _SWITCH.unpack_from(
        data, pos
    )


def decode_extended_user(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """Extended user (flow format 1004): source and destination user names with charsets."""
    need(pos, end, 4, "extended user")
    src_charset: int = _U32.unpack_from(data, pos)[0]
    src_user, pos = read_unbounded_string(data, pos + 4, end, MAX_NAME_BYTES)
    need(pos, end, 4, "extended user")
    dst_charset: int = _U32.unpack_from(data, pos)[0]
    dst_user, pos = read_unbounded_string(data, pos + 4, end, MAX_NAME_BYTES)
    fields["src_user_charset"] = src_charset
    fields["src_user"] = src_user
    fields["dst_user_charset"] = dst_charset
    fields["dst_user"] = dst_user


def decode_extended_url(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """Extended URL (flow format 1005): direction (1 source, 2 destination), URL, host."""
    need(pos, end, 4, "extended URL")
    direction: int = _U32.unpack_from(data, pos)[0]
    url, pos = read_unbounded_string(data, pos + 4, end, MAX_URL_BYTES)
    host, pos = read_unbounded_string(data, pos, end, MAX_NAME_BYTES) if end - pos >= 4 else ("", pos)
    fields["url_direction"] = direction
    fields["url"] = url
    if host:
        fields["url_host"] = host


def decode_extended_mpls(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """Extended MPLS (flow format 1006): next hop and the label stacks in and out."""
    next_hop, pos = read_address(data, pos, end)
    in_labels, pos = read_u32_list(data, pos, end, "MPLS in-stack")
    out_labels, pos = read_u32_list(data, pos, end, "MPLS out-stack")
    fields["mpls_next_hop"] = next_hop
    fields["mpls_in_stack"] = in_labels
    fields["mpls_out_stack"] = out_labels


def decode_extended_nat(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """Extended NAT (flow format 1007): translated source and destination addresses."""
    src, pos = read_address(data, pos, end)
    dst, pos = read_address(data, pos, end)
    fields["nat_src_ip"] = src
    fields["nat_dst_ip"] = dst


def decode_extended_vlan_tunnel(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """Extended VLAN tunnel (flow format 1012): the stack of 802.1Q TPID/TCI words."""
    stack, pos = read_u32_list(data, pos, end, "VLAN tunnel stack")
    fields["vlan_stack"] = [word & 0x0FFF for word in stack]


FLOW_DECODERS: dict[int, RecordDecoder] = {
    1: decode_raw_header,
    2: decode_sampled_ethernet,
    3: decode_sampled_ipv4,
    4: decode_sampled_ipv6,
    1001: decode_extended_switch,
    1002: decode_extended_router,
    1003: decode_extended_gateway,
    1004: decode_extended_user,
    1005: decode_extended_url,
    1006: decode_extended_mpls,
    1007: decode_extended_nat,
    1012: decode_extended_vlan_tunnel,
}
"""Flow record decoders keyed by the record's data format (enterprise 0 only)."""
