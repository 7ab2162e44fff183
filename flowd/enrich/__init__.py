"""Enrichment: GeoIP, ASN, reverse DNS, MAC vendors, services, interface names, direction."""

from __future__ import annotations

from typing import Any, Protocol


class Enricher(Protocol):
    """Adds fields to documents in place, a batch at a time (each distinct address looked up once)."""

    async def enrich(self, documents: list[dict[str, Any]]) -> None: ...

    async def close(self) -> None: ...
