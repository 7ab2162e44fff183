"""sFlow datagrams made only of flow samples of the common shape, walked a receive batch at a time.

`decode_sflow` walks a datagram's samples in Python: a few `unpack_from` calls per sample, about
half of what an sFlow sample costs a worker before its documents are rendered. A busy switch's
datagrams hold nothing but flow samples of one shape (`sflow_batch.walk_simple_sample`), so here
all the datagrams of a receive batch are walked at once in numpy: the sample chains a sample
index at a time across every datagram, then every sample's words by gathers.

A datagram is taken only when all of it is read this way: an IPv4 or IPv6 agent, a length and
every sample and record length a multiple of four (XDR's alignment, so the whole batch is one
array of 32-bit words), and every declared sample a flow sample that `walk_simple_sample` would
keep. For such a datagram `decode_sflow` gives no error and exactly these rows (a test holds the
two to it); any other datagram is left to `decode_sflow`, which decodes or reports it as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from socket import AF_INET6, inet_ntoa, inet_ntop
from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.decode.headers import HEADER_PROTOCOL_ETHERNET
from flowd.decode.sflow_batch import (
    INTERFACE_INTERNAL,
    INTERFACE_INTERNAL_EXPANDED,
    MAX_RECORDS,
    RECORD_RAW_HEADER,
    RECORD_SWITCH,
    ROUTING_DECODERS,
    SampleBatch,
    SampleDecoder,
    WalkedColumns,
)
from flowd.decode.sflow_routing_walk import walked_routing
from flowd.model import Exporter

SFLOW_V5_PREFIX = b"\x00\x00\x00\x05"
"""The first word of an sFlow v5 datagram."""
MAX_SAMPLES = 64
"""Datagrams declaring more samples go to `decode_sflow` (a 1,500-byte datagram holds ~10)."""

_RECORD_KINDS = (RECORD_RAW_HEADER, RECORD_SWITCH, *ROUTING_DECODERS)
Array = npt.NDArray[Any]
Item = tuple[bytes, Exporter, float]
"""A datagram, its exporter, and when it was received."""


class _Words:
    """The batch's datagrams as one array of big-endian words, read with bounds clipped (a read
    past the end gives a word of the last datagram, never an error: the rows it feeds are refused
    by the checks that go with it)."""

    __slots__ = ("last", "words")

    def __init__(self, payloads: Sequence[bytes]) -> None:
        self.words = np.frombuffer(b"".join(payloads), dtype=">u4")
        self.last = len(self.words) - 1

    def __call__(self, index: Array) -> Array:
        words: Array = self.words[np.minimum(np.maximum(index, 0), self.last)]  # np.clip costs more per call
        return words.astype(np.int64)


def walk_sflow_datagrams(items: Sequence[Item], decode: SampleDecoder) -> tuple[SampleBatch | None, list[int]]:
    """The samples of every datagram in `items` made wholly of common-shape flow samples, as one
    `SampleBatch` (None if there are none), and the indices of the other items, for `decode_sflow`.

    `decode` is the per-sample decoder the batch decodes records with (`sflow.decode_flow_sample`).
    """
    aligned = [i for i, item in enumerate(items) if len(item[0]) % 4 == 0 and len(item[0]) >= 28]
    left = sorted(set(range(len(items))) - set(aligned))
    if not aligned:
        return None, left
    payloads = [items[i][0] for i in aligned]
    word = _Words(payloads)
    sizes = np.array([len(p) // 4 for p in payloads], dtype=np.int64)
    bases = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    ends = bases + sizes

    # The datagram header: version, agent type and address, sub-agent, sequence, uptime, samples.
    agent_type = word(bases + 1)
    agent_words = np.select([agent_type == 1, agent_type == 2], [1, 4], -1)
    tail = bases + 2 + agent_words
    declared = word(tail + 3)
    ok = (word(bases) == 5) & (agent_words > 0) & (tail + 4 <= ends)
    ok &= (declared > 0) & (declared <= MAX_SAMPLES) & (declared * 10 <= ends - tail - 4)  # 40 bytes each at least

    starts, stops, formats, owners, places = _chains(word, tail + 4, ends, declared, ok)
    samples = _samples(word, starts, stops, formats)
    routing = {kind: samples.pop(f"_routing_{kind}") for kind in ROUTING_DECODERS}
    kept = samples.pop("_kept") & ok[owners]  # the routing records of refused datagrams are not decoded
    samples["routing"] = walked_routing(word, payloads, bases, owners, routing, kept)
    ok[owners[~kept]] = False  # one sample not of the shape: the datagram goes whole
    kept = ok[owners]
    order = np.lexsort((places[kept], owners[kept]))  # datagram after datagram, samples in order
    rows = np.flatnonzero(kept)[order]
    taken = np.flatnonzero(ok)
    left = sorted(left + [aligned[i] for i in np.flatnonzero(~ok).tolist()])
    if not len(taken):
        return None, left

    owner = owners[rows]
    offset = bases[owner]  # words before the row's datagram in the joined array
    columns = WalkedColumns(
        start=(starts[rows] - offset) * 4,
        end=(stops[rows] - offset) * 4,
        expanded=formats[rows] == 3,
        header_offset=(samples.pop("header_at")[rows] - offset) * 4,
        **{name: values[rows] for name, values in samples.items()},
    )
    batch = SampleBatch(decode, columns)
    batch.counts = np.bincount(owner, minlength=len(ok))[taken].tolist()
    header = np.stack([word(tail[taken] + k) for k in range(3)], axis=1).tolist()
    agents: dict[bytes, str] = {}
    for number, (sub_agent, sequence, uptime) in zip(taken.tolist(), header, strict=True):
        data, exporter, received_at = items[aligned[number]]
        raw = bytes(data[8 : 12 if data[7] == 1 else 24])
        agent = agents.get(raw)
        if agent is None:
            agent = agents[raw] = inet_ntoa(raw) if len(raw) == 4 else inet_ntop(AF_INET6, raw)
        batch.datagrams.append((data, exporter, received_at, agent, sub_agent, sequence, uptime))
    return batch, left


def _chains(
    word: _Words, first: Array, ends: Array, declared: Array, ok: Array
) -> tuple[Array, Array, Array, Array, Array]:
    """Every declared sample of the datagrams still `ok`, a sample index at a time: its body's
    first word, the word after it, its format, its datagram and its place there. A datagram
    whose chain breaks (a format other than a flow sample, an unaligned length, a sample past
    the end) is marked not `ok`."""
    position = first.copy()
    found: list[tuple[Array, ...]] = []
    for place in range(int(declared[ok].max(initial=0))):
        walking = np.flatnonzero(ok & (declared > place))
        at = position[walking]
        data_format, length = word(at), word(at + 1)
        stop = at + 2 + length // 4
        good = (at + 2 <= ends[walking]) & (stop <= ends[walking]) & (length % 4 == 0)
        good &= (data_format == 1) | (data_format == 3)
        ok[walking[~good]] = False
        walking, at, stop, data_format = walking[good], at[good], stop[good], data_format[good]
        position[walking] = stop
        found.append((at + 2, stop, data_format, walking, np.full(len(walking), place)))
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty, empty
    starts, stops, formats, owners, places = (np.concatenate(values) for values in zip(*found, strict=True))
    return starts, stops, formats, owners, places


def _samples(word: _Words, starts: Array, stops: Array, formats: Array) -> dict[str, Array]:
    """The `walk_simple_sample` values of each flow sample at `starts` (body words), and `_kept`:
    whether it has the common shape."""
    expanded = formats == 3
    count = len(starts)
    head = word(starts[:, None] + np.arange(11))
    if count:
        compact = head[~expanded]
        source_id, in_word, out_word = compact[:, 1], compact[:, 5], compact[:, 6]
        head[~expanded, 1:11] = np.stack(  # laid out as the expanded sample is
            [
                source_id >> 24,
                source_id & 0xFFFFFF,
                compact[:, 2],
                compact[:, 3],
                compact[:, 4],
                in_word >> 30,
                in_word & 0x3FFFFFFF,
                out_word >> 30,
                out_word & 0x3FFFFFFF,
                compact[:, 7],
            ],
            axis=1,
        )
    in_format, in_value, out_format, out_value, records = (head[:, k] for k in range(6, 11))
    kept = (stops - starts >= np.where(expanded, 11, 8)) & (in_format == 0) & (out_format == 0)
    kept &= (in_value != INTERFACE_INTERNAL) & (out_value != INTERFACE_INTERNAL)
    kept &= (in_value != INTERFACE_INTERNAL_EXPANDED) & (out_value != INTERFACE_INTERNAL_EXPANDED)
    kept &= (records >= 1) & (records <= MAX_RECORDS)

    # The records, a record index at a time: each within the sample, aligned, of at least 16
    # bytes, one raw header and at most one record of each other kind; where each one's body is.
    at = starts + np.where(expanded, 11, 8)
    bodies = {kind: np.full(count, -1, dtype=np.int64) for kind in _RECORD_KINDS}
    body_stops = {kind: np.zeros(count, dtype=np.int64) for kind in ROUTING_DECODERS}
    raw_length = np.zeros(count, dtype=np.int64)
    for index in range(MAX_RECORDS):
        active = kept & (records > index)
        if not active.any():
            break
        record_format, length = word(at), word(at + 1)
        stop = at + 2 + length // 4
        good = (at + 2 <= stops) & (length >= 16) & (length % 4 == 0) & (stop <= stops)
        known = np.isin(record_format, _RECORD_KINDS)
        kept &= ~active | (good & known)
        for kind, body in bodies.items():
            this = active & (record_format == kind)
            kept &= ~(this & (body >= 0))  # a second record of one kind
            body[this] = at[this] + 2
            if kind == RECORD_RAW_HEADER:
                raw_length[this] = length[this]
            elif kind in body_stops:
                body_stops[kind][this] = stop[this]
        at = np.where(active, stop, at)
    raw = bodies[RECORD_RAW_HEADER]
    kept &= raw >= 0
    header = word(raw[:, None] + np.arange(4))
    kept &= (header[:, 0] == HEADER_PROTOCOL_ETHERNET) & (header[:, 3] <= raw_length - 16)
    switch_at = bodies[RECORD_SWITCH]
    has_switch = switch_at >= 0
    switch = word(switch_at[:, None] + np.arange(4))
    switch[~has_switch] = 0
    return {
        "_kept": kept,
        "sequence": head[:, 0],
        "id_type": head[:, 1],
        "id_index": head[:, 2],
        "rate": head[:, 3],
        "pool": head[:, 4],
        "drops": head[:, 5],
        "input_ifindex": in_value,
        "output_ifindex": out_value,
        "frame_length": header[:, 1],
        "stripped": header[:, 2],
        "header_length": header[:, 3],
        "header_at": raw + 4,
        "has_switch": has_switch,
        "switch": switch,
        **{f"_routing_{kind}": np.stack([bodies[kind], body_stops[kind]], axis=1) for kind in ROUTING_DECODERS},
    }
