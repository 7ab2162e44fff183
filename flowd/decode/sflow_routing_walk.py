"""The extended router and gateway records of a receive batch's walked sFlow samples, read in numpy.

A router's flow samples carry these two records beside the raw header: next hop and prefix
lengths (router), BGP next hop, AS numbers, the AS path and communities (gateway). Decoded one
sample at a time they cost a worker more than the rest of the sample, so here every sample's
records are read at once: the fixed parts by gathers, the AS path (one segment, the usual case)
and the communities as padded word matrices cut to their lengths. Each sample gets the fields
dict the per-sample decoder (`sflow_routing`) would set. A record of another layout (several
AS path segments, an unknown next-hop type) is decoded by those functions (`routing_fields`);
one that does not decode leaves its sample out of the walk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from socket import AF_INET6, inet_ntoa, inet_ntop
from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.decode.sflow_batch import RECORD_GATEWAY, RECORD_ROUTER, object_column, routing_fields
from flowd.decode.sflow_routing import ADDRESS_IPV4, ADDRESS_IPV6, MAX_LIST

Array = npt.NDArray[Any]
Words = Callable[[Array], Array]
"""Words of the joined batch at word indices (bounds clipped), as int64."""
Fields = dict[str, Any]


def walked_routing(
    word: Words, payloads: Sequence[bytes], bases: Array, owners: Array, records: dict[int, Array], kept: Array
) -> Array:
    """Each sample's router and gateway fields (None without those records), one object each.

    `records` holds, per record kind, each sample's (body, end) in words of the joined batch (-1:
    none); `owners` is each sample's datagram and `bases` each datagram's first word. Samples
    whose records do not decode are no longer `kept`.
    """
    count = len(kept)
    router, gateway = records[RECORD_ROUTER], records[RECORD_GATEWAY]
    routers = _router_fields(word, router, kept & (router[:, 0] >= 0))
    gateways = _gateway_fields(word, gateway, kept & (gateway[:, 0] >= 0))
    rows = np.flatnonzero(kept & ((router[:, 0] >= 0) | (gateway[:, 0] >= 0)))
    router_first = (router[rows, 0] < gateway[rows, 0]).tolist()  # keys in the sample's record order
    values: list[Fields | None] = []
    for row, first in zip(rows.tolist(), router_first, strict=True):
        found_router, found_gateway = routers.get(row), gateways.get(row)
        fields: Fields | None
        if found_router is _SLOW or found_gateway is _SLOW:
            fields = _per_sample(payloads, bases, owners, records, row)
            if fields is None:
                kept[row] = False
        elif found_router is None:
            fields = found_gateway
        elif found_gateway is None:
            fields = found_router
        else:
            fields = {**found_router, **found_gateway} if first else {**found_gateway, **found_router}
        values.append(fields)
    routing = object_column([None] * count)
    routing[rows] = object_column(values)
    return routing


_SLOW: Fields = {}
"""The record's layout is left to the per-sample functions."""


def _per_sample(
    payloads: Sequence[bytes], bases: Array, owners: Array, records: dict[int, Array], row: int
) -> Fields | None:
    owner = int(owners[row])
    base = int(bases[owner])
    found = sorted(
        (int(bounds[row, 0]), kind, int(bounds[row, 1])) for kind, bounds in records.items() if bounds[row, 0] >= 0
    )
    return routing_fields(payloads[owner], [(kind, (body - base) * 4, (stop - base) * 4) for body, kind, stop in found])


def _router_fields(word: Words, bounds: Array, present: Array) -> dict[int, Fields]:
    """Extended router fields by row: next hop, source and destination prefix lengths."""
    rows = np.flatnonzero(present)
    body, stop = bounds[rows, 0], bounds[rows, 1]
    hops, width = _next_hops(word, body)
    fast = (width > 0) & (body + 1 + width + 2 <= stop)
    masks = word((body + 1 + width)[:, None] + np.arange(2))
    out: dict[int, Fields] = {}
    for row, ok, hop, (source_mask, destination_mask) in zip(
        rows.tolist(), fast.tolist(), hops, masks.tolist(), strict=True
    ):
        out[row] = {"next_hop": hop, "src_mask_len": source_mask, "dst_mask_len": destination_mask} if ok else _SLOW
    return out


def _gateway_fields(word: Words, bounds: Array, present: Array) -> dict[int, Fields]:
    """Extended gateway fields by row, for records with at most one AS path segment."""
    rows = np.flatnonzero(present)
    body, stop = bounds[rows, 0], bounds[rows, 1]
    hops, width = _next_hops(word, body)
    at = body + 1 + width
    fixed = word(at[:, None] + np.arange(4))  # router AS, source AS, source peer AS, segments
    segments = fixed[:, 3]
    fast = (width > 0) & (at + 4 <= stop) & (segments <= 1)
    path_at = at + 4 + 2 * segments  # the path's words, after (type, length) of its one segment
    segment_type, path_length = word(at + 4), np.where(segments == 1, word(at + 5), 0)
    fast &= (path_at <= stop) & (path_length <= MAX_LIST) & (path_at + path_length <= stop)
    communities_at = path_at + np.where(fast, path_length, 0)
    community_count = word(communities_at)
    fast &= (communities_at + 1 <= stop) & (community_count <= MAX_LIST)
    preference_at = communities_at + 1 + np.where(fast, community_count, 0)
    fast &= preference_at + 1 <= stop
    paths = _lists(word, path_at, np.where(fast, path_length, 0))
    communities = _lists(word, communities_at + 1, np.where(fast, community_count, 0))
    preferences = word(preference_at).tolist()
    segment_types = segment_type.tolist()
    out: dict[int, Fields] = {}
    for row, ok, hop, (router_as, source_as, source_peer_as, segment_count), path, listed, preference, kind in zip(
        rows.tolist(), fast.tolist(), hops, fixed.tolist(), paths, communities, preferences, segment_types, strict=True
    ):
        if not ok:
            out[row] = _SLOW
        elif path:  # the path starts at the peer; its last AS originated the destination prefix
            out[row] = {
                "bgp_next_hop": hop,
                "router_as": router_as,
                "src_as": source_as,
                "src_peer_as": source_peer_as,
                "dst_as_path": path,
                "dst_as_path_segment_types": [kind],
                "dst_peer_as": path[0],
                "dst_as": path[-1],
                "communities": listed,
                "local_pref": preference,
            }
        else:
            out[row] = {
                "bgp_next_hop": hop,
                "router_as": router_as,
                "src_as": source_as,
                "src_peer_as": source_peer_as,
                "dst_as_path": path,
                "dst_as_path_segment_types": [kind] if segment_count else [],
                "communities": listed,
                "local_pref": preference,
            }
    return out


def _next_hops(word: Words, body: Array) -> tuple[list[str | None], Array]:
    """Each record's leading sFlow address as text (each distinct one formatted once), and its
    width in words after the type word: 1 (IPv4), 4 (IPv6), 0 for any other type."""
    kind = word(body)
    width = np.select([kind == ADDRESS_IPV4, kind == ADDRESS_IPV6], [1, 4], 0)
    words = word(body[:, None] + 1 + np.arange(4))
    raw = words.astype(">u4").tobytes()  # 16 bytes a row
    known: dict[int | bytes, str] = {}  # IPv4 next hops by their word, IPv6 ones by their bytes
    texts: list[str | None] = []
    for row, (size, first) in enumerate(zip(width.tolist(), words[:, 0].tolist(), strict=True)):
        if size == 1:
            text = known.get(first)
            if text is None:
                text = known[first] = inet_ntoa(raw[16 * row : 16 * row + 4])
        elif size == 4:
            packed = raw[16 * row : 16 * row + 16]
            text = known.get(packed)
            if text is None:
                text = known[packed] = inet_ntop(AF_INET6, packed)
        else:
            text = None
        texts.append(text)
    return texts, width


def _lists(word: Words, start: Array, lengths: Array) -> list[list[int]]:
    """The words `start[i] .. start[i] + lengths[i]` of each row, as lists."""
    longest = int(lengths.max(initial=0))
    if not longest:
        return [[] for _ in range(len(start))]
    matrix = word(start[:, None] + np.arange(longest)).tolist()
    return [values[:length] for values, length in zip(matrix, lengths.tolist(), strict=True)]
