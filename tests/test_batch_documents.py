"""The columnar document path must produce exactly what the per-record path produces."""

from __future__ import annotations

import glob

import pytest

from benchmarks import traffic
from flowd.capture import read_datagrams
from flowd.decode import TemplateCache, decode_datagram
from flowd.errors import DecodeError
from flowd.output.batch_documents import documents_for
from flowd.output.documents import flow_document
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


@pytest.mark.parametrize("builder", [traffic.netflow_v5, traffic.netflow_v9, traffic.ipfix])
def test_columnar_documents_on_generated_traffic(builder: object) -> None:
    templates_, data = builder()  # type: ignore[operator]
    cache = TemplateCache()
    for datagram in [*templates_, *data]:
        result = decode_datagram(datagram, ("192.0.2.1", 2055), cache, 1.0)
        assert documents_for(result.flows) == [flow_document(record) for record in result.flows]
