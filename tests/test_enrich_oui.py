"""MAC vendors from IEEE registry listings: MA-L, MA-M and MA-S blocks, longest prefix first."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flowd.config import EnrichSettings
from flowd.decode import TemplateCache, decode_datagram
from flowd.enrich import chain as chain_module
from flowd.enrich.chain import EnrichmentChain
from flowd.enrich.oui import OuiRegistry, load_registry, registry_files
from flowd.output.documents import flow_document
from flowd.output.table import DocumentTable, LazyColumn
from flowd.server.batch_decoder import BatchDecoder
from flowd.server.metrics import WorkerStats
from tests.test_sflow_properties import datagram as sflow_datagram
from tests.test_sflow_properties import flow_sample, ipv4_tcp_frame, raw_header

# Written as the IEEE publishes them (CRLF line ends, tab-separated, address lines after each entry).
OUI_TXT = (
    "OUI/MA-L                                                    Organization                                 \r\n"
    "company_id                                                  Organization                                 \r\n"
    "                                                            Address                                      \r\n"
    "\r\n"
    "00-00-0C   (hex)\t\tCisco Systems, Inc\r\n"
    "00000C     (base 16)\t\tCisco Systems, Inc\r\n"
    "\t\t\t\t170 West Tasman Drive\r\n"
    "\t\t\t\tSan Jose  CA  95134\r\n"
    "\t\t\t\tUS\r\n"
    "\r\n"
    "70-B3-D5   (hex)\t\tIEEE Registration Authority\r\n"
    "70B3D5     (base 16)\t\tIEEE Registration Authority\r\n"
    "\t\t\t\t445 Hoes Lane\r\n"
    "\r\n"
    "20-85-93   (hex)\t\tIEEE Registration Authority\r\n"
    "208593     (base 16)\t\tIEEE Registration Authority\r\n"
    "\r\n"
    "AC-DE-48   (hex)\t\tEvil\x07Vendor\x1b[31m\r\n"
    "ACDE48     (base 16)\t\tEvil\x07Vendor\x1b[31m\r\n"
)
MAM_TXT = (
    "OUI                                                         Organization                                 \n"
    "OUI-28/MA-M Range                                           Organization                                 \n"
    "\n"
    "20-85-93   (hex)\t\tH3 Industries, Inc.\n"
    "A00000-AFFFFF     (base 16)\t\tH3 Industries, Inc.\n"
    "\t\t\t\t12758 W Deep Canyon Dr.\n"
    "\n"
    "20-85-93   (hex)\t\tIOG Products LLC\n"
    "B00000-BFFFFF     (base 16)\t\tIOG Products LLC\n"
)
OUI36_TXT = (
    "OUI                                                         Organization                                 \n"
    "OUI-36/MA-S Range                                           Organization                                 \n"
    "\n"
    "70-B3-D5   (hex)\t\tTELEPLATFORMS\n"
    "F2F000-F2FFFF     (base 16)\t\tTELEPLATFORMS\n"
    "\t\t\t\tPolbina st., 3/1\n"
    "\n"
    "70-B3-D5   (hex)\t\t2M Technology\n"
    "719000-719FFF     (base 16)\t\t2M Technology\n"
    "\n"
    "70-B3-D5   (hex)\t\tBroken Block\n"
    "719000-71A7FF     (base 16)\t\tBroken Block\n"
)


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    (tmp_path / "oui.txt").write_bytes(OUI_TXT.encode())
    (tmp_path / "mam.txt").write_text(MAM_TXT)
    (tmp_path / "oui36.txt").write_text(OUI36_TXT)
    return tmp_path


def test_longest_prefix_wins(registry_dir: Path) -> None:
    registry = load_registry(str(registry_dir))
    assert registry.entries == 4 + 2 + 2
    assert registry.lookup("00-00-0C-12-34-56") == "Cisco Systems, Inc"
    assert registry.lookup("00:00:0c:12:34:56") == "Cisco Systems, Inc"
    assert registry.lookup("0000.0c12.3456") == "Cisco Systems, Inc"
    # MA-M (28 bits) inside an OUI the IEEE lists for itself.
    assert registry.lookup("20-85-93-A1-23-45") == "H3 Industries, Inc."
    assert registry.lookup("20-85-93-BF-FF-FF") == "IOG Products LLC"
    assert registry.lookup("20-85-93-C0-00-00") == "IEEE Registration Authority"
    # MA-S (36 bits).
    assert registry.lookup("70-B3-D5-F2-F0-01") == "TELEPLATFORMS"
    assert registry.lookup("70-B3-D5-F2-FF-FF") == "TELEPLATFORMS"
    assert registry.lookup("70-B3-D5-71-9A-BC") == "2M Technology"
    assert registry.lookup("70-B3-D5-F3-00-00") == "IEEE Registration Authority"


def test_vendor_names_are_sanitised_and_bad_input_counted(registry_dir: Path) -> None:
    registry = load_registry(str(registry_dir))
    assert registry.lookup("AC-DE-48-00-00-01") == "EvilVendor[31m"
    assert registry.lookup("02-00-00-00-00-01") is None
    assert registry.lookup("not a mac") is None
    assert registry.lookup("00-00-0C-12-34") is None
    assert registry.lookup("ZZ-00-0C-12-34-56") is None
    stats = registry.stats()
    assert stats["oui_invalid"] == 3
    assert stats["oui_not_found"] == 1


def test_single_file_and_missing_path(registry_dir: Path, tmp_path: Path) -> None:
    assert registry_files(str(registry_dir / "mam.txt")) == [str(registry_dir / "mam.txt")]
    assert load_registry(str(registry_dir / "mam.txt")).entries == 2
    assert registry_files(str(tmp_path / "absent")) == []
    assert OuiRegistry().lookup("00-00-0C-12-34-56") is None


def test_chain_writes_vendor_fields(registry_dir: Path) -> None:
    chain = EnrichmentChain(EnrichSettings(oui_path=str(registry_dir)))
    documents = [
        {"source.mac": "00-00-0C-12-34-56", "destination.mac": "70-B3-D5-F2-F0-01"},
        {"source.mac": "00-00-0C-12-34-56", "destination.mac": "12-34-56-78-9A-BC"},
    ]
    asyncio.run(chain.enrich(documents))
    assert documents[0]["flowd.source_mac_vendor"] == "Cisco Systems, Inc"
    assert documents[0]["flowd.destination_mac_vendor"] == "TELEPLATFORMS"
    assert documents[1]["flowd.source_mac_vendor"] == "Cisco Systems, Inc"
    assert "flowd.destination_mac_vendor" not in documents[1]
    assert chain.stats()["oui_lookups"] == 3  # each distinct MAC once per batch


@pytest.mark.skipif(not Path("/usr/share/ieee-data/oui.txt").exists(), reason="Debian ieee-data not installed")
def test_debian_ieee_data() -> None:
    registry = load_registry("/usr/share/ieee-data")
    assert registry.entries > 30_000
    assert registry.lookup("00-00-0C-00-00-01") == "Cisco Systems, Inc"
    assert registry.lookup("70-B3-D5-F2-F0-00") == "TELEPLATFORMS"
    assert registry.lookup("20-85-93-D1-00-00") == "Shanghai Kenmyond Industrial Network Equipment Co.,Ltd"


def test_sflow_tables_look_up_macs_as_numbers_through_a_bounded_cache(
    registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sFlow samples read in numpy keep MACs as 48-bit numbers: their vendors equal those of the
    same samples decoded one by one (MACs as text), and repeat batches are answered by the cache."""
    frame = bytes.fromhex("70b3d5f2f00100000c123456") + ipv4_tcp_frame()[12:]
    unknown = bytes.fromhex("123456789abc208593b00001") + ipv4_tcp_frame()[12:]
    payload = sflow_datagram(flow_sample(raw_header(frame)), flow_sample(raw_header(unknown), sequence=2))
    exporter = ("192.0.2.9", 6343)
    parts = BatchDecoder(TemplateCache(), WorkerStats()).decode_parts([(payload, exporter, 1.0)] * 20)
    tables = [p for p in parts if isinstance(p, DocumentTable)]
    assert tables and all(isinstance(t.fields["source.mac"], LazyColumn) for t in tables)

    chain = EnrichmentChain(EnrichSettings(oui_path=str(registry_dir)))
    for table in tables:
        asyncio.run(chain.enrich_table(table))
    got = sorted(
        (d["source.mac"], d.get("flowd.source_mac_vendor"), d.get("flowd.destination_mac_vendor"))
        for t in tables
        for d in t.to_dicts()
    )
    single = [flow_document(r) for r in decode_datagram(payload, exporter, TemplateCache(), 1.0).flows]
    asyncio.run(EnrichmentChain(EnrichSettings(oui_path=str(registry_dir))).enrich(single))
    want = sorted(
        (d["source.mac"], d.get("flowd.source_mac_vendor"), d.get("flowd.destination_mac_vendor")) for d in single
    )
    assert got == sorted(want * 20)
    assert ("00-00-0C-12-34-56", "Cisco Systems, Inc", "TELEPLATFORMS") in got
    assert ("20-85-93-B0-00-01", "IOG Products LLC", None) in got
    stats = chain.stats()
    assert stats["oui_lookups"] == 4  # two MACs each way, once
    hits = stats["oui_cache_hits"]
    parts = BatchDecoder(TemplateCache(), WorkerStats()).decode_parts([(payload, exporter, 2.0)] * 20)
    for table in (p for p in parts if isinstance(p, DocumentTable)):
        asyncio.run(chain.enrich_table(table))
    assert chain.stats()["oui_lookups"] == 4 and chain.stats()["oui_cache_hits"] == hits + 4

    monkeypatch.setattr(chain_module, "MAX_VENDOR_GROUPS", 3)
    asyncio.run(chain.enrich([{"source.mac": f"00-00-0C-00-00-0{i}"} for i in range(3)]))
    assert chain.stats()["oui_cache_evictions"] >= 3  # the full cache was emptied, not grown
    assert len(chain._vendor_groups) <= 3
