"""ElastiFlow 4.x settings carried over: ELASTIFLOW_GEOIP_DB_PATH and the user settings files.

The dictionary reader is checked against PyYAML (a test dependency only) on files written as
ElastiFlow's examples are; the mapped settings against what the files say.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from flowd.config import EnrichSettings, load_settings
from flowd.elastiflow_settings import read_dictionary, user_settings
from flowd.enrich.chain import EnrichmentChain
from flowd.errors import ConfigError
from tests.shared_data import GEOIP

HEADER = "#" + "-" * 78 + "\n# Copyright notice and licence lines, as ElastiFlow's files start\n#" + "-" * 78 + "\n\n"
IF_NAMES = HEADER + (
    "# Example\n"
    '"192.0.2.11::ifName.2": "eth0"\n'
    '"192.0.2.11::ifName.10": "ge-0/0/10"\n'
    "\"2001:db8::1::ifName.7\": 'xe-1/2/3 (uplink)'\n"
    '"198.51.100.4::ifName.3": "say \\"hi\\" # not a comment"   # a comment\n'
)
RATES = HEADER + '# Examples\n"192.0.2.1": 1024\n"192.0.2.2": 512\n198.51.100.9: 100\n"203.0.113.5": 0\n'


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text", [IF_NAMES, RATES, "", "---\n# nothing\n", "a: b\n'c d': 'it''s'\ne:\n"])
def test_dictionaries_read_as_yaml_reads_them(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "d.yml", text)
    assert read_dictionary(path) == {str(k): ("" if v is None else v) for k, v in (yaml.safe_load(text) or {}).items()}


OUTSIDE_THE_SUBSET = [
    "- a list item",
    "no colon here",
    '"unterminated: 1',
    "key: [1, 2]",
    "key: {a: 1}",
    "key: a: b",
    "key: |",
]


@pytest.mark.parametrize("line", OUTSIDE_THE_SUBSET)
def test_lines_outside_the_subset_stop_start_up_naming_the_line(tmp_path: Path, line: str) -> None:
    path = write(tmp_path, "d.yml", f'"ok": 1\n{line}\n')
    with pytest.raises(ConfigError, match=r"d\.yml:2: not a `key: value` line"):
        read_dictionary(path)


def test_user_settings_become_interface_names_and_default_sampling_rates(tmp_path: Path) -> None:
    write(tmp_path, "ifName.yml", IF_NAMES)
    write(tmp_path, "sampling_interval.yml", RATES)
    write(tmp_path, "applications.yml", '"10.1.1.5:8443": "intranet-portal"\n"[2001:db8::10]:443": "v6-portal"\n')
    names, rates, applications = user_settings(str(tmp_path))
    assert applications == {"10.1.1.5:8443": "intranet-portal", "[2001:db8::10]:443": "v6-portal"}
    assert names == {
        "192.0.2.11:2": "eth0",
        "192.0.2.11:10": "ge-0/0/10",
        "2001:db8::1:7": "xe-1/2/3 (uplink)",
        "198.51.100.4:3": 'say "hi" # not a comment',
    }
    assert rates == {"192.0.2.1": 1024, "192.0.2.2": 512, "198.51.100.9": 100}  # 0 scales nothing

    toml = tmp_path / "flowd.toml"
    toml.write_text('[enrich]\ninterface_names = { "192.0.2.11:2" = "old", "192.0.2.99:1" = "kept" }\n')
    loaded = load_settings(toml, {"ELASTIFLOW_USER_SETTINGS_PATH": str(tmp_path)})
    enrich = loaded.settings.enrich
    assert enrich.interface_names == {**names, "192.0.2.99:1": "kept"}  # the file wins for its keys
    assert enrich.default_sampling_rates == rates
    assert enrich.endpoint_applications == applications
    assert loaded.sources["enrich.interface_names"] == "env:ELASTIFLOW_USER_SETTINGS_PATH (ifName.yml)"

    # The chain names interfaces from them as from its own table.
    chain = EnrichmentChain(EnrichSettings(oui_lookup=False, interface_names=enrich.interface_names))
    documents = [{"observer.ip": "2001:db8::1", "observer.ingress.interface.id": 7}]
    asyncio.run(chain.enrich(documents))
    assert documents[0]["observer.ingress.interface.name"] == "xe-1/2/3 (uplink)"


def test_missing_files_give_nothing_and_bad_entries_name_the_file(tmp_path: Path) -> None:
    assert user_settings(str(tmp_path)) == ({}, {}, {})
    with pytest.raises(ConfigError, match=r"ELASTIFLOW_USER_SETTINGS_PATH: .* is not a directory"):
        load_settings(None, {"ELASTIFLOW_USER_SETTINGS_PATH": str(tmp_path / "absent")})
    assert load_settings(None, {"ELASTIFLOW_USER_SETTINGS_PATH": str(tmp_path)}).settings.enrich.interface_names == {}
    write(tmp_path, "ifName.yml", '"192.0.2.1::ifDescr.2": "eth0"\n')
    with pytest.raises(ConfigError, match=r"ifName\.yml: '192\.0\.2\.1::ifDescr\.2' is not"):
        user_settings(str(tmp_path))
    (tmp_path / "ifName.yml").unlink()
    write(tmp_path, "sampling_interval.yml", '"192.0.2.1": "fast"\n')
    with pytest.raises(ConfigError, match="is not an integer"):
        load_settings(None, {"ELASTIFLOW_USER_SETTINGS_PATH": str(tmp_path)})
    write(tmp_path, "sampling_interval.yml", '"not-an-address": 100\n')
    with pytest.raises(ConfigError, match=r"enrich\.default_sampling_rates"):
        load_settings(None, {"ELASTIFLOW_USER_SETTINGS_PATH": str(tmp_path)})


def test_geoip_db_path_names_elastiflows_database_files() -> None:
    loaded = load_settings(None, {"ELASTIFLOW_GEOIP_DB_PATH": str(GEOIP)})
    enrich = loaded.settings.enrich
    assert enrich.geoip_city_db == str(GEOIP / "GeoLite2-City.mmdb")
    assert enrich.geoip_asn_db == str(GEOIP / "GeoLite2-ASN.mmdb")
    assert loaded.sources["enrich.geoip_asn_db"] == "env:ELASTIFLOW_GEOIP_DB_PATH"
    # flowd's own variable still wins.
    both = load_settings(None, {"ELASTIFLOW_GEOIP_DB_PATH": "/x", "FLOWD_ENRICH_GEOIP_ASN_DB": "/y/asn.mmdb"})
    assert (both.settings.enrich.geoip_city_db, both.settings.enrich.geoip_asn_db) == (
        "/x/GeoLite2-City.mmdb",
        "/y/asn.mmdb",
    )
