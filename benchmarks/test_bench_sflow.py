"""sFlow v5 decode throughput: datagrams of 8 flow samples, each a 128-byte Ethernet/IPv4/TCP header.

Run with `pytest --benchmark-enable benchmarks/test_bench_sflow.py`; `extra_info["samples_per_s"]` is flow samples
per second on one core, decoded into per-sample records, or into document tables as `flowd run` does (the design
target is >= 300,000).
"""

from __future__ import annotations

import struct
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from flowd.decode.sflow import decode_sflow
from flowd.decode.sflow_batch import SampleBatch, join_sample_batches
from flowd.output.sflow_table import sample_batch_tables

SAMPLES_PER_DATAGRAM = 8
HEADER_BYTES = 128
DATAGRAMS = 64


def _xdr_record(data_format: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!II", data_format, len(body)) + body


def _flow_sample(index: int) -> bytes:
    packet = (
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src=f"10.0.{index % 256}.1", dst="192.0.2.10", ttl=61)
        / TCP(sport=40000 + index, dport=443, flags="PA")
        / (b"x" * 1400)
    )
    frame = bytes(packet)
    raw = struct.pack("!IIII", 1, len(frame) + 4, 4, HEADER_BYTES) + frame[:HEADER_BYTES]
    switch = struct.pack("!IIII", 100, 0, 200, 0)
    records = _xdr_record(1, raw) + _xdr_record(1001, switch)
    body = struct.pack("!8I", index, 7, 1024, index * 1024, 0, 7, 9, 2) + records
    return _xdr_record(1, body)


def build_datagram(sequence: int) -> bytes:
    """One sFlow v5 datagram from IPv4 agent 192.0.2.1 with 8 flow samples."""
    samples = b"".join(_flow_sample(sequence * SAMPLES_PER_DATAGRAM + i) for i in range(SAMPLES_PER_DATAGRAM))
    header = struct.pack("!II4sIIII", 5, 1, bytes([192, 0, 2, 1]), 0, sequence, 123456, SAMPLES_PER_DATAGRAM)
    return header + samples


def test_decode_sflow_flow_samples(benchmark: Any) -> None:
    """Per-sample records (what `flowd decode` and every record consumer get)."""
    datagrams = [build_datagram(n) for n in range(DATAGRAMS)]
    exporter = ("192.0.2.1", 6343)

    def decode_all() -> int:
        count = 0
        for datagram in datagrams:
            count += sum(1 for _ in decode_sflow(datagram, exporter, 1_764_072_000.0).flows)  # materialised
        return count

    assert decode_all() == DATAGRAMS * SAMPLES_PER_DATAGRAM
    benchmark(decode_all)
    _report(benchmark, len(datagrams[0]))


def test_decode_sflow_flow_samples_to_columns(benchmark: Any) -> None:
    """What `flowd run` does: walk the samples, then read a receive batch's headers in numpy
    into document tables (`flowd.output.sflow_table.sample_batch_tables`)."""
    datagrams = [build_datagram(n) for n in range(DATAGRAMS)]
    exporter = ("192.0.2.1", 6343)

    def decode_all() -> int:
        batches = [
            part
            for datagram in datagrams
            for part in decode_sflow(datagram, exporter, 1_764_072_000.0).flows.parts
            if isinstance(part, SampleBatch)
        ]
        tables, left = sample_batch_tables(join_sample_batches(batches))
        return sum(len(t) for t in tables) + len(left)

    assert decode_all() == DATAGRAMS * SAMPLES_PER_DATAGRAM
    benchmark(decode_all)
    _report(benchmark, len(datagrams[0]))


def _report(benchmark: Any, datagram_bytes: int) -> None:
    benchmark.extra_info["datagram_bytes"] = datagram_bytes
    if benchmark.stats is not None:  # None under --benchmark-disable (the default addopts)
        samples = DATAGRAMS * SAMPLES_PER_DATAGRAM
        benchmark.extra_info["samples_per_s"] = round(samples / benchmark.stats.stats.mean)
