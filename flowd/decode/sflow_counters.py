"""sFlow v5 counter records (sflow.org sFlow v5 "counter_data", and the host/LAG structures).

Each decoder reads one record body `data[pos:end]`, already bounded by the record's declared
length, and writes flat snake_case keys into the sample's `fields`. A body shorter than its
structure raises `TruncatedError`; the caller turns that into a soft error for this record.
Records with no decoder here are skipped by length and counted by the caller.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from flowd.errors import TruncatedError

Fields = dict[str, Any]
RecordDecoder = Callable[[bytes | memoryview, int, int, Fields], None]
"""Decodes one record body `data[pos:end]` into the sample's fields."""

# sFlow v5 counter_data formats (enterprise 0).
GENERIC_INTERFACE = 1
ETHERNET_INTERFACE = 2
VLAN = 5
LAG_PORT = 7
PROCESSOR = 1001
HOST_DESCRIPTION = 2000
HOST_CPU = 2003
HOST_MEMORY = 2004
HOST_DISK_IO = 2005
HOST_NET_IO = 2006

_GENERIC = struct.Struct("!IIQIIQIIIIIIQIIIIII")
_GENERIC_KEYS = (
    "if_index",
    "if_type",
    "if_speed",
    "if_direction",
    "if_status",
    "if_in_octets",
    "if_in_ucast_pkts",
    "if_in_multicast_pkts",
    "if_in_broadcast_pkts",
    "if_in_discards",
    "if_in_errors",
    "if_in_unknown_protos",
    "if_out_octets",
    "if_out_ucast_pkts",
    "if_out_multicast_pkts",
    "if_out_broadcast_pkts",
    "if_out_discards",
    "if_out_errors",
    "if_promiscuous_mode",
)
_ETHERNET = struct.Struct("!13I")
_ETHERNET_KEYS = (
    "dot3_stats_alignment_errors",
    "dot3_stats_fcs_errors",
    "dot3_stats_single_collision_frames",
    "dot3_stats_multiple_collision_frames",
    "dot3_stats_sqe_test_errors",
    "dot3_stats_deferred_transmissions",
    "dot3_stats_late_collisions",
    "dot3_stats_excessive_collisions",
    "dot3_stats_internal_mac_transmit_errors",
    "dot3_stats_carrier_sense_errors",
    "dot3_stats_frame_too_longs",
    "dot3_stats_internal_mac_receive_errors",
    "dot3_stats_symbol_errors",
)
_VLAN = struct.Struct("!IQIIII")
_VLAN_KEYS = (
    "vlan_id",
    "vlan_octets",
    "vlan_ucast_pkts",
    "vlan_multicast_pkts",
    "vlan_broadcast_pkts",
    "vlan_discards",
)
_LAG = struct.Struct("!6s2x6s2xI4B8I")
_LAG_KEYS = (
    "lag_actor_system_id",
    "lag_partner_oper_system_id",
    "lag_attached_agg_id",
    "lag_actor_admin_state",
    "lag_actor_oper_state",
    "lag_partner_admin_state",
    "lag_partner_oper_state",
    "lag_lacpdus_rx",
    "lag_marker_pdus_rx",
    "lag_marker_response_pdus_rx",
    "lag_unknown_rx",
    "lag_illegal_rx",
    "lag_lacpdus_tx",
    "lag_marker_pdus_tx",
    "lag_marker_response_pdus_tx",
)
_PROCESSOR = struct.Struct("!iiiQQ")
# sFlow v5 "percentage": a signed int, -1 when unknown (the spec says hundredths of a percent;
# some agents send whole percent), so the values are passed through unscaled.
_PROCESSOR_KEYS = ("cpu_5s", "cpu_1m", "cpu_5m", "total_memory", "free_memory")
_HOST_CPU = struct.Struct("!fffIIIIIIIIIIIII")
_HOST_CPU_KEYS = (
    "host_load_one",
    "host_load_five",
    "host_load_fifteen",
    "host_proc_run",
    "host_proc_total",
    "host_cpu_num",
    "host_cpu_speed",
    "host_uptime",
    "host_cpu_user",
    "host_cpu_nice",
    "host_cpu_system",
    "host_cpu_idle",
    "host_cpu_wio",
    "host_cpu_intr",
    "host_cpu_sintr",
    "host_interrupts",
)
_HOST_MEMORY = struct.Struct("!7Q4I")
_HOST_MEMORY_KEYS = (
    "host_mem_total",
    "host_mem_free",
    "host_mem_shared",
    "host_mem_buffers",
    "host_mem_cached",
    "host_swap_total",
    "host_swap_free",
    "host_page_in",
    "host_page_out",
    "host_swap_in",
    "host_swap_out",
)
_HOST_DISK = struct.Struct("!QQiIQIIQI")  # part_max_used is a signed percentage, -1 unknown
_HOST_DISK_KEYS = (
    "host_disk_total",
    "host_disk_free",
    "host_part_max_used",
    "host_disk_reads",
    "host_disk_bytes_read",
    "host_disk_read_time",
    "host_disk_writes",
    "host_disk_bytes_written",
    "host_disk_write_time",
)
_HOST_NET = struct.Struct("!QIIIQIII")
_HOST_NET_KEYS = (
    "host_net_bytes_in",
    "host_net_pkts_in",
    "host_net_errs_in",
    "host_net_drops_in",
    "host_net_bytes_out",
    "host_net_pkts_out",
    "host_net_errs_out",
    "host_net_drops_out",
)
_U32 = struct.Struct("!I")
_MAX_HOSTNAME = 64
_MAX_OS_RELEASE = 32

UNAVAILABLE_32 = 0xFFFFFFFF
UNAVAILABLE_64 = 0xFFFFFFFFFFFFFFFF
"""sFlow v5 counter_data: a counter the agent does not have is sent as all ones for its width.
Such values are left out of the fields (as a count they would wreck every sum)."""
IDENTIFIERS = frozenset(
    ("if_index", "if_type", "if_speed", "if_direction", "if_status", "if_promiscuous_mode", "vlan_id")
    + ("lag_attached_agg_id",)
)
"""Unsigned fields of counter records that are not counts or gauges: an all-ones value there is
passed through (an ifSpeed of 2^64-1 or an ifIndex is a value, not "not available")."""


def _unavailable(layout: struct.Struct, keys: tuple[str, ...]) -> tuple[int | None, ...]:
    """Per field of `layout`, the value meaning "not available" (None: the field has none)."""
    codes: list[str] = []  # one struct code per value unpacked
    for count, code in re.findall(r"(\d*)([A-Za-z?])", layout.format):
        if code != "x":
            codes += [code] if code == "s" else [code] * int(count or 1)
    widths = {"I": UNAVAILABLE_32, "Q": UNAVAILABLE_64}
    return tuple(None if key in IDENTIFIERS else widths.get(code) for key, code in zip(keys, codes, strict=True))


def update_counters(
    fields: Fields, keys: tuple[str, ...], values: tuple[Any, ...], unavailable: tuple[int | None, ...]
) -> None:
    """`fields.update(zip(keys, values))`, leaving out the counters that are not available."""
    if UNAVAILABLE_32 in values or UNAVAILABLE_64 in values:
        fields.update((k, v) for k, v, none in zip(keys, values, unavailable, strict=True) if v != none)
    else:
        fields.update(zip(keys, values, strict=True))


def _fixed(layout: struct.Struct, keys: tuple[str, ...], name: str) -> RecordDecoder:
    """A decoder for a fixed-layout record: one unpack, one dict update."""
    size = layout.size
    unpack_from = layout.unpack_from
    unavailable = _unavailable(layout, keys)

    def decode(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
        if end - pos < size:
            raise TruncatedError(f"{name} counters need {size} bytes, record has {end - pos}", offset=pos)
        update_counters(fields, keys, unpack_from(data, pos), unavailable)

    return decode


_GENERIC_UNAVAILABLE = _unavailable(_GENERIC, _GENERIC_KEYS)
_LAG_UNAVAILABLE = _unavailable(_LAG, _LAG_KEYS)
_HOST_CPU_UNAVAILABLE = _unavailable(_HOST_CPU, _HOST_CPU_KEYS)


def decode_generic_interface(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """Generic interface counters (format 1, RFC 2233 ifTable/ifXTable values)."""
    if end - pos < _GENERIC.size:
        raise TruncatedError(f"generic interface counters need 88 bytes, record has {end - pos}", offset=pos)
    values = _GENERIC.unpack_from(data, pos)
    update_counters(fields, _GENERIC_KEYS, values, _GENERIC_UNAVAILABLE)
    status = values[4]
    # sFlow v5: ifStatus bit 0 = ifAdminStatus up, bit 1 = ifOperStatus up.
    fields["if_admin_status"] = "up" if status & 1 else "down"
    fields["if_oper_status"] = "up" if status & 2 else "down"


def decode_lag_port(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """IEEE 802.3ad LAG port counters (format 7, sFlow LAG counters structure)."""
    if end - pos < _LAG.size:
        raise TruncatedError(f"LAG counters need {_LAG.size} bytes, record has {end - pos}", offset=pos)
    values = list(_LAG.unpack_from(data, pos))
    values[0] = bytes(values[0]).hex(":")
    values[1] = bytes(values[1]).hex(":")
    update_counters(fields, _LAG_KEYS, tuple(values), _LAG_UNAVAILABLE)


def decode_host_cpu(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """host_cpu (2003); newer agents append cpu_steal, cpu_guest, cpu_guest_nice."""
    if end - pos < _HOST_CPU.size:
        raise TruncatedError(f"host CPU counters need {_HOST_CPU.size} bytes, record has {end - pos}", offset=pos)
    values = _HOST_CPU.unpack_from(data, pos)
    update_counters(fields, _HOST_CPU_KEYS, values, _HOST_CPU_UNAVAILABLE)
    for key in ("host_load_one", "host_load_five", "host_load_fifteen"):
        fields[key] = round(fields[key], 4)
    pos += _HOST_CPU.size
    for key in ("host_contexts", "host_cpu_steal", "host_cpu_guest", "host_cpu_guest_nice"):
        if end - pos < 4:
            break
        value: int = _U32.unpack_from(data, pos)[0]
        if value != UNAVAILABLE_32:
            fields[key] = value
        pos += 4


def decode_host_description(data: bytes | memoryview, pos: int, end: int, fields: Fields) -> None:
    """host_descr (2000): hostname, UUID, machine type, OS name and release."""
    hostname, pos = read_string(data, pos, end, _MAX_HOSTNAME)
    if end - pos < 24:
        raise TruncatedError("host description is cut off after the hostname", offset=pos)
    uuid = bytes(data[pos : pos + 16]).hex()
    machine_type, os_name = struct.unpack_from("!II", data, pos + 16)
    release, pos = read_string(data, pos + 24, end, _MAX_OS_RELEASE)
    fields["host_name"] = hostname
    fields["host_uuid"] = f"{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:]}"
    fields["host_machine_type"] = machine_type
    fields["host_os_name"] = os_name
    fields["host_os_release"] = release


def read_string(data: bytes | memoryview, pos: int, end: int, limit: int) -> tuple[str, int]:
    """An XDR string<limit>: length word, bytes, padding to 4. Returns (text, next offset)."""
    if end - pos < 4:
        raise TruncatedError("string length is cut off", offset=pos)
    length: int = _U32.unpack_from(data, pos)[0]
    pos += 4
    padded = (length + 3) & ~3
    if length > limit or end - pos < padded:
        raise TruncatedError(f"string of {length} bytes does not fit (limit {limit})", offset=pos)
    return bytes(data[pos : pos + length]).decode("utf-8", "replace"), pos + padded


def read_unbounded_string(data: bytes | memoryview, pos: int, end: int, keep: int) -> tuple[str, int]:
    """An XDR string<> the spec leaves unbounded: its first `keep` bytes as text, and the offset
    after the whole string and its padding (the rest is skipped by its length, not an error)."""
    if end - pos < 4:
        raise TruncatedError("string length is cut off", offset=pos)
    length: int = _U32.unpack_from(data, pos)[0]
    pos += 4
    padded = (length + 3) & ~3
    if end - pos < padded:
        raise TruncatedError(f"string of {length} bytes overruns its record", offset=pos)
    return bytes(data[pos : pos + min(length, keep)]).decode("utf-8", "replace"), pos + padded


COUNTER_DECODERS: dict[int, RecordDecoder] = {
    GENERIC_INTERFACE: decode_generic_interface,
    ETHERNET_INTERFACE: _fixed(_ETHERNET, _ETHERNET_KEYS, "Ethernet"),
    VLAN: _fixed(_VLAN, _VLAN_KEYS, "VLAN"),
    LAG_PORT: decode_lag_port,
    PROCESSOR: _fixed(_PROCESSOR, _PROCESSOR_KEYS, "processor"),
    HOST_DESCRIPTION: decode_host_description,
    HOST_CPU: decode_host_cpu,
    HOST_MEMORY: _fixed(_HOST_MEMORY, _HOST_MEMORY_KEYS, "host memory"),
    HOST_DISK_IO: _fixed(_HOST_DISK, _HOST_DISK_KEYS, "host disk I/O"),
    HOST_NET_IO: _fixed(_HOST_NET, _HOST_NET_KEYS, "host network I/O"),
}
"""Counter record decoders keyed by the record's data format (enterprise 0 only)."""
