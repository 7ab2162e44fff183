"""Enrichment: GeoIP, ASN, reverse DNS, MAC vendors, services, interface names, direction."""

from __future__ import annotations

from typing import Any, Protocol


class Enricher(Protocol):
    """Adds fields to documents in place, a batch at a time (each distinct address looked up once)."""

    async def enrich(self, documents: list[dict[str, Any]]) -> None: ...

    # Optional: `async def enrich_table(self, table: DocumentTable) -> None` enriches a decoded
    # data set as columns (`flowd.output.table`); the pipeline uses it when an enricher has it
    # and turns tables into dicts for `enrich` otherwise.

    async def close(self) -> None: ...
