"""Realistic export datagrams built from the RFC layouts, for benchmarks and the pps harness.

Each builder returns (template datagrams, data datagrams): feed the templates first.
Addresses cycle through a configurable number of distinct hosts so caches see a realistic mix.
"""

from __future__ import annotations

import socket
import struct

from flowd.bench import IPV4_RECORD_FIELDS

EXPORT_TIME = 1_700_000_000
UPTIME_MS = 86_400_000

IPV4_FIELDS = IPV4_RECORD_FIELDS
RECORD = struct.Struct("!4s4s4sHHBBBIIQQIIBB")


def _address(index: int, hosts: int, base: int) -> bytes:
    return struct.pack("!I", base + index % hosts)


def ipv4_record(index: int, hosts: int = 1000) -> bytes:
    return RECORD.pack(
        _address(index, hosts, 0x0A000000),
        _address(index * 7 + 3, hosts, 0xC6336400),
        socket.inet_aton("192.0.2.254"),
        1024 + index % 50000,
        (80, 443, 53, 22)[index % 4],
        (6, 17)[index % 2],
        0x1B,
        0,
        1 + index % 8,
        9,
        1500 * (1 + index % 5),
        1 + index % 5,
        64500 + index % 10,
        64510 + index % 10,
        24,
        24,
    )


def netflow_v5(records: int = 30, datagrams: int = 16, hosts: int = 1000) -> tuple[list[bytes], list[bytes]]:
    out = []
    for number in range(datagrams):
        header = struct.pack("!HHIIIIBBH", 5, records, UPTIME_MS, EXPORT_TIME, 0, number * records, 0, 0, 0)
        body = b"".join(
            struct.pack(
                "!4s4s4sHHIIIIHHxBBBHHBBxx",
                _address(number * records + i, hosts, 0x0A000000),
                _address(i * 7 + 3, hosts, 0xC6336400),
                b"\x00" * 4,
                1,
                2,
                1 + i % 5,
                1500 * (1 + i % 5),
                UPTIME_MS - 5000,
                UPTIME_MS - 1000,
                1024 + i,
                (80, 443, 53, 22)[i % 4],
                0x1B,
                (6, 17)[i % 2],
                0,
                64500,
                64510,
                24,
                24,
            )
            for i in range(records)
        )
        out.append(header + body)
    return [], out


def _v9_template(template_id: int) -> bytes:
    fields = b"".join(struct.pack("!HH", element, length) for element, length in IPV4_FIELDS)
    body = struct.pack("!HH", template_id, len(IPV4_FIELDS)) + fields
    return struct.pack("!HH", 0, 4 + len(body)) + body


def netflow_v9(
    records: int = 28, datagrams: int = 16, hosts: int = 1000, source_id: int = 1
) -> tuple[list[bytes], list[bytes]]:
    """Data datagrams of ~1,400 bytes, 28 records each (design.md section 5)."""
    header = struct.Struct("!HHIIII")
    templates = [header.pack(9, 1, UPTIME_MS, EXPORT_TIME, 0, source_id) + _v9_template(256)]
    out = []
    for number in range(datagrams):
        body = b"".join(ipv4_record(number * records + i, hosts) for i in range(records))
        flowset = struct.pack("!HH", 256, 4 + len(body)) + body
        out.append(header.pack(9, records, UPTIME_MS, EXPORT_TIME, number + 1, source_id) + flowset)
    return templates, out


def ipfix(
    records: int = 28, datagrams: int = 16, hosts: int = 1000, domain: int = 1
) -> tuple[list[bytes], list[bytes]]:
    fields = b"".join(struct.pack("!HH", element, length) for element, length in IPV4_FIELDS)
    template_set = struct.pack("!HHHH", 2, 8 + len(fields), 256, len(IPV4_FIELDS)) + fields
    header = struct.Struct("!HHIII")
    templates = [header.pack(10, 16 + len(template_set), EXPORT_TIME, 0, domain) + template_set]
    out = []
    for number in range(datagrams):
        body = b"".join(ipv4_record(number * records + i, hosts) for i in range(records))
        data_set = struct.pack("!HH", 256, 4 + len(body)) + body
        # IPFIX numbers data records sent before the message (RFC 7011 section 3.1).
        out.append(header.pack(10, 16 + len(data_set), EXPORT_TIME, number * records, domain) + data_set)
    return templates, out
