"""The corpus and GeoIP tests skip without their data; this test makes a missing copy a failure."""

from __future__ import annotations

from tests.shared_data import CORPUS, GEOIP


def test_corpus_and_geoip_databases_are_found() -> None:
    assert (CORPUS / "MANIFEST.md").is_file(), f"shared corpus not found at {CORPUS} (set FLOWD_CORPUS)"
    assert (GEOIP / "GeoIP2-City-Test.mmdb").is_file(), f"GeoIP test databases not found at {GEOIP}"
