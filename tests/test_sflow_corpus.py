"""flowd's sFlow v5 decoder against tshark and tcpdump, over every sFlow file of the shared corpus.

The oracle is tshark 4.0 (`-2 -T json --no-duplicate-keys`, sflow on UDP 6343) on a pcap we write
with `write_pcap` from the same datagrams we decode (pcap captures: the UDP payloads
`read_datagrams` finds; `.dat` payloads: one datagram each from a made-up exporter). For each
datagram we compare:

- the header: agent address, datagram sequence number, uptime, sample count;
- the number of flow samples (`sflow_245.sampletype` 1 and 3) and counter samples (2 and 4);
- every flow sample: sequence number, source id index, sampling rate, sample pool, drops, the
  input/output interface (format and value), and, when it has a raw packet header record, the
  frame length, stripped bytes and, from tshark's dissection of the header, the source and
  destination address, ports and IP protocol;
- every counter sample: sequence number, source id index, and the generic interface counters
  (ifIndex, ifType, ifSpeed, octets and unicast packets in and out) when present.

tshark merges samples that share a subtree name (e.g. two "Counters sample, seq 28") into one
JSON list, so samples are compared as multisets per datagram, not in order.

tcpdump's `-v` text output (`tcpdump/*.out`) is a second, independent decode: we parse the values
it prints and compare them datagram by datagram, sample by sample, in order.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flowd.capture import Datagram, read_datagrams
from flowd.decode.sflow import decode_sflow
from flowd.errors import DecodeError, TruncatedError
from flowd.model import KIND_SFLOW_COUNTERS, KIND_SFLOW_FLOW, DecodeResult, FlowRecord
from flowd.output.sflow_documents import sflow_document
from tests.shared_data import CORPUS as SHARED_CORPUS
from tests.tshark_oracle import needs_tshark, tshark_layers, write_pcap

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = SHARED_CORPUS
SFLOW_PORT = 6343
DAT_EXPORTER = ("192.0.2.1", 50000)
RECEIVED_AT = 1_764_072_000.123

# (file, flow samples, counter samples) as the manifest lists them (tshark -2 counts).
SFLOW_FILES: list[tuple[str, int, int]] = [
    ("akvorado/sflow/data-1140.pcap", 5, 0),
    ("akvorado/sflow/data-discard-interface.pcap", 1, 0),
    ("akvorado/sflow/data-local-interface.pcap", 1, 0),
    ("akvorado/sflow/data-multiple-interfaces.pcap", 1, 0),
    ("akvorado/sflow/data-icmpv4.pcap", 1, 0),
    ("akvorado/sflow/data-icmpv6.pcap", 1, 0),
    ("akvorado/sflow/data-sflow-expanded-sample.pcap", 1, 0),
    ("akvorado/sflow/data-sflow-ipv4-data.pcap", 1, 0),
    ("akvorado/sflow/data-sflow-raw-ipv4.pcap", 2, 0),
    ("ndpi/sflow.pcap", 1, 8),
    ("tcpdump/sflow-print-v6.pcap", 13, 48),
    ("tcpdump/sflow_print-segv.pcap", 0, 0),
    ("logstash-codec-sflow/sflow_1_counters_sample.dat", 0, 1),
    ("logstash-codec-sflow/sflow_counters_sample.dat", 0, 12),
    ("logstash-codec-sflow/sflow_flow_sample.dat", 1, 0),
    ("logstash-codec-sflow/sflow_flow_sample_eth_vlan.dat", 1, 0),
]
MALFORMED = {"tcpdump/sflow_print-segv.pcap"}
"""tcpdump's crash regression input: the UDP length says 8 bytes of payload (version and agent
address type only). tshark shows `version 5, agenttype 1` then `_ws.malformed` and no sample;
tcpdump prints `[length 8 < 28] (invalid)`. We must raise a `DecodeError` (truncated header)."""

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not found (set FLOWD_CORPUS)")


def corpus_datagrams(name: str) -> list[Datagram]:
    """The file's datagrams, all addressed to UDP 6343 so tshark dissects them as sFlow."""
    path = CORPUS / name
    if name.endswith(".dat"):
        return [Datagram(path.read_bytes(), DAT_EXPORTER, ("192.0.2.2", SFLOW_PORT), 0.0, "raw")]
    return [Datagram(d.payload, d.source, (d.destination[0], SFLOW_PORT), d.timestamp) for d in read_datagrams(path)]


def decode(datagram: Datagram) -> DecodeResult:
    return decode_sflow(datagram.payload, datagram.source, RECEIVED_AT)


@functools.cache
def tshark_sflow(name: str, tmp: Path) -> list[dict[str, Any]]:
    pcap = write_pcap(corpus_datagrams(name), tmp / (name.replace("/", "_") + ".pcap"))
    return [layers.get("sflow", {}) for layers in tshark_layers(pcap, [f"udp.port=={SFLOW_PORT},sflow"])]


@pytest.fixture(scope="module")
def oracle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sflow-oracle")


# --- tshark JSON helpers -------------------------------------------------------------------------


def _tshark_samples(sflow: dict[str, Any]) -> list[dict[str, Any]]:
    samples = []
    for value in sflow.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and "sflow_245.sampletype" in item:
                samples.append(item)
    return samples


def _records(sample: dict[str, Any], kind_key: str) -> dict[str, dict[str, Any]]:
    """Records of one tshark sample keyed by format number (last one wins, as in ours)."""
    found: dict[str, dict[str, Any]] = {}
    for value in sample.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and kind_key in item:
                found[item[kind_key]] = item
    return found


def _int(value: Any) -> int | None:
    return None if value is None else int(value, 0)


def _tshark_header(raw: dict[str, Any]) -> tuple[Any, ...]:
    """(src, dst, protocol, src port, dst port) from tshark's dissection of a sampled header.

    Only the top level of the header tree is read: an ICMP error's quoted IP header sits inside
    the `icmp` subtree and is not the sampled packet's own address.
    """
    tree = raw.get("sflow_245.header_tree", {})
    src = dst = protocol = None
    if "ip" in tree:
        src, dst, protocol = tree["ip"]["ip.src"], tree["ip"]["ip.dst"], int(tree["ip"]["ip.proto"])
    elif "ipv6" in tree:
        src, dst, protocol = tree["ipv6"]["ipv6.src"], tree["ipv6"]["ipv6.dst"], int(tree["ipv6"]["ipv6.nxt"])
    ports: tuple[int | None, int | None] = (None, None)
    for layer in ("tcp", "udp"):
        if layer in tree:
            ports = (int(tree[layer][f"{layer}.srcport"]), int(tree[layer][f"{layer}.dstport"]))
    return (src, dst, protocol, *ports)


def _tshark_flow(sample: dict[str, Any]) -> tuple[Any, ...]:
    get = sample.get
    expanded = sample["sflow_245.sampletype"] == "3"
    if expanded:
        index = _int(get("sflow.flow_sample.source_id_index"))
        interfaces = (
            _int(get("sflow.flow_sample.input_interface_format")),
            _int(get("sflow.flow_sample.input_interface_value")),
            _int(get("sflow.flow_sample.output_interface.format")),
            _int(get("sflow.flow_sample.output_interface_value")),
        )
    else:
        index = _int(get("sflow.flow_sample.index"))
        word = _int(get("sflow.flow_sample.input_interface")) or 0
        output = sample["sflow.flow_sample.output_interface_tree"]
        interfaces = (
            word >> 30,
            word & 0x3FFFFFFF,
            _int(output["sflow.flow_sample.output_interface_format"]),
            _int(output["sflow.flow_sample.output_interface_value"]),
        )
    raw = _records(sample, "sflow_245.flow_record_format").get("1")
    header: tuple[Any, ...] = ()
    if raw is not None:
        header = (
            int(raw["sflow_245.header.frame_length"]),
            int(raw["sflow_245.header.payload_stripped"]),
            *_tshark_header(raw),
        )
    return (
        int(sample["sflow.flow_sample.sequence_number"]),
        index,
        int(sample["sflow.flow_sample.sampling_rate"]),
        int(sample["sflow.flow_sample.sample_pool"]),
        int(sample["sflow.flow_sample.dropped_packets"]),
        *interfaces,
        header,
    )


def _tshark_counters(sample: dict[str, Any]) -> tuple[Any, ...]:
    generic = _records(sample, "sflow_245.counters_record_format").get("1")
    values: tuple[Any, ...] = ()
    if generic is not None:
        keys = ("ifindex", "iftype", "ifspeed", "ifinoct", "ifinpkt", "ifoutoct", "ifoutpkt")
        values = tuple(int(generic[f"sflow_245.{key}"]) for key in keys)
    return (
        int(sample["sflow.counters_sample.sequence_number"]),
        int(sample["sflow.counters_sample.source_id_index"]),
        values,
    )


# --- our side -------------------------------------------------------------------------------------


def _interface(fields: dict[str, Any], side: str) -> tuple[int, int]:
    for key in ("ifindex", "discard_reason", "interface_count"):
        if f"{side}_{key}" in fields:
            return fields[f"{side}_format"], fields[f"{side}_{key}"]
    assert fields.get(f"{side}_internal") is True
    return fields[f"{side}_format"], 0x3FFFFFFF


def _our_flow(record: FlowRecord) -> tuple[Any, ...]:
    f = record.fields
    header: tuple[Any, ...] = ()
    if "header_protocol" in f:
        header = (
            f["frame_length"],
            f["stripped"],
            f.get("src_ip"),
            f.get("dst_ip"),
            f.get("protocol"),
            f.get("src_port") if f.get("protocol") in (6, 17) else None,
            f.get("dst_port") if f.get("protocol") in (6, 17) else None,
        )
    return (
        f["sample_sequence"],
        f["source_id_index"],
        f["sampling_rate"],
        f["sample_pool"],
        f["drops"],
        *_interface(f, "input"),
        *_interface(f, "output"),
        header,
    )


def _our_counters(record: FlowRecord) -> tuple[Any, ...]:
    f = record.fields
    values: tuple[Any, ...] = ()
    if "if_index" in f:
        keys = ("if_index", "if_type", "if_speed", "if_in_octets", "if_in_ucast_pkts", "if_out_octets")
        values = (*(f[key] for key in keys), f["if_out_ucast_pkts"])
    return (f["sample_sequence"], f["source_id_index"], values)


# --- tests ----------------------------------------------------------------------------------------


@needs_tshark
@pytest.mark.parametrize(("name", "flow_count", "counter_count"), SFLOW_FILES, ids=[row[0] for row in SFLOW_FILES])
def test_samples_match_tshark(name: str, flow_count: int, counter_count: int, oracle_dir: Path) -> None:
    datagrams = corpus_datagrams(name)
    oracle = tshark_sflow(name, oracle_dir)
    assert len(oracle) == len(datagrams)
    flows_total = counters_total = 0
    for number, (datagram, sflow) in enumerate(zip(datagrams, oracle, strict=True), 1):
        tshark_samples = _tshark_samples(sflow)
        if name in MALFORMED:
            assert tshark_samples == []
            assert sflow.get("sflow_245.version") == "5"
            with pytest.raises(TruncatedError):
                decode(datagram)
            continue
        result = decode(datagram)
        assert result.errors == [], f"datagram {number}"
        assert result.declared_records == int(sflow["sflow_245.numsamples"])
        agent = sflow.get("sflow_245.agent") or sflow.get("sflow_245.agent.v6")
        ours_flow = [r for r in result.flows if r.kind == KIND_SFLOW_FLOW]
        ours_counters = [r for r in result.flows if r.kind == KIND_SFLOW_COUNTERS]
        for record in result.flows:
            assert record.fields["agent_address"] == agent
            assert record.sequence == int(sflow["sflow_245.sequence_number"])
            assert record.uptime_ms == int(sflow["sflow_245.sysuptime"])
            assert record.domain_id == int(sflow["sflow_245.sub_agent_id"])
        theirs_flow = [s for s in tshark_samples if s["sflow_245.sampletype"] in ("1", "3")]
        theirs_counters = [s for s in tshark_samples if s["sflow_245.sampletype"] in ("2", "4")]
        assert Counter(map(_our_flow, ours_flow)) == Counter(map(_tshark_flow, theirs_flow)), f"datagram {number}"
        assert Counter(map(_our_counters, ours_counters)) == Counter(map(_tshark_counters, theirs_counters))
        flows_total += len(ours_flow)
        counters_total += len(ours_counters)
    assert (flows_total, counters_total) == (flow_count, counter_count)


def test_every_sflow_file_of_the_corpus_is_covered() -> None:
    """A new sFlow file in the corpus must be added to SFLOW_FILES (and so to the oracle test)."""
    found = {
        str(path.relative_to(CORPUS))
        for pattern in ("akvorado/sflow/*.pcap", "ndpi/sflow*.pcap", "tcpdump/*.pcap", "logstash-codec-sflow/*.dat")
        for path in CORPUS.glob(pattern)
    }
    assert found == {row[0] for row in SFLOW_FILES}


# --- tcpdump -v text ------------------------------------------------------------------------------

_TCPDUMP_DATAGRAM = re.compile(
    r"sFlowv5, IPv(?P<af>[46]) agent (?P<agent>\S+), agent-id (?P<sub>\d+), seqnum (?P<seq>\d+), "
    r"uptime (?P<uptime>\d+), samples (?P<count>\d+), length (?P<length>\d+)"
)
_TCPDUMP_COUNTER = re.compile(r"counter sample \((?P<fmt>\d+)\), length \d+, seqnum (?P<seq>\d+), type (?P<type>\d+), "
                              r"idx (?P<idx>\d+), records (?P<records>\d+)")  # fmt: skip
_TCPDUMP_FLOW = re.compile(
    r"flow sample \((?P<fmt>\d+)\), length \d+, seqnum (?P<seq>\d+), type (?P<type>\d+), idx (?P<idx>\d+), "
    r"rate (?P<rate>\d+), pool (?P<pool>\d+), drops (?P<drops>\d+), input (?P<input>\d+) output (?P<output>\d+)"
)
_TCPDUMP_GENERIC = re.compile(r"ifindex (\d+), iftype (\d+), ifspeed (\d+), ifdirection (\d+)")
_TCPDUMP_IN = re.compile(
    r"In octets (\d+), unicast pkts (\d+), multicast pkts (\d+), broadcast pkts (\d+), discards (\d+)"
)
_TCPDUMP_OUT = re.compile(
    r"Out octets (\d+), unicast pkts (\d+), multicast pkts (\d+), broadcast pkts (\d+), discards (\d+)"
)
_TCPDUMP_SWITCH = re.compile(r"src vlan (\d+), src pri (\d+), dst vlan (\d+), dst pri (\d+)")
_TCPDUMP_RAW = re.compile(r"protocol \S+ \((\d+)\), length (\d+), stripped bytes (\d+), header_size (\d+)")


def _tcpdump_datagrams(text: str) -> list[dict[str, Any]]:
    """What tcpdump -v printed, as one dict per datagram holding its samples in order."""
    datagrams: list[dict[str, Any]] = []
    sample: dict[str, Any] = {}
    for line in text.splitlines():
        if match := _TCPDUMP_DATAGRAM.search(line):
            datagrams.append({**match.groupdict(), "samples": []})
        elif match := _TCPDUMP_COUNTER.search(line) or _TCPDUMP_FLOW.search(line):
            sample = {key: int(value) for key, value in match.groupdict().items()}
            datagrams[-1]["samples"].append(sample)
        else:
            for name, pattern in (
                ("generic", _TCPDUMP_GENERIC),
                ("in", _TCPDUMP_IN),
                ("out", _TCPDUMP_OUT),
                ("switch", _TCPDUMP_SWITCH),
                ("raw", _TCPDUMP_RAW),
            ):
                if match := pattern.search(line):
                    sample[name] = tuple(int(value) for value in match.groups())
    return datagrams


def test_sflow_print_v6_matches_tcpdump() -> None:
    text = (CORPUS / "tcpdump/sflow-print-v6.out").read_text()
    expected = _tcpdump_datagrams(text)
    datagrams = corpus_datagrams("tcpdump/sflow-print-v6.pcap")
    assert len(expected) == len(datagrams) == 25
    compared = Counter[str]()
    for printed, datagram in zip(expected, datagrams, strict=True):
        result = decode(datagram)
        assert result.errors == []
        assert len(datagram.payload) == int(printed["length"])
        assert int(printed["count"]) == len(result.flows) == len(printed["samples"])
        for record, sample in zip(result.flows, printed["samples"], strict=True):
            f = record.fields
            assert f["agent_address"] == printed["agent"]
            assert record.domain_id == int(printed["sub"])
            assert record.sequence == int(printed["seq"])
            assert record.uptime_ms == int(printed["uptime"])
            assert (f["sample_sequence"], f["source_id_type"], f["source_id_index"]) == (
                sample["seq"],
                sample["type"],
                sample["idx"],
            )
            if "rate" in sample:
                assert record.kind == KIND_SFLOW_FLOW
                assert (f["sampling_rate"], f["sample_pool"], f["drops"]) == (
                    sample["rate"],
                    sample["pool"],
                    sample["drops"],
                )
                assert (f["input_format"] << 30) | _interface(f, "input")[1] == sample["input"]
                assert (f["output_format"] << 30) | _interface(f, "output")[1] == sample["output"]
                assert (f["src_vlan"], f["src_priority"], f["dst_vlan"], f["dst_priority"]) == sample["switch"]
                assert (f["header_protocol"], f["frame_length"], f["stripped"], f["header_length"]) == sample["raw"]
                compared["flow"] += 1
            else:
                assert record.kind == KIND_SFLOW_COUNTERS
                assert (f["if_index"], f["if_type"], f["if_speed"], f["if_direction"]) == sample["generic"]
                assert (
                    f["if_in_octets"],
                    f["if_in_ucast_pkts"],
                    f["if_in_multicast_pkts"],
                    f["if_in_broadcast_pkts"],
                    f["if_in_discards"],
                ) == sample["in"]
                assert (
                    f["if_out_octets"],
                    f["if_out_ucast_pkts"],
                    f["if_out_multicast_pkts"],
                    f["if_out_broadcast_pkts"],
                    f["if_out_discards"],
                ) == sample["out"]
                compared["counters"] += 1
    assert compared == {"flow": 13, "counters": 48}


def test_sflow_print_segv_is_rejected_as_tcpdump_does() -> None:
    text = (CORPUS / "tcpdump/sflow_print-segv.out").read_text()
    assert "[length 8 < 28] (invalid)" in text
    (datagram,) = corpus_datagrams("tcpdump/sflow_print-segv.pcap")
    assert len(datagram.payload) == 8
    with pytest.raises(DecodeError) as raised:
        decode(datagram)
    assert raised.value.reason == "truncated"


# --- decoded values and documents of known samples ------------------------------------------------


def _records_of(name: str) -> list[FlowRecord]:
    return [record for datagram in corpus_datagrams(name) for record in decode(datagram).flows]


def test_interface_encodings() -> None:
    discard = _records_of("akvorado/sflow/data-discard-interface.pcap")[0].fields
    assert (discard["output_format"], discard["output_discard_reason"]) == (1, 1)
    assert "output_ifindex" not in discard
    local = _records_of("akvorado/sflow/data-local-interface.pcap")[0].fields
    assert local["output_internal"] is True and "output_ifindex" not in local
    multiple = _records_of("akvorado/sflow/data-multiple-interfaces.pcap")[0].fields
    assert (multiple["output_format"], multiple["output_interface_count"]) == (2, 7)


def test_expanded_sample_with_gateway_and_router_records() -> None:
    (record,) = _records_of("akvorado/sflow/data-sflow-expanded-sample.pcap")
    f = record.fields
    assert record.sampling_rate == 1000
    assert (f["source_id_index"], f["input_ifindex"]) == (11001, 29001)
    assert (f["src_ip"], f["dst_ip"], f["src_port"], f["dst_port"], f["vlan"]) == (
        "52.52.52.52",
        "53.53.53.53",
        22,
        52237,
        809,
    )
    assert (f["bgp_next_hop"], f["router_as"], f["src_as"], f["src_peer_as"]) == ("54.54.54.54", 28976, 203476, 203476)
    assert f["dst_as_path"] == [8218, 29605, 203361]
    assert (f["dst_peer_as"], f["dst_as"], f["local_pref"]) == (8218, 203361, 100)
    assert f["communities"] == [538574949, 1911619684, 1911669584, 1911671290]
    assert (f["next_hop"], f["src_mask_len"], f["dst_mask_len"]) == ("54.54.54.54", 32, 22)

    doc = sflow_document(record)
    assert doc["@timestamp"] == "2025-11-25T12:00:00.123Z"
    assert doc["event.action"] == "sflow_flow" and doc["event.type"] == ["connection"]
    assert doc["observer.ip"] == "49.49.49.49"
    assert (doc["source.as.number"], doc["destination.as.number"]) == (203476, 203361)
    assert (doc["network.bytes"], doc["network.packets"]) == (126 * 1000, 1000)
    assert (doc["flowd.raw_bytes"], doc["flowd.raw_packets"], doc["flowd.sampling_rate"]) == (126, 1, 1000)
    assert (doc["network.transport"], doc["network.iana_number"], doc["network.type"]) == ("tcp", "6", "ipv4")
    assert (doc["network.vlan.id"], doc["source.mac"]) == ("809", "94-8E-D3-0A-71-3B")
    assert doc["observer.ingress.interface.id"] == 29001
    assert doc["sflow.dst_as_path"] == [8218, 29605, 203361]


def test_sampled_ipv4_and_ethernet_records() -> None:
    (record,) = _records_of("akvorado/sflow/data-sflow-ipv4-data.pcap")
    f = record.fields
    # The raw header, sampled Ethernet and sampled IPv4 records describe the same packet.
    assert (f["src_ip"], f["dst_ip"], f["protocol"], f["src_port"], f["dst_port"]) == (
        "50.50.50.50",
        "51.51.51.51",
        17,
        46622,
        58631,
    )
    assert f["src_mac"] == "00:fe:c8:99:05:47"


def test_counter_documents() -> None:
    records = _records_of("logstash-codec-sflow/sflow_counters_sample.dat")
    assert len(records) == 12
    processor = [r.fields for r in records if "cpu_5s" in r.fields]
    assert processor == [
        {
            "agent_address": "10.243.29.150",
            "sample_sequence": 7072,
            "source_id_type": 0,
            "source_id_index": 0,
            "cpu_5s": 6,
            "cpu_1m": 6,
            "cpu_5m": 7,
            "total_memory": 13065256960,
            "free_memory": 12598116368,
        }
    ]
    http = [r.fields for r in records if r.fields.get("unknown_records")]
    assert len(http) == 2  # HTTP counters (2201) are skipped and counted
    interface = next(r for r in records if "if_index" in r.fields)
    doc = sflow_document(interface)
    assert doc["event.action"] == "sflow_counters" and doc["event.type"] == ["info"]
    assert doc["observer.ingress.interface.id"] == interface.fields["if_index"]
    assert doc["sflow.if_in_octets"] == interface.fields["if_in_octets"]
    assert "network.bytes" not in doc


def test_icmp_samples() -> None:
    (v4,) = _records_of("akvorado/sflow/data-icmpv4.pcap")
    (v6,) = _records_of("akvorado/sflow/data-icmpv6.pcap")
    assert (v4.fields["protocol"], v6.fields["protocol"]) == (1, 58)
    assert "icmp_type" in v4.fields and "icmp_type" in v6.fields
    assert sflow_document(v6)["network.transport"] == "ipv6-icmp"
