"""The cyclic garbage collector's schedule in a worker.

A worker starts with a large heap of long-lived objects (modules, settings, the enrichment chain:
some 75,000 tracked objects before any template is restored), and a full collection visits every
one of them (15-20 ms). Full collections come whenever objects that outlived two young collections
add up to a quarter of the long-lived heap, and a batch's per-row Python objects (an sFlow router's
AS paths and communities, lists per sample) live that long while the batch goes through the
pipeline: at a few thousand samples a batch, that was a full collection every few batches (a
worker took router sFlow 1.3 times as fast with this module's settings, in `flowd bench`). Once
the worker is set up, its startup heap is frozen (never garbage, never visited again; later
objects are collected as before), and the young generation is larger, so young collections come a
fourteenth as often.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Allocations (net of frees) of tracked objects between young collections; CPython's default is
700. A table's column lists are freed whole by reference counting, so young collections find
little garbage; cycles still go within a batch or two."""


def settle_heap() -> None:
    """Freeze what exists now, after collecting the garbage setting up left, and enlarge the
    young generation (`YOUNG_THRESHOLD`)."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
