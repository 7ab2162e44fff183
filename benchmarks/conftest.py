"""Benchmarks run with the allocator settings `flowd` applies to itself at start."""

from __future__ import annotations

from flowd.allocator import tune_allocator

tune_allocator()
