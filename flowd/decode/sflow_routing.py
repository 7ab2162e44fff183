"""Extended router (flow format 1002) and extended gateway (1003) records: what a router adds to
its flow samples (next hop, prefix lengths, BGP next hop, AS numbers, AS path, communities).

Shared by the per-sample decoder (`sflow.decode_flow_sample`) and the walker of common-shape
samples (`sflow_batch.walk_simple_sample`), which decodes these two records of a sample with the
same functions so that both give a sample the same fields.
"""

from __future__ import annotations

import struct
from socket import AF_INET6, inet_ntoa, inet_ntop
from typing import Any

from flowd.errors import DecodeError, TruncatedError

ADDRESS_UNKNOWN = 0
ADDRESS_IPV4 = 1
ADDRESS_IPV6 = 2
MAX_LIST = 256
"""Bound on AS path / community / label list lengths taken from the wire (lengths are also checked)."""

_PREFIX_LENGTHS = struct.Struct("!II")
_GATEWAY_ASES = struct.Struct("!IIII")
"""Router AS, source AS, source peer AS and the AS path's segment count."""
_U32 = struct.Struct("!I")

Fields = dict[str, Any]


def need(pos: int, end: int, size: int, name: str) -> None:
    if end - pos < size:
        raise TruncatedError(f"{name} needs {size} bytes, record has {end - pos}", offset=pos)


def read_address(data: bytes | memoryview, pos: int, end: int) -> tuple[str | None, int]:
    """An sFlow `address`: type word, then 4 (IPv4) or 16 (IPv6) bytes; type 0 is unknown."""
    need(pos, end, 4, "address")
    kind: int = _U32.unpack_from(data, pos)[0]
    if kind == ADDRESS_IPV4:
        need(pos + 4, end, 4, "IPv4 address")
        return inet_ntoa(data[pos + 4 : pos + 8]), pos + 8
    if kind == ADDRESS_IPV6:
        need(pos + 4, end, 16, "IPv6 address")
        return inet_ntop(AF_INET6, data[pos + 4 : pos + 20]), pos + 20
    if kind == ADDRESS_UNKNOWN:
        return None, pos + 4
    raise DecodeError(f"address type {kind} is unknown", offset=pos, reason="bad_address")


def read_u32_list(data: bytes | memoryview, pos: int, end: int, name: str) -> tuple[list[int], int]:
    """An XDR `unsigned int <>`: count, then that many words, all inside the record."""
    need(pos, end, 4, name)
    count: int = _U32.unpack_from(data, pos)[0]
    pos += 4
    if count > MAX_LIST:
        raise DecodeError(f"{name} claims {count} entries", offset=pos, reason="bad_length")
    need(pos, end, 4 * count, name)
    return list(struct.unpack_from(f"!{count}I", data, pos)), pos + 4 * count


def decode_extended_router(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """Extended router (flow format 1002): next hop and source/destination prefix lengths."""
    next_hop, pos = read_address(data, pos, end)
    need(pos, end, 8, "extended router")
    fields["next_hop"] = next_hop
    fields["src_mask_len"], fields["dst_mask_len"] = _PREFIX_LENGTHS.unpack_from(data, pos)


def decode_extended_gateway(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """Extended gateway (flow format 1003): BGP next hop, AS numbers, AS path, communities."""
    next_hop, pos = read_address(data, pos, end)
    need(pos, end, 16, "extended gateway")
    router_as, src_as, src_peer_as, segment_count = _GATEWAY_ASES.unpack_from(data, pos)
    pos += 16
    if segment_count > MAX_LIST:
        raise DecodeError(f"AS path claims {segment_count} segments", offset=pos, reason="bad_length")
    path: list[int] = []
    segments: list[int] = []
    for _ in range(segment_count):
        need(pos, end, 4, "AS path segment")
        segment_type: int = _U32.unpack_from(data, pos)[0]  # 1 = AS_SET, 2 = AS_SEQUENCE
        numbers, pos = read_u32_list(data, pos + 4, end, "AS path segment")
        segments.append(segment_type)
        path.extend(numbers)
    communities, pos = read_u32_list(data, pos, end, "communities")
    need(pos, end, 4, "local preference")
    fields["bgp_next_hop"] = next_hop
    fields["router_as"] = router_as
    fields["src_as"] = src_as
    fields["src_peer_as"] = src_peer_as
    fields["dst_as_path"] = path
    fields["dst_as_path_segment_types"] = segments
    if path:
        # The path starts at the peer; its last AS originated the destination prefix.
        fields["dst_peer_as"] = path[0]
        fields["dst_as"] = path[-1]
    fields["communities"] = communities
    fields["local_pref"] = _U32.unpack_from(data, pos)[0]
