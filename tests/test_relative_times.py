"""Flow times relative to the exporter's clock: sysUpTime across the 32-bit counter's wrap (every
49.7 days of uptime), and exporters that send no export time.

The expected times are worked out here from the standard's definition (a relative time is the
exporter's uptime, in ms mod 2^32, when the flow's first or last packet was seen), not taken from
the decoder: a flow that began before the wrap and was exported after it began some seconds ago,
not 49.7 days in the future; an IPFIX exporter up for 60 days, whose uptime comes from
systemInitTimeMilliseconds, stamps flows with times that have wrapped once already.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from flowd.decode import TemplateCache, decode_datagram
from flowd.output.batch_documents import documents_for
from flowd.output.documents import flow_document
from flowd.output.table import DocumentTable
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.metrics import WorkerStats
from tests.test_batch_documents import assert_ndjson_equals_dicts
from tests.test_ipfix_features import _iso_ms, ipfix_message, ipfix_set, options_template, template

WRAP = 1 << 32
EXPORT_TIME = 1_700_000_000
EXPORT_MS = EXPORT_TIME * 1000
EXPORTER = ("192.0.2.44", 2055)

_V5_HEADER = struct.Struct("!HHIIIIBBH")
_V5_RECORD = struct.Struct("!4s4s4sHHIIIIHHBBBBHHBBH")


def v5_datagram(uptime_ms: int, times: list[tuple[int, int]]) -> bytes:
    records = b"".join(
        _V5_RECORD.pack(
            socket.inet_aton("198.51.100.1"), socket.inet_aton("10.0.0.1"), bytes(4), 1, 2, 3, 400,
            first, last, 1234, 443, 0, 0x18, 6, 0, 0, 0, 24, 24, 0,
        )
        for first, last in times
    )  # fmt: skip
    return _V5_HEADER.pack(5, len(times), uptime_ms, EXPORT_TIME, 0, 1, 0, 0, 0) + records


def times_of(document: dict[str, Any]) -> tuple[int, int, int | None]:
    """(start, end) as ms before (negative) or after the export, and the duration in ms."""
    duration = document.get("event.duration")
    return (
        _iso_ms(str(document["event.start"])) - EXPORT_MS,
        _iso_ms(str(document["event.end"])) - EXPORT_MS,
        None if duration is None else int(duration) // 1_000_000,
    )


def every_path(datagram: bytes, cache: TemplateCache) -> list[dict[str, Any]]:
    """The per-record documents, after checking that the columnar paths (a decoded batch's
    table and a worker's joined-batch decoder) give the same ones."""
    result = decode_datagram(datagram, EXPORTER, cache, float(EXPORT_TIME))
    documents = [flow_document(record) for record in result.flows]
    assert documents_for(result.flows) == documents
    assert_ndjson_equals_dicts(result.flows)
    return documents


def test_v5_flows_across_the_uptime_wrap() -> None:
    uptime = 5_000  # the counter wrapped 5 s before this export
    flows = [
        (WRAP - 3_000, 4_000),  # began 3 s before the wrap, ended after it
        (WRAP - 200_000, WRAP - 150_000),  # began and ended before the wrap
        (1_000, 5_400),  # ends 0.4 s after the export's uptime: the exporter's clock, kept as sent
        (WRAP - 1, 2_577),  # the corpus's netflow5.dat: first switched 0xFFFFFFFF
    ]
    datagram = v5_datagram(uptime, flows)
    expected = [(-8_000, -1_000, 7_000), (-205_000, -155_000, 50_000), (-4_000, 400, 4_400), (-5_001, -2_423, 2_578)]
    assert [times_of(d) for d in every_path(datagram, TemplateCache())] == expected

    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    parts = decoder.decode_parts([(datagram, EXPORTER, float(EXPORT_TIME))] * 2)
    tables = [part for part in parts if isinstance(part, DocumentTable)]
    assert [times_of(d) for table in tables for d in table.to_dicts()] == expected * 2


def test_v9_flow_started_before_the_wrap() -> None:
    tpl = struct.pack("!HH", 1024, 3) + struct.pack("!HHHHHH", 8, 4, 22, 4, 21, 4)
    data = socket.inet_aton("10.0.0.1") + struct.pack("!II", WRAP - 2_000, 1_500)
    flowsets = ipfix_set(0, tpl) + ipfix_set(1024, data, pad_to=4)
    datagram = struct.pack("!HHIIII", 9, 2, 3_000, EXPORT_TIME, 1, 0) + flowsets
    (document,) = every_path(datagram, TemplateCache())
    assert times_of(document) == (-5_000, -1_500, 3_500)


def test_ipfix_exporter_up_for_sixty_days() -> None:
    """Uptime from systemInitTimeMilliseconds is 5.18e9 ms, past the 32-bit counter's range;
    flowStart/EndSysUpTime (22/21) are unsigned32 and have wrapped once."""
    uptime = 60 * 86_400_000
    init_ms = EXPORT_MS - uptime
    options = ipfix_message(
        ipfix_set(3, options_template(400, 1, (149, 4), (160, 8))), ipfix_set(400, struct.pack("!IQ", 1, init_ms))
    )
    record = socket.inet_aton("10.0.0.9") + struct.pack("!II", (uptime - 10_000) % WRAP, (uptime - 2_000) % WRAP)
    flows = ipfix_message(ipfix_set(2, template(260, (8, 4), (22, 4), (21, 4))), ipfix_set(260, record))
    cache = TemplateCache()
    decode_datagram(options, EXPORTER, cache, float(EXPORT_TIME))
    (document,) = every_path(flows, cache)
    assert times_of(document) == (-10_000, -2_000, 8_000)


def test_an_exporter_without_a_clock_is_timed_by_arrival() -> None:
    """Export time 0 (no clock set): relative times count back from when the datagram arrived
    instead of dating the flow in 1970; the header's own value is still shown as sent."""
    tpl = struct.pack("!HH", 1024, 3) + struct.pack("!HHHHHH", 8, 4, 22, 4, 21, 4)
    data = socket.inet_aton("10.0.0.1") + struct.pack("!II", 1_000, 2_500)
    flowsets = ipfix_set(0, tpl) + ipfix_set(1024, data, pad_to=4)
    datagram = struct.pack("!HHIIII", 9, 2, 3_000, 0, 1, 0) + flowsets
    (document,) = every_path(datagram, TemplateCache())  # received at EXPORT_TIME
    assert times_of(document) == (-2_000, -500, 1_500)
    assert document["@timestamp"] == document["event.end"]
    assert document["netflow.exporter.timestamp"] == "1970-01-01T00:00:00.000Z"

    v5 = bytearray(v5_datagram(10_000, [(4_000, 9_000)] * 9))
    v5[8:12] = bytes(4)  # unix_secs
    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    (table,) = [
        p for p in decoder.decode_parts([(bytes(v5), EXPORTER, float(EXPORT_TIME))] * 8) if isinstance(p, DocumentTable)
    ]
    assert [times_of(d) for d in table.to_dicts()] == [(-6_000, -1_000, 5_000)] * 72
