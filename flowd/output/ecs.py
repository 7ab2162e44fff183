"""ECS value helpers shared by the NetFlow/IPFIX and sFlow document builders: transport names,
MAC format, and the stable `flow.id` hash (computed per record here, per column in
`flow_ids`, with the same result)."""

from __future__ import annotations

import hashlib
import socket
from typing import Any

from flowd.decode.memo import MEMO_CLEARS

TRANSPORTS = {
    1: "icmp",
    2: "igmp",
    6: "tcp",
    17: "udp",
    47: "gre",
    50: "esp",
    51: "ah",
    58: "ipv6-icmp",
    89: "ospf",
    132: "sctp",
}


def ecs_mac(mac: str) -> str:
    """ECS writes MAC addresses upper-case with hyphens."""
    return mac.replace(":", "-").upper()


FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = 0xFFFFFFFFFFFFFFFF
MAX_EXPORTER_WORDS = 65_536
_exporter_words: dict[str, int] = {}


def exporter_word(exporter: str) -> int:
    word = _exporter_words.get(exporter)
    if word is None:
        if len(_exporter_words) > MAX_EXPORTER_WORDS:
            _exporter_words.clear()
            MEMO_CLEARS["exporter_hashes"] += 1
        word = _exporter_words[exporter] = int.from_bytes(hashlib.blake2b(exporter.encode(), digest_size=8).digest())
    return word


def address_words(address: str | None) -> tuple[int, ...]:
    """An address as 64-bit words: one for IPv4, two for IPv6, a zero word when absent.

    A value that is no address (a template that gave an address element an odd length decodes
    it as hex) hashes as text, so the id stays stable without pretending it is an address.
    """
    if address is None:
        return (0,)
    try:
        if ":" in address:
            raw = socket.inet_pton(socket.AF_INET6, address)
            return int.from_bytes(raw[:8]), int.from_bytes(raw[8:])
        return (int.from_bytes(socket.inet_aton(address)),)
    except (OSError, TypeError):
        return (exporter_word(str(address)),)


def mix_words(words: tuple[int, ...]) -> int:
    """FNV-1a over 64-bit words with a final avalanche; `flow_ids` computes the same in numpy."""
    value = FNV_OFFSET
    for word in words:
        value = ((value ^ word) * FNV_PRIME) & MASK64
    value ^= value >> 29
    value = (value * FNV_PRIME) & MASK64
    return value ^ (value >> 32)


def _word(value: Any) -> int:
    return value & MASK64 if isinstance(value, int) else 0


def flow_id(
    exporter: str, source_ip: Any, source_port: Any, destination_ip: Any, destination_port: Any, protocol: Any
) -> str:
    """Stable id of a flow's 5-tuple as seen by one exporter (as Filebeat's `flow.id`)."""
    words = (
        exporter_word(exporter),
        *address_words(source_ip),
        _word(source_port),
        *address_words(destination_ip),
        _word(destination_port),
        _word(protocol),
    )
    return f"{mix_words(words):016x}"
