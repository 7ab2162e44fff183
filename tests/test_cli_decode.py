"""`flowd decode` as an operator runs it: files that cannot be read are named, not tracebacks."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from flowd.cli import main
from tests.shared_data import CORPUS

NFV5 = CORPUS / "akvorado" / "netflow" / "nfv5.pcap"


def test_missing_file_is_named_and_the_others_still_decode(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    missing = tmp_path / "missing.pcap"
    assert main(["decode", str(NFV5), str(missing)]) == 1
    out, err = capsysbinary.readouterr()
    assert len([orjson.loads(line) for line in out.splitlines()]) == 29
    text = err.decode()
    assert f"flowd: {missing}: cannot read it: No such file or directory" in text
    assert "Traceback" not in text
    assert "flows=29" in text


def test_directory_and_cut_pcap_header_are_named(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(NFV5.read_bytes()[:10])
    assert main(["decode", str(tmp_path), str(cut)]) == 1
    out, err = capsysbinary.readouterr()
    assert out == b""
    text = err.decode()
    assert f"flowd: {tmp_path}: cannot read it: Is a directory" in text
    assert f"flowd: {cut}: pcap file header cut short (10 of 24 bytes)" in text


def test_readable_files_exit_0(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["decode", str(NFV5)]) == 0
    assert len(capsysbinary.readouterr().out.splitlines()) == 29
