"""Community ID v1 flow hash (corelight/community-id-spec).

The hash input is seed (2 bytes) . lower endpoint address . higher endpoint address . protocol
(1 byte) . zero pad (1 byte) . lower port . higher port, all in network byte order, so both
directions of a flow hash alike; the output is "1:" + base64(SHA1). Ports are hashed only for
TCP, UDP, SCTP, ICMP and ICMPv6. ICMP has no ports: the spec maps (type, code) to a port pair as
Zeek does: a request/reply type pairs with its counterpart type, and then the pair orders like
ports; any other type is one-way, hashed as (type, code) in the direction seen.
"""

from __future__ import annotations

import binascii
import hashlib
import struct
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from flowd.enrich.sha1_batch import WORTH_FROM, sha1_digests

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_SCTP = 132
_WITH_PORTS = frozenset((PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6, PROTO_SCTP))

# Zeek's ICMP4_counterpart / ICMP6_counterpart (and the specification's reference code): echo,
# timestamp, information, router solicitation/advertisement, address mask, each both ways.
ICMP_COUNTERPARTS: dict[int, int] = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
# Echo, router and neighbour discovery, MLD query/report, who-are-you, home agent address discovery.
ICMPV6_COUNTERPARTS: dict[int, int] = {
    128: 129,
    129: 128,
    133: 134,
    134: 133,
    135: 136,
    136: 135,
    130: 131,
    131: 130,
    139: 140,
    140: 139,
    144: 145,
    145: 144,
}

_PACKERS = {
    (4, True): struct.Struct("!2s4s4sBxHH").pack,
    (16, True): struct.Struct("!2s16s16sBxHH").pack,
    (4, False): struct.Struct("!2s4s4sBx").pack,
    (16, False): struct.Struct("!2s16s16sBx").pack,
}
"""The whole hashed input in one pack (seed, addresses, protocol, padding, ports): one buffer."""


def _fastest_sha1() -> Callable[[bytes], Any]:
    """The cheaper per call of OpenSSL's SHA-1 and CPython's own, timed here on this machine's
    16-byte inputs (a millisecond at import). It depends on the CPU: with SHA instructions
    OpenSSL's was about 20% cheaper on one of our machines, without them the built-in about 15%
    on another; the digest is the same."""
    candidates: list[Callable[[bytes], Any]] = [hashlib.sha1]
    try:
        from _sha1 import sha1  # type: ignore[import-not-found]
    except ImportError:  # a Python built without it
        return hashlib.sha1
    candidates.append(sha1)
    inputs = [bytes([n]) * 16 for n in range(256)]

    def cost(function: Callable[[bytes], Any]) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for data in inputs:
                function(data).digest()
            best = min(best, time.perf_counter() - started)
        return best

    return min(candidates, key=cost)


_sha1 = _fastest_sha1()
_b64 = binascii.b2a_base64


def community_id(
    source: bytes, destination: bytes, protocol: int, source_port: int, destination_port: int, seed: bytes
) -> str:
    """Community ID v1 of packed addresses (4 or 16 bytes each) and ports.

    For ICMP/ICMPv6 pass the type as `source_port` and the code as `destination_port`.
    `seed` is the 2-byte big-endian seed, see `seed_bytes`.
    """
    if protocol in _WITH_PORTS:
        one_way = False
        if protocol in (PROTO_ICMP, PROTO_ICMPV6):
            table = ICMP_COUNTERPARTS if protocol == PROTO_ICMP else ICMPV6_COUNTERPARTS
            counterpart = table.get(source_port)
            if counterpart is None:
                one_way = True
            else:
                destination_port = counterpart
        if not one_way and (destination < source or (destination == source and destination_port < source_port)):
            source, destination = destination, source
            source_port, destination_port = destination_port, source_port
        data = _PACKERS[len(source), True](
            seed, source, destination, protocol, source_port & 0xFFFF, destination_port & 0xFFFF
        )
    else:
        if destination < source:
            source, destination = destination, source
        data = _PACKERS[len(source), False](seed, source, destination, protocol & 0xFF)
    return "1:" + _b64(_sha1(data).digest(), newline=False).decode("ascii")


PORT_PROTOCOLS = tuple(sorted(_WITH_PORTS))
"""Protocols hashed with ports (ICMP's type and code standing in for them)."""


Ports = tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.bool_]]
"""Source ports, destination ports and whether each flow is one-way (ICMP types without a counterpart)."""


def community_ids_bulk(
    source: npt.NDArray[np.uint8],
    destination: npt.NDArray[np.uint8],
    protocols: npt.NDArray[Any],
    ports: Ports | None,
    seed: bytes,
) -> npt.NDArray[np.uint8]:
    """The base64 part (28 characters) of the Community ID of many flows at once.

    `source` and `destination` are packed addresses, one row each (all 4 or all 16 bytes).
    `ports` is (source ports, destination ports, one-way) for protocols hashed with ports (for
    ICMP: the type, the counterpart type or code, and whether the type is one-way, which keeps
    the order as seen), None for the others. The endpoint order and the hashed input are built
    in numpy, as `community_id` builds them for one flow, and a large batch is hashed in numpy
    too (`sha1_batch`).
    """
    count, length = source.shape
    if length == 4:  # as big-endian integers, which compare as their bytes do
        low, high = (
            np.ascontiguousarray(a).view(">u4").reshape(count).astype(np.uint32) for a in (source, destination)
        )
        hashed: npt.NDArray[Any] = _ipv4_words((low, high), protocols, ports, int.from_bytes(seed, "big"))
    else:
        hashed = _byte_inputs((source, destination), protocols, ports, seed)
    padded = np.zeros((count, 21), dtype=np.uint8)  # 21 bytes: each row encodes on its own
    padded[:, :20] = _digests(np.ascontiguousarray(hashed).view(np.uint8).reshape(count, -1))
    text = np.frombuffer(_b64(padded.tobytes(), newline=False), dtype=np.uint8).reshape(count, 28).copy()
    text[:, 27] = ord("=")  # 20 bytes encode to 27 characters and one pad
    return text


def _digests(inputs: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """SHA-1 of each row: in numpy for a large batch, one call per row for a small one."""
    if len(inputs) >= WORTH_FROM:
        return sha1_digests(inputs)
    sha1 = _sha1
    rows = cast(list[bytes], inputs.view(np.dtype((np.void, inputs.shape[1]))).reshape(len(inputs)).tolist())
    return np.frombuffer(b"".join([sha1(data).digest() for data in rows]), dtype=np.uint8).reshape(len(inputs), 20)


Numbers = tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]
"""Source and destination IPv4 addresses as integers."""


def _swap(lower: npt.NDArray[np.bool_], equal: npt.NDArray[np.bool_], ports: Ports | None) -> npt.NDArray[np.bool_]:
    """Whether each flow's ends change places so the lower comes first: the destination address
    is `lower`, or the addresses are `equal` and its port is lower; one-way flows keep theirs."""
    if ports is None:
        return lower
    source_ports, destination_ports, one_way = ports
    return (lower | (equal & (destination_ports < source_ports))) & ~one_way


def _ipv4_words(ends: Numbers, protocols: npt.NDArray[Any], ports: Ports | None, seed: int) -> npt.NDArray[np.uint32]:
    """The hashed input of IPv4 flows as big-endian 32-bit words packed by shifts, one row each
    (12 bytes without ports, 16 with)."""
    source, destination = ends
    swap = _swap(destination < source, destination == source, ports)
    low, high = np.where(swap, destination, source), np.where(swap, source, destination)
    words = np.empty((len(source), 3 if ports is None else 4), dtype=">u4")
    words[:, 0] = (seed << 16) | (low >> 16)
    words[:, 1] = (low << 16) | (high >> 16)
    words[:, 2] = (high << 16) | ((protocols.astype(np.uint32) & 0xFF) << 8)
    if ports is not None:
        source_ports, destination_ports, _ = ports
        low_port = np.where(swap, destination_ports, source_ports).astype(np.uint32) & 0xFFFF
        high_port = np.where(swap, source_ports, destination_ports).astype(np.uint32) & 0xFFFF
        words[:, 3] = (low_port << 16) | high_port
    return words


Ends = tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
"""Source and destination addresses, packed, one row each."""


def _byte_inputs(ends: Ends, protocols: npt.NDArray[Any], ports: Ports | None, seed: bytes) -> npt.NDArray[np.uint8]:
    """The hashed input of flows of any address length (packed `ends`), one row of bytes each."""
    source, destination = ends
    count, length = source.shape
    differs = source != destination
    first = differs.argmax(axis=1)
    rows = np.arange(count)
    equal = ~differs.any(axis=1)
    swap = _swap(~equal & (destination[rows, first] < source[rows, first]), equal, ports)
    fields = [("seed", "S2"), ("low", f"S{length}"), ("high", f"S{length}"), ("protocol", "u1"), ("pad", "u1")]
    if ports is not None:
        source_ports, destination_ports, _ = ports
        fields += [("low_port", ">u2"), ("high_port", ">u2")]
    record = np.dtype(fields)
    hashed = np.zeros(count, dtype=record)
    hashed["seed"] = seed
    raw = hashed.view(np.uint8).reshape(count, record.itemsize)
    raw[:, 2 : 2 + length] = np.where(swap[:, None], destination, source)
    raw[:, 2 + length : 2 + 2 * length] = np.where(swap[:, None], source, destination)
    hashed["protocol"] = protocols & 0xFF
    if ports is not None:
        hashed["low_port"] = np.where(swap, destination_ports, source_ports) & 0xFFFF
        hashed["high_port"] = np.where(swap, source_ports, destination_ports) & 0xFFFF
    return raw


def seed_bytes(seed: int) -> bytes:
    if not 0 <= seed <= 0xFFFF:
        raise ValueError(f"community ID seed must fit in 16 bits, got {seed}")
    return seed.to_bytes(2, "big")


def icmp_type_code(get: Callable[[str], object], ipv6: bool) -> tuple[int, int]:
    """ICMP type and code of a flow document, whose fields `get` reads (`document.get`).

    From the dedicated elements when the exporter sent them (IANA 176/177, 178/179, or the
    combined 32/139) or the sampled header held them (sFlow), else from the destination port,
    where NetFlow v5 and most v9 exporters put type * 256 + code.
    """
    if ipv6:
        kind, code, combined = "netflow.icmp_type_ipv6", "netflow.icmp_code_ipv6", "netflow.icmp_type_code_ipv6"
    else:
        kind, code, combined = "netflow.icmp_type_ipv4", "netflow.icmp_code_ipv4", "netflow.icmp_type_code_ipv4"
    for kind_key, code_key in ((kind, code), ("sflow.icmp_type", "sflow.icmp_code")):
        type_value = get(kind_key)
        if isinstance(type_value, int):
            code_value = get(code_key)
            return type_value, code_value if isinstance(code_value, int) else 0
    value = get(combined)
    if not isinstance(value, int):
        value = get("destination.port")
    if isinstance(value, int):
        return (value >> 8) & 0xFF, value & 0xFF
    return 0, 0
