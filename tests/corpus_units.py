"""The NetFlow v5 / v9 / IPFIX units of the shared test corpus, as data.

A *unit* is one capture, or a group of files that must be fed in the listed order (templates
first) to decode; see `shared/corpus/MANIFEST.md`, "Capture table". The expected counts are the
manifest's (measured with `tshark -2`); they are here to cross-check the oracle, not to replace it.

The corpus is found through the `FLOWD_CORPUS` environment variable, by default `../shared/corpus`
next to the repository root.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowd.capture import Datagram, read_datagrams
from tests.shared_data import CORPUS as SHARED_CORPUS

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = SHARED_CORPUS

DAT_PORT = 2055
"""`.dat` payloads carry no UDP header; `tests.tshark_oracle.write_pcap` sends them to 2055."""


@dataclass(frozen=True, slots=True)
class Unit:
    name: str
    files: tuple[str, ...]
    """Paths relative to the corpus folder, in the order they must be fed."""
    protocol: str
    """"v5", "v9" or "ipfix"."""
    decode_as: tuple[str, ...]
    """tshark `-d` rules that make it dissect the flow-export port as cflow."""
    data_records: int
    """Flow (non-options) records tshark -2 decodes, per the manifest."""
    options_records: int = 0
    """Options-data records tshark -2 decodes, per the manifest."""
    tshark_reads_file: bool = False
    """tshark reads the file itself (the RFC 5655 IPFIX file), rather than a pcap we write."""
    data_before_template: bool = False
    """A data set precedes its template in the same packet: a streaming decoder parks it and
    releases it later, so record order cannot be compared, only the multiset."""
    undecodable_sets: int = 0
    """Data sets no template ever arrives for (the manifest's "no template found")."""
    concatenated: bool = False
    """The `.dat` file is several export datagrams back to back (captured with `nc -k`), although
    the manifest counts it as one: tshark and logstash decode only the first PDU of it.
    `unit_datagrams(unit, split=True)` cuts it into its PDUs (v5 by header count, IPFIX by
    message length)."""
    tshark_stops_at_count: bool = False
    """The v9 header count is smaller than the records present; tshark stops reading flowsets
    when it reaches the count, so the reference decode patches the count to 0xFFFF."""
    tshark_aborts: bool = False
    """tshark throws on a vendor quirk and abandons the rest of the packet, so it shows only
    the records before that point."""
    flowd_data_records: int | None = None
    """For `tshark_aborts` units: how many flow records the unit really holds."""

    @property
    def paths(self) -> list[Path]:
        return [CORPUS / name for name in self.files]

    @property
    def is_dat(self) -> bool:
        return all(name.endswith(".dat") for name in self.files)


def _lcn(name: str, protocol: str, files: list[str], data: int, options: int = 0, **kw: Any) -> Unit:
    return Unit(
        name=f"lcn:{name}",
        files=tuple(f"logstash-codec-netflow/{f}" for f in files),
        protocol=protocol,
        decode_as=(f"udp.port=={DAT_PORT},cflow",),
        data_records=data,
        options_records=options,
        **kw,
    )


def _akv(name: str, protocol: str, files: list[str], port: int, data: int, options: int = 0, **kw: Any) -> Unit:
    return Unit(
        name=f"akv:{name}",
        files=tuple(f"akvorado/netflow/{f}" for f in files),
        protocol=protocol,
        decode_as=(f"udp.port=={port},cflow",),
        data_records=data,
        options_records=options,
        **kw,
    )


def _pmacct(name: str, protocol: str, file: str, port: int, data: int, options: int = 0) -> Unit:
    return Unit(
        name=f"pmacct:{name}",
        files=(f"pmacct/{file}",),
        protocol=protocol,
        decode_as=(f"udp.port=={port},cflow",),
        data_records=data,
        options_records=options,
    )


UNITS: list[Unit] = [
    # logstash-codec-netflow raw payloads: one datagram per file, one made-up exporter per unit.
    # 12 v5 datagrams back to back (2+4+4+4+2*8 = 30 records); the manifest counts the first.
    _lcn("nf5_generic", "v5", ["netflow5.dat"], 2, concatenated=True),
    _lcn("nf5_invalid01", "v5", ["netflow5_test_invalid01.dat"], 30),
    _lcn("nf5_invalid02", "v5", ["netflow5_test_invalid02.dat"], 30),
    _lcn("nf5_mikrotik", "v5", ["netflow5_test_microtik.dat"], 30),
    # 3 IPFIX messages back to back (484 + 64 + 240 bytes); the manifest counts the first.
    _lcn("ipfix_generic", "ipfix", ["ipfix.dat"], 6, 1, concatenated=True),
    _lcn("ipfix_barracuda", "ipfix", ["ipfix_test_barracuda_tpl.dat", "ipfix_test_barracuda_data256.dat"], 8),
    _lcn(
        "ipfix_barracuda_ext_uniflow",
        "ipfix",
        ["ipfix_test_barracuda_extended_uniflow_tpl256.dat", "ipfix_test_barracuda_extended_uniflow_data256.dat"],
        2,
    ),
    _lcn(
        "ipfix_juniper_mx240",
        "ipfix",
        ["ipfix_test_juniper_mx240_junos151r6s3_opttpl512.dat", "ipfix_test_juniper_mx240_junos151r6s3_data512.dat"],
        0,
        1,
    ),
    _lcn(
        "ipfix_mikrotik",
        "ipfix",
        ["ipfix_test_mikrotik_tpl.dat", "ipfix_test_mikrotik_data258.dat", "ipfix_test_mikrotik_data259.dat"],
        46,
    ),
    _lcn("ipfix_nokia_bras", "ipfix", ["ipfix_test_nokia_bras_tpl.dat", "ipfix_test_nokia_bras_data256.dat"], 1),
    _lcn("ipfix_procera", "ipfix", ["ipfix_test_procera_tpl52935.dat", "ipfix_test_procera_data52935.dat"], 8),
    _lcn(
        "ipfix_yaf",
        "ipfix",
        [
            "ipfix_test_yaf_tpls_option_tpl.dat",
            "ipfix_test_yaf_tpl45841.dat",
            "ipfix_test_yaf_data45841.dat",
            "ipfix_test_yaf_data45873.dat",
            "ipfix_test_yaf_data53248.dat",
        ],
        2,
        1,
    ),
    _lcn("nf9_cisco_asr1001x", "v9", ["netflow9_cisco_asr1001x_tpl259.dat"], 25),
    _lcn("nf9_cisco_1941k9", "v9", ["netflow9_test_cisco_1941K9.dat"], 29),
    _lcn("nf9_cisco_aci", "v9", ["netflow9_test_cisco_aci_tpl256-258.dat", "netflow9_test_cisco_aci_data256.dat"], 3),
    _lcn("nf9_cisco_asa_1", "v9", ["netflow9_test_cisco_asa_1_tpl.dat", "netflow9_test_cisco_asa_1_data.dat"], 14),
    _lcn(
        "nf9_cisco_asr9k_opt256",
        "v9",
        ["netflow9_test_cisco_asr9k_opttpl256.dat", "netflow9_test_cisco_asr9k_data256.dat"],
        0,
        19,
    ),
    _lcn(
        "nf9_cisco_asr9k_tpl260",
        "v9",
        ["netflow9_test_cisco_asr9k_tpl260.dat", "netflow9_test_cisco_asr9k_data260.dat"],
        21,
    ),
    _lcn("nf9_cisco_asr9k_opt257", "v9", ["netflow9_test_cisco_asr9k_opttpl257.dat"], 0),
    _lcn("nf9_cisco_asr9k_opt334", "v9", ["netflow9_test_cisco_asr9k_opttpl334.dat"], 0),
    _lcn("nf9_cisco_asr9k_tpl266", "v9", ["netflow9_test_cisco_asr9k_tpl266.dat"], 0),
    _lcn("nf9_cisco_nbar_opt260", "v9", ["netflow9_test_cisco_nbar_opttpl260.dat"], 0, 15),
    _lcn(
        "nf9_cisco_nbar_262", "v9", ["netflow9_test_cisco_nbar_tpl262.dat", "netflow9_test_cisco_nbar_data262.dat"], 5
    ),
    _lcn("nf9_cisco_wlc", "v9", ["netflow9_test_cisco_wlc_tpl.dat", "netflow9_test_cisco_wlc_data261.dat"], 19),
    _lcn("nf9_cisco_wlc_8510", "v9", ["netflow9_test_cisco_wlc_8510_tpl_262.dat"], 0),
    _lcn("nf9_0length_fields", "v9", ["netflow9_test_0length_fields_tpl_data.dat"], 10),
    _lcn(
        "nf9_layer2segmentid",
        "v9",
        ["netflow9_test_field_layer2segmentid_tpl.dat", "netflow9_test_field_layer2segmentid_data.dat"],
        1,
    ),
    _lcn("nf9_macaddr", "v9", ["netflow9_test_macaddr_tpl.dat", "netflow9_test_macaddr_data.dat"], 29, 1),
    # Header count 2, but 3 templates, 2 data records and 1 options record follow.
    _lcn("nf9_invalid01", "v9", ["netflow9_test_invalid01.dat"], 0, tshark_stops_at_count=True),
    _lcn("nf9_valid01", "v9", ["netflow9_test_valid01.dat"], 7),
    _lcn("nf9_unknown_tpl266_292", "v9", ["netflow9_test_unknown_tpl266_292_data.dat"], 2),
    _lcn(
        "nf9_fortigate_521",
        "v9",
        [
            "netflow9_test_fortigate_fortios_521_tpl.dat",
            "netflow9_test_fortigate_fortios_521_data256.dat",
            "netflow9_test_fortigate_fortios_521_data257.dat",
        ],
        1,
        1,
    ),
    # 16 flowsets of one 80-byte record each; tshark throws in the first one (IE 44 length 2).
    _lcn(
        "nf9_h3c",
        "v9",
        ["netflow9_test_h3c_tpl3281.dat", "netflow9_test_h3c_data3281.dat"],
        1,
        tshark_aborts=True,
        flowd_data_records=16,
    ),
    _lcn(
        "nf9_huawei_netstream",
        "v9",
        ["netflow9_test_huawei_netstream_tpl.dat", "netflow9_test_huawei_netstream_data.dat"],
        1,
    ),
    _lcn("nf9_nprobe", "v9", ["netflow9_test_nprobe_tpl.dat", "netflow9_test_nprobe_data.dat"], 1, 1),
    _lcn("nf9_nprobe_dpi", "v9", ["netflow9_test_nprobe_dpi.dat"], 1),
    _lcn("nf9_softflowd", "v9", ["netflow9_test_softflowd_tpl_data.dat"], 7),
    _lcn(
        "nf9_paloalto_panos", "v9", ["netflow9_test_paloalto_panos_tpl.dat", "netflow9_test_paloalto_panos_data.dat"], 8
    ),
    _lcn(
        "nf9_streamcore",
        "v9",
        ["netflow9_test_streamcore_tpl_data256.dat", "netflow9_test_streamcore_tpl_data260.dat"],
        4,
    ),
    # akvorado pcaps; split template/data captures are fed in order as one capture.
    _akv("nfv5", "v5", ["nfv5.pcap"], 9990, 29),
    _akv("data+templates", "v9", ["data+templates.pcap"], 2055, 21, 1, data_before_template=True),
    _akv("template+data", "v9", ["template.pcap", "data.pcap"], 2055, 4),
    _akv("options", "v9", ["options-template.pcap", "options-data.pcap"], 2055, 0, 4),
    _akv("icmp", "v9", ["icmp-template.pcap", "icmp-data.pcap"], 2100, 4),
    _akv("samplingrate", "v9", ["samplingrate-template.pcap", "samplingrate-data.pcap"], 8096, 6),
    _akv("nat", "v9", ["nat.pcap"], 2055, 9),
    _akv("mpls", "ipfix", ["mpls.pcap"], 2055, 2, 1),
    _akv("datalink", "ipfix", ["datalink-template.pcap", "datalink-data.pcap"], 2055, 1),
    _akv("ipfix-srv6", "ipfix", ["ipfix-srv6-template.pcap", "ipfix-srv6-data.pcap"], 2055, 1),
    # pmacct (Cisco IOS XR); the goldens are checked in test_pmacct_golden.py.
    _pmacct("100", "ipfix", "100-IPFIXv10-CISCO/traffic-00.pcap", 9991, 12),
    _pmacct("101", "v9", "101-NFv9-CISCO-cust_primitives/traffic-00.pcap", 9991, 51),
    _pmacct("102", "v9", "102-NFv9-CISCO-f2rd-pretag-sampling-reload/traffic-00.pcap", 9991, 35),
    _pmacct("104", "ipfix", "104-IPFIXv10-IPv6-CISCO-sampling_option/traffic-00.pcap", 9992, 3, 1),
    _pmacct("111-00", "v9", "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources/traffic-00.pcap", 9991, 11),
    _pmacct("111-01", "ipfix", "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources/traffic-01.pcap", 9991, 13),
    _pmacct("400-00", "ipfix", "400-IPFIXv10-BMP-CISCO-SRv6-multiple-sources/traffic-00.pcap", 9991, 657, 338),
    _pmacct("400-01", "ipfix", "400-IPFIXv10-BMP-CISCO-SRv6-multiple-sources/traffic-01.pcap", 9991, 109, 338),
    _pmacct("500", "ipfix", "500-IPFIXv10-BGP-CISCO-SRv6/traffic-00.pcap", 9992, 43, 10),
    _pmacct("501", "ipfix", "501-IPFIXv10-BGP-IPv6-CISCO-MPLS/traffic-00.pcap", 9991, 74, 39),
    _pmacct("502", "ipfix", "502-IPFIXv10-BGP-IPv6-CISCO-SRv6-lcomms/traffic-00.pcap", 9991, 75, 39),
    # nDPI: v9 data sets whose templates never arrive.
    Unit(
        name="ndpi:netflowv9",
        files=("ndpi/netflowv9.pcap",),
        protocol="v9",
        decode_as=("udp.port==2057,cflow",),
        data_records=0,
        undecodable_sets=23,
    ),
    # ipfixcol2: an RFC 5655 IPFIX file; tshark reads it directly.
    Unit(
        name="ipfixcol2:example_flows",
        files=("ipfixcol2/example_flows.ipfix",),
        protocol="ipfix",
        decode_as=(),
        data_records=3979,
        tshark_reads_file=True,
    ),
]

UNITS_BY_NAME: dict[str, Unit] = {unit.name: unit for unit in UNITS}


def corpus_available() -> bool:
    return (CORPUS / "MANIFEST.md").is_file()


def unit_datagrams(unit: Unit, *, split: bool = False) -> list[Datagram]:
    """Every datagram of the unit, files in order (a `.dat` file is one datagram, all from
    `flowd.capture.RAW_EXPORTER`, so templates from one file apply to the next).

    With `split`, a `concatenated` unit's file is cut into the datagrams it was captured from."""
    datagrams: list[Datagram] = []
    for path in unit.paths:
        datagrams.extend(read_datagrams(path))
    if split and unit.concatenated:
        datagrams = [
            Datagram(pdu, d.source, d.destination, d.timestamp, d.transport)
            for d in datagrams
            for pdu in split_pdus(d.payload)
        ]
    return datagrams


def split_pdus(payload: bytes) -> list[bytes]:
    """Back-to-back NetFlow v5 PDUs (24 + 48 x count bytes) or IPFIX messages (length word)."""
    pdus = []
    pos = 0
    while pos + 4 <= len(payload):
        version, word = struct.unpack_from("!HH", payload, pos)
        if version == 5:
            length = 24 + 48 * word
        elif version == 10 and word >= 16:
            length = word
        else:
            break
        pdus.append(payload[pos : pos + length])
        pos += length
    if pos < len(payload):
        pdus.append(payload[pos:])
    return pdus
