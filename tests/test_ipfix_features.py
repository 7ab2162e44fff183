"""IPFIX and NetFlow v9 features checked on messages built here from the RFC layouts.

The bytes are assembled field by field with `struct` from values the test chooses, so the
expected values are known independently of the decoder; one message is also cross-checked
against tshark's decode.
"""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import pytest

from flowd.capture import Datagram
from flowd.decode import TemplateCache, decode_datagram
from flowd.errors import DecodeError
from flowd.output.documents import flow_document
from tests.tshark_oracle import needs_tshark, tshark_layers, write_pcap

EXPORTER = ("198.51.100.7", 4739)
EXPORT_TIME = 1_700_000_000
NTP_OFFSET = 2_208_988_800


def ipfix_message(*sets: bytes, domain: int = 1, sequence: int = 0) -> bytes:
    body = b"".join(sets)
    return struct.pack("!HHIII", 10, 16 + len(body), EXPORT_TIME, sequence, domain) + body


def ipfix_set(set_id: int, body: bytes, pad_to: int = 0) -> bytes:
    padding = b"\x00" * ((-len(body) - 4) % pad_to) if pad_to else b""
    return struct.pack("!HH", set_id, 4 + len(body) + len(padding)) + body + padding


def template(template_id: int, *fields: tuple[int, int] | tuple[int, int, int]) -> bytes:
    out = struct.pack("!HH", template_id, len(fields))
    for spec in fields:
        if len(spec) == 3:
            element, length, pen = spec
            out += struct.pack("!HHI", element | 0x8000, length, pen)
        else:
            out += struct.pack("!HH", *spec)
    return out


def options_template(template_id: int, scope_count: int, *fields: tuple[int, int]) -> bytes:
    out = struct.pack("!HHH", template_id, len(fields), scope_count)
    for element, length in fields:
        out += struct.pack("!HH", element, length)
    return out


def varlen(value: bytes) -> bytes:
    """RFC 7011 section 7: lengths under 255 in one byte, else 255 and two bytes."""
    if len(value) < 255:
        return bytes([len(value)]) + value
    return b"\xff" + struct.pack("!H", len(value)) + value


def decode_all(*messages: bytes) -> tuple[list[dict[str, object]], list[dict[str, object]], TemplateCache]:
    cache = TemplateCache()
    flows: list[dict[str, object]] = []
    options: list[dict[str, object]] = []
    for number, message in enumerate(messages):
        result = decode_datagram(message, EXPORTER, cache, 1000.0 + number)
        flows += [flow_document(r) for r in result.flows]
        options += [flow_document(r) for r in result.options]
    return flows, options, cache


V4_TEMPLATE = template(256, (8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 8), (2, 8))


def v4_record(src: str, dst: str, sport: int, dport: int, proto: int, octets: int, packets: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HHBQQ", sport, dport, proto, octets, packets)


def test_several_sets_per_message_with_padding() -> None:
    records = v4_record("10.0.0.1", "10.0.0.2", 1234, 80, 6, 1500, 3) + v4_record(
        "10.0.0.3", "8.8.8.8", 53, 53, 17, 80, 1
    )
    message = ipfix_message(ipfix_set(2, V4_TEMPLATE, pad_to=8), ipfix_set(256, records, pad_to=8))
    flows, _, _ = decode_all(message)
    assert [(f["source.ip"], f["destination.ip"], f["source.port"], f["destination.port"]) for f in flows] == [
        ("10.0.0.1", "10.0.0.2", 1234, 80),
        ("10.0.0.3", "8.8.8.8", 53, 53),
    ]
    assert [(f["network.transport"], f["network.bytes"], f["network.packets"]) for f in flows] == [
        ("tcp", 1500, 3),
        ("udp", 80, 1),
    ]


def test_variable_length_fields_in_both_length_forms() -> None:
    short_name, long_name = b"ge-0/0/1", b"x" * 300
    tpl = template(300, (10, 4), (82, 0xFFFF), (83, 0xFFFF))
    records = struct.pack("!I", 7) + varlen(short_name) + varlen(long_name)
    records += struct.pack("!I", 8) + varlen(b"") + varlen(b"uplink")
    flows, _, _ = decode_all(ipfix_message(ipfix_set(2, tpl), ipfix_set(300, records)))
    assert [f.get("netflow.interface_name") for f in flows] == ["ge-0/0/1", None]  # empty: no value
    assert flows[0]["netflow.interface_description"] == "x" * 300
    assert flows[1]["netflow.interface_description"] == "uplink"
    assert [f["observer.ingress.interface.id"] for f in flows] == [7, 8]


def test_enterprise_reverse_and_reduced_size_elements() -> None:
    tpl = template(
        257,
        (8, 4),
        (12, 4),
        (1, 4),  # octetDeltaCount in 4 bytes (reduced-size encoding, RFC 7011 section 6.2)
        (2, 3),  # packetDeltaCount in 3 bytes
        (1, 8, 29305),  # reverseOctetDeltaCount (RFC 5103)
        (2, 8, 29305),  # reversePacketDeltaCount
        (4242, 2, 99999),  # unknown enterprise element
    )
    record = socket.inet_aton("192.0.2.1") + socket.inet_aton("192.0.2.2")
    record += struct.pack("!I", 4000) + (5).to_bytes(3, "big") + struct.pack("!QQ", 9000, 7) + b"\xbe\xef"
    flows, _, _ = decode_all(ipfix_message(ipfix_set(2, tpl), ipfix_set(257, record)))
    (flow,) = flows
    assert flow["source.bytes"] == 4000 and flow["source.packets"] == 5
    assert flow["destination.bytes"] == 9000 and flow["destination.packets"] == 7
    assert flow["network.bytes"] == 13000 and flow["network.packets"] == 12
    assert flow["netflow.reverse_octet_delta_count"] == 9000
    assert flow["netflow.pen_99999_ie_4242"] == "beef"


def test_zero_length_field_is_skipped() -> None:
    tpl = template(258, (8, 4), (82, 0), (12, 4))
    record = socket.inet_aton("10.1.1.1") + socket.inet_aton("10.2.2.2")
    flows, _, _ = decode_all(ipfix_message(ipfix_set(2, tpl), ipfix_set(258, record)))
    assert (flows[0]["source.ip"], flows[0]["destination.ip"]) == ("10.1.1.1", "10.2.2.2")
    assert "netflow.interface_name" not in flows[0]


def test_absolute_timestamps_in_every_unit() -> None:
    start_ms = 1_699_999_990_250
    end_ms = 1_699_999_995_500

    def ntp(ms: int) -> int:
        seconds, millis = divmod(ms, 1000)
        return ((seconds + NTP_OFFSET) << 32) | (millis * (1 << 32) // 1000 + 1)

    cases = [
        (
            (150, 4),
            (151, 4),
            struct.pack("!II", start_ms // 1000, end_ms // 1000),
            (start_ms // 1000 * 1000, end_ms // 1000 * 1000),
        ),
        ((152, 8), (153, 8), struct.pack("!QQ", start_ms, end_ms), (start_ms, end_ms)),
        ((154, 8), (155, 8), struct.pack("!QQ", ntp(start_ms), ntp(end_ms)), (start_ms, end_ms)),
        ((156, 8), (157, 8), struct.pack("!QQ", ntp(start_ms), ntp(end_ms)), (start_ms, end_ms)),
    ]
    for start_field, end_field, values, (want_start, want_end) in cases:
        tpl = template(259, (8, 4), start_field, end_field)
        flows, _, _ = decode_all(
            ipfix_message(ipfix_set(2, tpl), ipfix_set(259, socket.inet_aton("10.0.0.1") + values))
        )
        doc = flows[0]
        assert doc["event.duration"] == (want_end - want_start) * 1_000_000, start_field
        assert doc["@timestamp"] == doc["event.end"]
        assert _iso_ms(str(doc["event.start"])) == want_start, start_field


def _iso_ms(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def test_sysuptime_relative_times_use_system_init_time_from_options() -> None:
    init_ms = EXPORT_TIME * 1000 - 3_600_000
    opt = options_template(400, 1, (149, 4), (160, 8))
    opt_data = struct.pack("!IQ", 1, init_ms)
    tpl = template(260, (8, 4), (22, 4), (21, 4))
    data = socket.inet_aton("10.0.0.9") + struct.pack("!II", 1_000_000, 1_002_000)
    flows, options, _ = decode_all(
        ipfix_message(ipfix_set(3, opt), ipfix_set(400, opt_data)),
        ipfix_message(ipfix_set(2, tpl), ipfix_set(260, data)),
    )
    assert len(options) == 1
    assert _iso_ms(str(flows[0]["event.start"])) == init_ms + 1_000_000
    assert _iso_ms(str(flows[0]["event.end"])) == init_ms + 1_002_000


def test_template_withdrawal_and_redefinition() -> None:
    first = ipfix_message(ipfix_set(2, V4_TEMPLATE), ipfix_set(256, v4_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 10, 1)))
    withdraw = ipfix_message(ipfix_set(2, struct.pack("!HH", 256, 0)))
    after = ipfix_message(ipfix_set(256, v4_record("10.0.0.5", "10.0.0.6", 1, 2, 6, 10, 1)))
    flows, _, cache = decode_all(first, withdraw, after)
    assert [f["source.ip"] for f in flows] == ["10.0.0.1"]
    assert cache.parked_sets == 1  # held back until a new definition arrives

    redefined = template(256, (12, 4), (8, 4))
    message = ipfix_message(
        ipfix_set(2, redefined), ipfix_set(256, socket.inet_aton("1.1.1.1") + socket.inet_aton("2.2.2.2"))
    )
    flows2, _, _ = decode_all(first, message)
    assert (flows2[1]["source.ip"], flows2[1]["destination.ip"]) == ("2.2.2.2", "1.1.1.1")


def test_withdraw_all_templates_of_a_domain() -> None:
    first = ipfix_message(ipfix_set(2, V4_TEMPLATE + template(261, (8, 4))))
    withdraw_all = ipfix_message(ipfix_set(2, struct.pack("!HH", 2, 0)))
    _, _, cache = decode_all(first, withdraw_all)
    assert len(cache) == 0


def test_data_before_its_template_is_parked_then_released() -> None:
    data = ipfix_message(ipfix_set(256, v4_record("10.9.9.9", "10.8.8.8", 5, 6, 17, 100, 2)), sequence=1)
    tpl = ipfix_message(ipfix_set(2, V4_TEMPLATE), sequence=2)
    cache = TemplateCache()
    first = decode_datagram(data, EXPORTER, cache, 1.0)
    assert first.flows == [] and first.parked == 1
    second = decode_datagram(tpl, EXPORTER, cache, 2.0)
    assert [r.fields["source_ipv4_address"] for r in second.flows] == ["10.9.9.9"]
    assert second.flows[0].sequence == 1 and second.flows[0].received_at == 1.0


def test_templates_are_scoped_by_domain_and_exporter() -> None:
    cache = TemplateCache()
    decode_datagram(ipfix_message(ipfix_set(2, V4_TEMPLATE), domain=1), EXPORTER, cache, 1.0)
    other_domain = decode_datagram(
        ipfix_message(ipfix_set(256, v4_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 1, 1)), domain=2), EXPORTER, cache, 2.0
    )
    other_port = decode_datagram(
        ipfix_message(ipfix_set(256, v4_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 1, 1)), domain=1),
        (EXPORTER[0], 9999),
        cache,
        2.0,
    )
    assert other_domain.flows == [] and other_port.flows == []
    assert cache.parked_sets == 2


def test_sampling_from_options_sampler_table() -> None:
    # Cisco IOS XR style: options template scoped by selectorId with samplingPacketInterval/Space.
    opt = options_template(401, 1, (302, 8), (305, 4), (306, 4))
    opt_data = struct.pack("!QII", 3, 1, 999)
    tpl = template(262, (8, 4), (1, 8), (2, 8), (302, 8))
    data = socket.inet_aton("10.0.0.1") + struct.pack("!QQQ", 100, 2, 3)
    flows, options, _ = decode_all(
        ipfix_message(ipfix_set(3, opt), ipfix_set(401, opt_data)),
        ipfix_message(ipfix_set(2, tpl), ipfix_set(262, data)),
    )
    assert options[0]["event.action"] == "netflow_options"
    assert flows[0]["flowd.sampling_rate"] == 1000
    assert flows[0]["network.bytes"] == 100_000 and flows[0]["flowd.raw_bytes"] == 100


def test_ipv6_mac_and_mpls_labels() -> None:
    tpl = template(263, (27, 16), (28, 16), (56, 6), (80, 6), (70, 3), (71, 3))
    record = socket.inet_pton(socket.AF_INET6, "2001:db8::1") + socket.inet_pton(socket.AF_INET6, "2001:db8::2")
    record += bytes.fromhex("0011223344aa") + bytes.fromhex("66778899aabb")
    record += ((16001 << 4) | 0).to_bytes(3, "big") + ((24 << 4) | 1).to_bytes(3, "big")
    flows, _, _ = decode_all(ipfix_message(ipfix_set(2, tpl), ipfix_set(263, record)))
    doc = flows[0]
    assert (doc["source.ip"], doc["destination.ip"], doc["network.type"]) == ("2001:db8::1", "2001:db8::2", "ipv6")
    assert (doc["source.mac"], doc["destination.mac"]) == ("00-11-22-33-44-AA", "66-77-88-99-AA-BB")
    assert (doc["netflow.mpls_top_label_stack_section"], doc["netflow.mpls_label_stack_section2"]) == (16001, 24)


def netflow_v9(*flowsets: bytes, source_id: int = 0, uptime_ms: int = 10_000, unix_secs: int = EXPORT_TIME) -> bytes:
    return struct.pack("!HHIIII", 9, len(flowsets), uptime_ms, unix_secs, 1, source_id) + b"".join(flowsets)


def test_v9_vendor_field_ids_above_32767_and_relative_times() -> None:
    tpl = struct.pack("!HH", 1024, 5) + struct.pack("!HHHHHHHHHH", 8, 4, 12, 4, 22, 4, 21, 4, 40000, 2)
    data = socket.inet_aton("10.0.0.1") + socket.inet_aton("10.0.0.2") + struct.pack("!IIH", 4_000, 9_000, 0xABCD)
    message = netflow_v9(ipfix_set(0, tpl), ipfix_set(1024, data, pad_to=4))
    cache = TemplateCache()
    result = decode_datagram(message, EXPORTER, cache, 5.0)
    doc = flow_document(result.flows[0])
    boot_ms = EXPORT_TIME * 1000 - 10_000
    assert _iso_ms(str(doc["event.start"])) == boot_ms + 4_000
    assert _iso_ms(str(doc["event.end"])) == boot_ms + 9_000
    vendor_keys = [k for k in doc if (k.startswith("netflow.") and "40000" in k) or k == "netflow.username"]
    assert vendor_keys, sorted(doc)


def test_truncated_and_garbage_raise_decode_error_only() -> None:
    cache = TemplateCache()
    for data in (
        b"",
        b"\x00\x0a",
        b"\x00\x09" + b"\x00" * 10,
        b"\x00\x63" + b"\x00" * 30,
        b"\x00\x0a\x00\x05" + b"\x00" * 12,
    ):
        with pytest.raises(DecodeError):
            decode_datagram(data, EXPORTER, cache, 0.0)


@needs_tshark
def test_built_message_agrees_with_tshark(tmp_path: Path) -> None:
    records = v4_record("10.0.0.1", "10.0.0.2", 1234, 80, 6, 1500, 3) + v4_record(
        "10.0.0.3", "8.8.8.8", 53, 53, 17, 80, 1
    )
    message = ipfix_message(ipfix_set(2, V4_TEMPLATE), ipfix_set(256, records))
    pcap = write_pcap([Datagram(message, ("192.0.2.1", 50000), ("192.0.2.2", 4739), 0.0)], tmp_path / "built.pcap")
    layers = tshark_layers(pcap)
    text = str(layers[0]["cflow"])
    for value in ("10.0.0.1", "10.0.0.2", "1234", "8.8.8.8", "1500"):
        assert value in text
    flows, _, _ = decode_all(message)
    assert len(flows) == text.count("'Flow ")


def _rates_both_paths(*messages: bytes) -> list[tuple[int, int]]:
    """(flowd.sampling_rate, network.bytes) of every flow, per datagram and as a worker decodes
    the same messages in one batch (the two must agree)."""
    from flowd.server.batch_decoder import BatchDecoder
    from flowd.server.metrics import WorkerStats

    flows, _, _ = decode_all(*messages)
    per_datagram = [(int(str(d["flowd.sampling_rate"])), int(str(d["network.bytes"]))) for d in flows]
    decoder = BatchDecoder(TemplateCache(), WorkerStats())
    batched = [
        (int(d["flowd.sampling_rate"]), int(d["network.bytes"]))
        for d in decoder.decode([(m, EXPORTER, float(EXPORT_TIME)) for m in messages])
    ]
    assert batched == per_datagram
    return per_datagram


def test_a_reconfigured_sampler_changes_the_rate_of_records_that_name_none() -> None:
    """Sampler 1 announced at 1:100, then reconfigured to 1:1000: records without a selector id
    follow it (they used to stay at the first rate until restart)."""
    opt = ipfix_set(3, options_template(402, 1, (302, 8), (305, 4), (306, 4)))
    tpl = ipfix_set(2, template(264, (8, 4), (1, 8)))
    record = ipfix_set(264, socket.inet_aton("10.0.0.1") + struct.pack("!Q", 50))
    rates = _rates_both_paths(
        ipfix_message(opt, ipfix_set(402, struct.pack("!QII", 1, 1, 99))),
        ipfix_message(tpl, record),
        ipfix_message(opt, ipfix_set(402, struct.pack("!QII", 2, 1, 9))),  # another sampler: no change
        ipfix_message(record),
        ipfix_message(opt, ipfix_set(402, struct.pack("!QII", 1, 1, 999))),
        ipfix_message(record),
    )
    assert rates == [(100, 5_000), (100, 5_000), (1000, 50_000)]


def test_sampling_probability_is_one_in_its_inverse() -> None:
    """samplingProbability (IE 311, RFC 5477 probabilistic sampling) 0.01: one packet in 100, in
    options data for the domain and in the records themselves."""
    opt = ipfix_set(3, options_template(403, 1, (149, 4), (311, 8)))
    tpl = ipfix_set(2, template(265, (8, 4), (1, 8)))
    own = ipfix_set(2, template(266, (8, 4), (1, 8), (311, 8)))
    rates = _rates_both_paths(
        ipfix_message(opt, ipfix_set(403, struct.pack("!Id", 1, 0.01))),
        ipfix_message(tpl, ipfix_set(265, socket.inet_aton("10.0.0.1") + struct.pack("!Q", 7))),
        ipfix_message(own, ipfix_set(266, socket.inet_aton("10.0.0.2") + struct.pack("!Qd", 7, 0.25))),
    )
    assert rates == [(100, 700), (4, 28)]


def test_sampling_probabilities_too_small_to_be_a_32_bit_rate_are_ignored() -> None:
    """Found by an audit: 5e-324 made `round(1 / p)` raise (the datagram lost as an internal
    error), and 1e-30 gave a rate no document field holds. The rate elements are 32-bit, so a
    probability below 1 / (2**32 - 1) states no rate; the flows keep their counters unscaled."""
    own = ipfix_set(2, template(267, (8, 4), (1, 8), (311, 8)))
    rates = _rates_both_paths(
        *(
            ipfix_message(own, ipfix_set(267, socket.inet_aton("10.0.0.3") + struct.pack("!Qd", 7, probability)))
            for probability in (5e-324, 1e-30, 1 / (2**32 - 1), 0.5)
        )
    )
    assert rates == [(1, 7), (1, 7), (2**32 - 1, 7 * (2**32 - 1)), (2, 14)]


def test_a_v9_options_template_without_scope_fields_is_exporter_wide() -> None:
    """RFC 3954 section 6.1 does not require a scope field; tshark reads such a set as options.
    Its sampling interval applies to the exporter's later flows (it was read as a data template,
    its record indexed as a flow and the rate lost)."""
    no_scope = struct.pack("!HHH", 257, 0, 8) + struct.pack("!HHHH", 34, 4, 35, 1)
    flow_template = struct.pack("!HH", 256, 2) + struct.pack("!HHHH", 8, 4, 1, 4)
    cache = TemplateCache()
    first = decode_datagram(
        netflow_v9(ipfix_set(1, no_scope, pad_to=4), ipfix_set(0, flow_template)), EXPORTER, cache, 1.0
    )
    assert first.errors == []
    options = decode_datagram(netflow_v9(ipfix_set(257, struct.pack("!IB", 100, 2), pad_to=4)), EXPORTER, cache, 2.0)
    assert (len(options.flows), [r.fields["sampling_interval"] for r in options.options]) == (0, [100])
    data = netflow_v9(ipfix_set(256, socket.inet_aton("10.0.0.1") + struct.pack("!I", 1_000)))
    (flow,) = decode_datagram(data, EXPORTER, cache, 3.0).flows
    assert flow.sampling_rate == 100
    restored = TemplateCache()
    restored.restore(json.loads(json.dumps(cache.snapshot())))
    again = decode_datagram(netflow_v9(ipfix_set(257, struct.pack("!IB", 10, 2), pad_to=4)), EXPORTER, restored, 4.0)
    assert len(again.options) == 1 and again.flows == []


def test_a_variable_length_record_cut_short_keeps_the_records_before_it() -> None:
    """Three records, the third declaring a name longer than what is left of the set: the first
    two are flows, the third a `truncated` soft error; the data set after it decodes too. Also
    for a set parked until its template came."""
    tpl = template(302, (8, 4), (82, 0xFFFF))
    records = b"".join(socket.inet_aton(f"10.0.0.{n}") + varlen(f"if{n}".encode()) for n in (1, 2))
    records += socket.inet_aton("10.0.0.3") + bytes([40]) + b"cut"
    next_set = ipfix_set(302, socket.inet_aton("10.0.0.4") + varlen(b"if4"))
    for messages in (
        [ipfix_message(ipfix_set(2, tpl), ipfix_set(302, records), next_set)],
        [ipfix_message(ipfix_set(302, records), next_set), ipfix_message(ipfix_set(2, tpl))],
    ):
        cache = TemplateCache()
        results = [decode_datagram(m, EXPORTER, cache, 1000.0) for m in messages]
        flows = [flow_document(r) for result in results for r in result.flows]
        assert [f["source.ip"] for f in flows] == ["10.0.0.1", "10.0.0.2", "10.0.0.4"]
        assert [e.reason for result in results for e in result.errors] == ["truncated"]


def _v9(*flowsets: bytes, records: int) -> bytes:
    return struct.pack("!HHIIII", 9, records, 10_000, EXPORT_TIME, 1, 0) + b"".join(flowsets)


def test_sampling_configured_per_interface_applies_to_that_ingress_interface() -> None:
    """NetFlow v9 options scoped to an interface (scope type 2) with SAMPLING_INTERVAL (34): each
    flow takes the rate of its INPUT_SNMP interface; an interface with none announced takes the
    domain's rate (scope system), else 1. RFC 3954 section 6.1: an options record applies to its scope."""
    options_template = ipfix_set(1, struct.pack("!HHHHHHH", 300, 4, 4, 2, 4, 34, 4), pad_to=4)
    system_template = ipfix_set(1, struct.pack("!HHHHHHH", 301, 4, 4, 1, 4, 34, 4), pad_to=4)
    data_template = ipfix_set(0, struct.pack("!HHHHHHHH", 302, 3, 8, 4, 10, 2, 1, 4))

    def flows(*interfaces: int) -> bytes:
        rows = b"".join(socket.inet_aton("10.0.0.1") + struct.pack("!HI", i, 10) for i in interfaces)
        return _v9(ipfix_set(302, rows, pad_to=4), records=len(interfaces))

    per_interface = ipfix_set(300, struct.pack("!IIII", 1, 100, 2, 1000))
    setup = [_v9(options_template, per_interface, records=3), _v9(data_template, records=1)]
    rates = _rates_both_paths(*setup, *[flows(1, 2, 3)] * 9)
    assert rates[:3] == [(100, 1_000), (1000, 10_000), (1, 10)]
    system = _v9(system_template, ipfix_set(301, struct.pack("!II", 0, 10)), records=2)
    rates = _rates_both_paths(*setup, system, *[flows(1, 2, 3)] * 9)
    assert rates[:3] == [(100, 1_000), (1000, 10_000), (10, 100)]


def test_ipfix_options_scoped_by_ingress_interface() -> None:
    opt = ipfix_set(3, options_template(404, 1, (10, 4), (305, 4), (306, 4)))
    tpl = ipfix_set(2, template(267, (8, 4), (10, 4), (1, 8)))
    rows = b"".join(socket.inet_aton("10.0.0.1") + struct.pack("!IQ", i, 3) for i in (7, 8))
    rates = _rates_both_paths(
        ipfix_message(opt, ipfix_set(404, struct.pack("!III", 7, 1, 63))),
        ipfix_message(tpl),
        *[ipfix_message(ipfix_set(267, rows))] * 9,
    )
    assert rates[:2] == [(64, 192), (1, 3)]
