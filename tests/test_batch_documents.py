"""The columnar document path must produce exactly what the per-record path produces."""

from __future__ import annotations

import glob
import json

import orjson
import pytest

from benchmarks import traffic
from flowd.capture import read_datagrams
from flowd.decode import TemplateCache, decode_datagram
from flowd.decode.batch import RecordBatch, merge_batches
from flowd.errors import DecodeError
from flowd.model import KIND_NETFLOW_FLOW, FlowList
from flowd.output.batch_documents import batch_table, documents_for
from flowd.output.documents import flow_document
from flowd.output.table import LazyColumn, split_lines
from tests.shared_data import CORPUS as SHARED_CORPUS

CORPUS = SHARED_CORPUS
CAPTURES = sorted(glob.glob(str(CORPUS / "**" / "*.pcap"), recursive=True)) + [
    str(CORPUS / "ipfixcol2" / "example_flows.ipfix")
]


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.split("corpus/")[-1])
def test_columnar_documents_equal_per_record_documents(capture: str) -> None:
    templates = TemplateCache()
    for datagram in read_datagrams(capture):
        try:
            result = decode_datagram(datagram.payload, datagram.source, templates, datagram.timestamp)
        except DecodeError:
            continue
        assert documents_for(result.flows) == [flow_document(record) for record in result.flows]
        assert_ndjson_equals_dicts(result.flows)


def assert_ndjson_equals_dicts(flows: FlowList) -> None:
    """Each batch's NDJSON, parsed by orjson, is the per-record documents (same key set too)."""
    for part in flows.parts:
        if isinstance(part, RecordBatch) and part.kind == KIND_NETFLOW_FLOW:
            lines = split_lines(batch_table(part).to_ndjson())
            assert [orjson.loads(line) for line in lines] == [flow_document(record) for record in part]
            for line in lines:
                json.loads(line, object_pairs_hook=_no_duplicate_keys)


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys in {keys}"
    return dict(pairs)


@pytest.mark.parametrize("builder", [traffic.netflow_v5, traffic.netflow_v9, traffic.ipfix])
def test_columnar_documents_on_generated_traffic(builder: object) -> None:
    templates_, data = builder()  # type: ignore[operator]
    cache = TemplateCache()
    for datagram in [*templates_, *data]:
        result = decode_datagram(datagram, ("192.0.2.1", 2055), cache, 1.0)
        assert documents_for(result.flows) == [flow_document(record) for record in result.flows]


@pytest.mark.parametrize("protocol", ["v9", "ipfix"])
def test_address_columns_stay_arrays_in_both_families(protocol: str) -> None:
    """IPv4 and IPv6 data sets (every tenth datagram of the bench traffic is IPv6) give the
    per-record documents from address arrays (uint32, 16-byte values): `related.ip` from them
    too, `network.type` once per set."""
    from flowd.bench.traffic import build_traffic
    from flowd.output.address_columns import address_family

    cache = TemplateCache()
    ipv6_sets = 0
    for stream in build_traffic(protocol, exporters=2, datagrams_per_exporter=30).streams:
        for datagram in stream.datagrams:
            result = decode_datagram(datagram.payload, ("192.0.2.1", 2055), cache, 1.0)
            assert_ndjson_equals_dicts(result.flows)
            for part in result.flows.parts:
                if not isinstance(part, RecordBatch):
                    continue
                family = "ipv6" if "source_ipv6_address" in part.template.names else "ipv4"
                ipv6_sets += family == "ipv6"
                table = batch_table(part)
                source, destination = table.fields["source.ip"], table.fields["destination.ip"]
                assert address_family(source, destination) == family
                assert table.fields[f"netflow.source_{family}_address"] is source  # rendered once for both keys
                assert isinstance(table.fields["related.ip"], LazyColumn)
                assert table.constants["network.type"] == family
    assert ipv6_sets >= 4


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.split("corpus/")[-1])
def test_merged_batches_keep_every_record_and_document(capture: str) -> None:
    """Joining a receive batch's sets (as `flowd run` does) changes the order, nothing else."""
    templates = TemplateCache()
    parts = []
    for datagram in read_datagrams(capture):
        try:
            result = decode_datagram(datagram.payload, datagram.source, templates, datagram.timestamp)
        except DecodeError:
            continue
        parts.extend(result.flows.parts)
    separate = FlowList()
    for part in parts:
        separate.add_batch(part)
    merged = FlowList()
    for part in merge_batches(parts):
        merged.add_batch(part)
    assert len(merged) == len(separate)
    expected = [flow_document(record) for record in separate]

    def key(document: dict[str, object]) -> bytes:
        return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)

    assert sorted(map(key, documents_for(merged))) == sorted(map(key, expected))
    written = [orjson.loads(line) for part in merged.parts for line in _lines(part)]
    assert sorted(map(key, written)) == sorted(map(key, expected))
    assert sorted(map(key, (flow_document(r) for r in merged))) == sorted(map(key, expected))


def _lines(part: object) -> list[bytes]:
    if isinstance(part, RecordBatch) and part.kind == KIND_NETFLOW_FLOW:
        return split_lines(batch_table(part).to_ndjson())
    return [orjson.dumps(flow_document(record)) for record in part]  # type: ignore[attr-defined]


def test_merging_joins_datagrams_of_one_template() -> None:
    _, data = traffic.netflow_v9(records=5, datagrams=8)
    cache = TemplateCache()
    decode_datagram(traffic.netflow_v9()[0][0], ("192.0.2.1", 2055), cache, 0.0)
    parts = [part for d in data for part in decode_datagram(d, ("192.0.2.1", 2055), cache, 1.0).flows.parts]
    merged = merge_batches(parts)
    assert len(parts) == 8 and len(merged) == 1 and len(merged[0]) == 40


def test_a_time_element_of_odd_length_is_kept_as_hex_and_not_used_as_a_time() -> None:
    """Found by the byte-flip property: flowStartDeltaMicroseconds (158) sent with 9 bytes
    decodes as hex text; both document paths keep it under netflow.* and derive no start from it
    (they used to fail on the arithmetic and lose the flow)."""
    document = one_record_alike_in_both_paths(
        ((8, 4), (158, 9), (159, 4)), bytes([192, 0, 2, 1]) + bytes(9) + (1500).to_bytes(4, "big")
    )
    assert document["netflow.flow_start_delta_microseconds"] == "00" * 9
    assert "event.start" not in document and "event.duration" not in document
    assert document["event.end"] == document["@timestamp"]


def one_record_alike_in_both_paths(fields: tuple[tuple[int, int], ...], record: bytes) -> dict[str, object]:
    """The document of one IPFIX record under a template of `fields`, after checking that the
    columnar path (documents and NDJSON) gives the per-record path's document."""
    from tests.test_ipfix_features import ipfix_message, ipfix_set, template

    message = ipfix_message(ipfix_set(2, template(300, *fields)), ipfix_set(300, record))
    result = decode_datagram(message, ("192.0.2.9", 4739), TemplateCache(), 1.0)
    (flow,) = list(result.flows)
    document = flow_document(flow)
    assert documents_for(result.flows) == [document]
    assert_ndjson_equals_dicts(result.flows)
    return document


def test_records_without_counters_count_nothing_rather_than_zero() -> None:
    """A template without octet or packet counters (addresses only, as NAT and firewall event
    templates are): no network.bytes/packets in either path; one counter gives only its own."""
    document = one_record_alike_in_both_paths(((8, 4), (12, 4)), bytes([192, 0, 2, 1, 198, 51, 100, 7]))
    assert document["source.ip"] == "192.0.2.1"
    for key in ("network.bytes", "network.packets", "flowd.raw_bytes", "flowd.raw_packets", "source.bytes"):
        assert key not in document
    document = one_record_alike_in_both_paths(((8, 4), (2, 4)), bytes([192, 0, 2, 1]) + (17).to_bytes(4, "big"))
    assert document["network.packets"] == document["flowd.raw_packets"] == document["source.packets"] == 17
    assert "network.bytes" not in document and "flowd.raw_bytes" not in document


def test_counts_since_the_last_report_win_over_running_totals() -> None:
    """A Cisco ASA flow update: the flow's total so far (IE 85, 9,000) beside the bytes since the
    previous report each way (IEs 231/232, 700 and 300): sums take only the new 1,000."""
    record = bytes([192, 0, 2, 1]) + (9_000).to_bytes(8, "big") + (700).to_bytes(4, "big") + (300).to_bytes(4, "big")
    document = one_record_alike_in_both_paths(((8, 4), (85, 8), (231, 4), (232, 4)), record)
    assert (document["source.bytes"], document["destination.bytes"]) == (700, 300)
    assert document["network.bytes"] == document["flowd.raw_bytes"] == 1_000
    total_only = one_record_alike_in_both_paths(((8, 4), (85, 8)), bytes([192, 0, 2, 1]) + (9_000).to_bytes(8, "big"))
    assert total_only["network.bytes"] == 9_000  # an old ASA's teardown: the total, once


def test_firewall_events_and_dropped_flows_set_event_type_in_both_paths() -> None:
    """IPFIX firewallEvent (IE 233: 1 created, 2 deleted, 3 denied, 4 alert, 5 update) and
    forwardingStatus (IE 89, RFC 7270: the two high bits, 01 forwarded, 10 dropped, 11 consumed),
    one record per combination in one data set: both paths give each record its ECS event.type."""
    from tests.test_ipfix_features import ipfix_message, ipfix_set, template

    cases = [  # (firewallEvent, forwardingStatus, expected event.type)
        (0, 0x40, ["connection"]),
        (1, 0x40, ["connection", "start"]),
        (2, 0x40, ["connection", "end"]),
        (3, 0x40, ["connection", "denied"]),
        (4, 0x40, ["connection"]),
        (5, 0x80, ["connection", "denied"]),  # an update of a flow the device dropped
        (0, 0x82, ["connection", "denied"]),  # dropped, reason code 2
        (0, 0xC1, ["connection"]),  # consumed (for the device itself)
        (2, 0x80, ["connection", "end"]),  # the firewall's event wins
    ]
    records = b"".join(bytes([192, 0, 2, 1, event, status]) for event, status, _ in cases)
    message = ipfix_message(ipfix_set(2, template(300, (8, 4), (233, 1), (89, 1))), ipfix_set(300, records))
    result = decode_datagram(message, ("192.0.2.9", 4739), TemplateCache(), 1.0)
    documents = [flow_document(record) for record in result.flows]
    assert [d["event.type"] for d in documents] == [expected for _, _, expected in cases]
    assert documents_for(result.flows) == documents
    assert_ndjson_equals_dicts(result.flows)
    plain = one_record_alike_in_both_paths(((8, 4), (89, 4)), bytes([192, 0, 2, 1, 0, 0, 0, 0x40]))
    assert plain["event.type"] == ["connection"]  # forwarded, in a 4-octet encoding
    dropped = one_record_alike_in_both_paths(((8, 4), (89, 4)), bytes([192, 0, 2, 1, 0, 0, 0, 0x81]))
    assert dropped["event.type"] == ["connection", "denied"]


def test_nat_events_set_event_type_in_both_paths() -> None:
    """natEvent (IE 230): creates start, deletes end, for the values RFC 8158 and Juniper's draft
    numbering agree on (1/2, 4/5, 6/7, 8/9 in pairs); exhaustion and quota events (3, 10 on) stay
    connections; a firewall event in the same record wins."""
    from tests.test_ipfix_features import ipfix_message, ipfix_set, template

    start, end, plain = ["connection", "start"], ["connection", "end"], ["connection"]
    expected = {1: start, 2: end, 3: plain, 4: start, 5: end, 6: start, 7: end, 8: start, 9: end}
    expected |= {value: plain for value in (0, 10, 11, 12, 13, 16, 17)}
    cases = sorted(expected.items())
    records = b"".join(bytes([192, 0, 2, 1, value, 0]) for value, _ in cases) + bytes([192, 0, 2, 1, 1, 3])
    message = ipfix_message(ipfix_set(2, template(300, (8, 4), (230, 1), (233, 1))), ipfix_set(300, records))
    result = decode_datagram(message, ("192.0.2.9", 4739), TemplateCache(), 1.0)
    documents = [flow_document(record) for record in result.flows]
    assert [d["event.type"] for d in documents] == [types for _, types in cases] + [["connection", "denied"]]
    assert documents_for(result.flows) == documents
    assert_ndjson_equals_dicts(result.flows)


def test_akvorado_nat_capture_events() -> None:
    """akvorado's nat.pcap: tshark shows 8 "NAT translation create (Historic) (1)" and one
    "NAT translation delete (Historic) (2)"."""
    from flowd.offline import DecodeSummary, decode_documents

    path = CORPUS / "akvorado" / "netflow" / "nat.pcap"
    if not path.exists():
        pytest.skip("corpus not found")
    types = [tuple(d["event.type"]) for d in decode_documents([path], DecodeSummary())]
    assert sorted(types) == [("connection", "end")] + [("connection", "start")] * 8


def test_asa_nsel_teardown_events_are_connection_ends() -> None:
    """The logstash codec's Cisco ASA capture: 14 NSEL records, each a flow-deleted event (tshark
    shows NF_F_FW_EVENT 2 for every one of them)."""
    from flowd.offline import DecodeSummary, decode_documents

    directory = CORPUS / "logstash-codec-netflow"
    files = [directory / "netflow9_test_cisco_asa_1_tpl.dat", directory / "netflow9_test_cisco_asa_1_data.dat"]
    if not all(path.exists() for path in files):
        pytest.skip("corpus not found")
    documents = list(decode_documents(files, DecodeSummary()))
    assert len(documents) == 14
    assert all(d["netflow.fw_event"] == 2 and d["event.type"] == ["connection", "end"] for d in documents)


def test_durations_out_of_range_are_left_out_by_both_paths() -> None:
    """Absolute times (IPFIX 152/153) with the end before the start, a duration too long for
    nanoseconds in a `long`, and times beyond 2^62 ms: the columnar path gives each document what
    the per-record path gives it (event.duration only where 0 <= end - start <= MAX_DURATION_MS)."""
    from flowd.output.documents import MAX_DURATION_MS
    from tests.test_ipfix_features import ipfix_message, ipfix_set, template

    def record(start: int, end: int) -> bytes:
        return bytes([192, 0, 2, 1]) + start.to_bytes(8, "big") + end.to_bytes(8, "big")

    base = 1_700_000_000_000
    cases = [
        (base, base + 1_500),
        (base, base - 1),
        (base, base + MAX_DURATION_MS),
        (base, base + MAX_DURATION_MS + 1),
    ]
    out_of_array_range = [(base, 1 << 62), (1 << 63, base)]
    for batch_cases in (cases, cases + out_of_array_range):
        message = ipfix_message(
            ipfix_set(2, template(300, (8, 4), (152, 8), (153, 8))),
            ipfix_set(300, b"".join(record(s, e) for s, e in batch_cases)),
        )
        result = decode_datagram(message, ("192.0.2.9", 4739), TemplateCache(), 1.0)
        documents = [flow_document(r) for r in result.flows]
        assert documents_for(result.flows) == documents
        assert_ndjson_equals_dicts(result.flows)
        assert ["event.duration" in d for d in documents[:4]] == [True, False, True, False]
        assert documents[2]["event.duration"] == MAX_DURATION_MS * 1_000_000


def test_a_counter_of_odd_length_gives_way_to_the_next_in_both_paths() -> None:
    """octetDeltaCount (1) sent with 9 bytes decodes as hex; octetTotalCount (85) beside it is the
    flow's byte count in both document paths (the per-record one used to count no bytes)."""
    document = one_record_alike_in_both_paths(
        ((8, 4), (1, 9), (85, 8)), bytes([192, 0, 2, 1]) + bytes(9) + (77).to_bytes(8, "big")
    )
    assert document["netflow.octet_delta_count"] == "00" * 9
    assert document["network.bytes"] == document["source.bytes"] == 77


def test_ports_and_protocol_of_odd_length_give_one_flow_id_in_both_paths() -> None:
    """Found by an audit: ports sent in 3 bytes (held as raw bytes in the columnar array) were
    hashed as 0 by the columnar flow id, so the per-record path's `flow.id` differed."""
    from flowd.output import ecs

    record = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + (1234).to_bytes(3, "big") + (80).to_bytes(3, "big")
    record += (6).to_bytes(3, "big") + (1000).to_bytes(8, "big")
    document = one_record_alike_in_both_paths(((8, 4), (12, 4), (7, 3), (11, 3), (4, 3), (1, 8)), record)
    assert (document["source.port"], document["destination.port"]) == (1234, 80)
    assert document["flow.id"] == ecs.flow_id("192.0.2.9", "10.0.0.1", 1234, "10.0.0.2", 80, 6)
