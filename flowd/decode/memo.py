"""How often each memo cache started over because it was full.

Hot paths keep plain dicts as memos (address text, compiled template layouts, timestamp
prefixes...) and bound them by clearing them when full: cheaper than an LRU, and harmless while
the working set fits. When it does not, every lookup misses and throughput falls with no other
sign, so each clear adds one here (an integer increment, at clear time only). Workers copy these
into `flowd_memo_cache_clears{cache}`. Counts are per process, as the caches are.

It lives among the decoders, which may import nothing of flowd's but the model (style.md rule 1),
and keeps them pure as that rule means it: a plain count of the caches' own state, like their
sizes, with no clock, I/O, logging or metrics registry; the server reads it and exports it.
"""

from __future__ import annotations

MEMO_CACHES = (
    "compiled_layouts",
    "record_address_text",
    "header_address_text",
    "timestamp_prefixes",
    "field_groups",
    "field_key_sets",
    "exporter_hashes",
    "enrich_address_groups",
    "application_groups",
    "allowlist_verdicts",
)
"""The `cache` label's values, fixed (the README lists them and what each holds)."""

MEMO_CLEARS: dict[str, int] = dict.fromkeys(MEMO_CACHES, 0)
"""Clears of each cache in this process since it started."""
