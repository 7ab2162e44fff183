"""The extended router and gateway records of a receive batch's walked sFlow samples, read in numpy.

A router's flow samples carry these two records beside the raw header: next hop and prefix
lengths (router), BGP next hop, AS numbers, the AS path and communities (gateway). Decoded one
sample at a time they cost a worker more than the rest of the sample, so here every sample's
records are read at once: the fixed parts by gathers, the AS path (one segment, the usual case)
and the communities as padded word matrices cut to their lengths. Each sample gets the fields
the per-sample decoder (`sflow_routing`) would set, packed in a tuple per sample whose layout
(which records, whether the path is empty) names the keys (`sflow_batch.ROUTING_KEYS`), so
the table builder takes columns from them without a dict per sample. A record of another layout (several
AS path segments, an unknown next-hop type) is decoded by those functions (`routing_fields`);
one that does not decode leaves its sample out of the walk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat
from socket import AF_INET6, inet_ntoa, inet_ntop
from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.decode.sflow_batch import (
    RECORD_GATEWAY,
    RECORD_ROUTER,
    ROUTING_GATEWAY,
    ROUTING_PATH,
    ROUTING_ROUTER,
    object_column,
    routing_fields,
)
from flowd.decode.sflow_routing import ADDRESS_IPV4, ADDRESS_IPV6, MAX_LIST

Array = npt.NDArray[Any]
Words = Callable[[Array], Array]
"""Words of the joined batch at word indices (bounds clipped), as int64."""


def walked_routing(
    word: Words, payloads: Sequence[bytes], bases: Array, owners: Array, records: dict[int, Array], kept: Array
) -> Array:
    """Each sample's router and gateway fields packed (`sflow_batch.ROUTING_KEYS`), one object
    each, None without those records.

    `records` holds, per record kind, each sample's (body, end) in words of the joined batch (-1:
    none); `owners` is each sample's datagram and `bases` each datagram's first word. Samples
    whose records do not decode are no longer `kept`.
    """
    router, gateway = records[RECORD_ROUTER], records[RECORD_GATEWAY]
    rows = np.flatnonzero(kept & ((router[:, 0] >= 0) | (gateway[:, 0] >= 0)))
    routers = _Router(word, router[rows])
    gateways = _Gateway(word, gateway[rows])
    slow = (routers.present & ~routers.fast) | (gateways.present & ~gateways.fast)
    code = np.where(
        slow, -1, routers.present * ROUTING_ROUTER + gateways.present * ROUTING_GATEWAY + gateways.path * ROUTING_PATH
    )
    routing = object_column([None] * len(kept))
    for layout in np.unique(code).tolist():
        chosen = np.flatnonzero(code == layout)
        if layout < 0:
            for position in chosen.tolist():
                row = int(rows[position])
                fields = _per_sample(payloads, bases, owners, records, row)
                if fields is None:
                    kept[row] = False
                routing[row] = fields
            continue
        columns = (routers.columns(chosen) if layout & ROUTING_ROUTER else []) + (
            gateways.columns(chosen, bool(layout & ROUTING_PATH)) if layout & ROUTING_GATEWAY else []
        )
        packed = zip(repeat(layout, len(chosen)), *columns, strict=True)
        routing[rows[chosen]] = np.fromiter(packed, dtype=object, count=len(chosen))
    return routing


def _per_sample(
    payloads: Sequence[bytes], bases: Array, owners: Array, records: dict[int, Array], row: int
) -> tuple[Any, ...] | None:
    """`routing_fields` of one sample's records, in their order, from its datagram's bytes."""
    owner = int(owners[row])
    base = int(bases[owner])
    found = sorted(
        (int(bounds[row, 0]), kind, int(bounds[row, 1])) for kind, bounds in records.items() if bounds[row, 0] >= 0
    )
    return routing_fields(payloads[owner], [(kind, (body - base) * 4, (stop - base) * 4) for body, kind, stop in found])


class _Router:
    """Extended router records, one per sample (`bounds` (body, end), body -1: none): next hop,
    source and destination prefix lengths. `fast`: read here (else by the per-sample functions)."""

    __slots__ = ("fast", "hops", "masks", "present")

    def __init__(self, word: Words, bounds: Array) -> None:
        body, stop = bounds[:, 0], bounds[:, 1]
        self.present = body >= 0
        self.hops, width = _next_hops(word, body, self.present)
        self.fast = (width > 0) & (body + 1 + width + 2 <= stop)
        self.masks = word((body + 1 + width)[:, None] + np.arange(2))

    def columns(self, chosen: Array) -> list[Sequence[Any]]:
        """The values of `sflow_batch.ROUTER_KEYS` for the `chosen` samples, a list each."""
        return [self.hops[chosen].tolist(), self.masks[chosen, 0].tolist(), self.masks[chosen, 1].tolist()]


class _Gateway:
    """Extended gateway records, as `_Router`: BGP next hop, AS numbers, an AS path of at most one
    segment (more go to the per-sample functions), communities, local preference."""

    __slots__ = (
        "communities",
        "fast",
        "fixed",
        "hops",
        "path",
        "path_ends",
        "paths",
        "preferences",
        "present",
        "segment_types",
    )

    def __init__(self, word: Words, bounds: Array) -> None:
        body, stop = bounds[:, 0], bounds[:, 1]
        self.present = body >= 0
        self.hops, width = _next_hops(word, body, self.present)
        at = body + 1 + width
        self.fixed = word(at[:, None] + np.arange(4))  # router AS, source AS, source peer AS, segments
        segments = self.fixed[:, 3]
        fast = (width > 0) & (at + 4 <= stop) & (segments <= 1)
        path_at = at + 4 + 2 * segments  # the path's words, after (type, length) of its one segment
        path_length = np.where(segments == 1, word(at + 5), 0)
        fast &= (path_at <= stop) & (path_length <= MAX_LIST) & (path_at + path_length <= stop)
        communities_at = path_at + np.where(fast, path_length, 0)
        community_count = word(communities_at)
        fast &= (communities_at + 1 <= stop) & (community_count <= MAX_LIST)
        preference_at = communities_at + 1 + np.where(fast, community_count, 0)
        fast &= preference_at + 1 <= stop
        length = np.where(fast, path_length, 0)
        self.fast = fast
        self.path = fast & (length > 0)
        # The path starts at the peer; its last AS originated the destination prefix.
        self.path_ends = np.stack([word(path_at), word(path_at + length - 1)], axis=1)
        self.segment_types = np.where(segments == 1, word(at + 4), -1)
        self.paths = _lists(word, path_at, length)
        self.communities = _lists(word, communities_at + 1, np.where(fast, community_count, 0))
        self.preferences = word(preference_at)

    def columns(self, chosen: Array, path: bool) -> list[Sequence[Any]]:
        """The values of `sflow_batch.GATEWAY_KEYS` for the `chosen` samples (with `PATH_KEYS`
        when their AS paths are not empty), a list each."""
        fixed = self.fixed[chosen]
        kinds = [[kind] if kind >= 0 else [] for kind in self.segment_types[chosen].tolist()]
        columns: list[Sequence[Any]] = [
            self.hops[chosen].tolist(),
            fixed[:, 0].tolist(),
            fixed[:, 1].tolist(),
            fixed[:, 2].tolist(),
            self.paths[chosen].tolist(),
            kinds,
        ]
        if path:
            columns += [self.path_ends[chosen, 0].tolist(), self.path_ends[chosen, 1].tolist()]
        return columns + [self.communities[chosen].tolist(), self.preferences[chosen].tolist()]


def _next_hops(word: Words, body: Array, present: Array) -> tuple[Array, Array]:
    """Each `present` record's leading sFlow address as text (each distinct one formatted once),
    and its width in words after the type word: 1 (IPv4), 4 (IPv6), 0 for any other type or no record."""
    kind = word(body)
    width = np.select([present & (kind == ADDRESS_IPV4), present & (kind == ADDRESS_IPV6)], [1, 4], 0)
    words = word(body[:, None] + 1 + np.arange(4))
    texts = np.full(len(body), None, dtype=object)
    four = np.flatnonzero(width == 1)
    if len(four):  # a router has a few next hops: each formatted once, then gathered
        distinct, index = np.unique(words[four, 0], return_inverse=True)
        names = object_column([inet_ntoa(value.to_bytes(4, "big")) for value in distinct.tolist()])
        texts[four] = names[index]
    six = np.flatnonzero(width == 4)
    if len(six):
        raw = words[six].astype(">u4").tobytes()  # 16 bytes a row
        known: dict[bytes, str] = {}
        texts[six] = object_column(
            [
                known.get(packed) or known.setdefault(packed, inet_ntop(AF_INET6, packed))
                for packed in (raw[16 * row : 16 * row + 16] for row in range(len(six)))
            ]
        )
    return texts, width


def _lists(word: Words, start: Array, lengths: Array) -> Array:
    """The words `start[i] .. start[i] + lengths[i]` of each row, as lists (an object array)."""
    longest = int(lengths.max(initial=0))
    if not longest:
        return object_column([[] for _ in range(len(start))])
    matrix = word(start[:, None] + np.arange(longest)).tolist()
    return object_column([values[:length] for values, length in zip(matrix, lengths.tolist(), strict=True)])
