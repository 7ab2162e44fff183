"""`flowd decode`: files in, documents out, with a summary of what could not be decoded."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowd.capture import CaptureError, read_datagrams
from flowd.config import EnrichSettings
from flowd.decode import TemplateCache, decode_datagram
from flowd.decode.sequence import SequenceTracker, export_mark
from flowd.enrich.chain import build_enricher
from flowd.errors import DecodeError
from flowd.model import DecodeResult
from flowd.output.batch_documents import documents_for
from flowd.output.documents import flow_document


@dataclass(slots=True)
class DecodeSummary:
    datagrams: int = 0
    flows: int = 0
    options: int = 0
    templates: int = 0
    parked_now: int = 0
    failed_datagrams: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    sequence_missed: Counter[str] = field(default_factory=Counter)
    """Exports the exporters numbered that are not in the files, per protocol (in its unit)."""
    sequence_events: Counter[str] = field(default_factory=Counter)
    unreadable_files: list[str] = field(default_factory=list)
    """One message per file that could not be read as a capture (it is skipped)."""
    cut_files: list[str] = field(default_factory=list)
    """One message per capture that ends inside a record (what precedes it was decoded)."""

    def describe(self) -> str:
        reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(self.errors.items())) or "none"
        return (
            f"datagrams={self.datagrams} flows={self.flows} options={self.options} templates={self.templates} "
            f"still_parked={self.parked_now} undecodable_datagrams={self.failed_datagrams} errors: {reasons}"
            f"{_sequence_text(self.sequence_missed, self.sequence_events)}"
        )


def _sequence_text(missed: Counter[str], events: Counter[str]) -> str:
    if not events:
        return ""
    lost = ", ".join(f"{protocol}={count}" for protocol, count in sorted(missed.items())) or "none"
    seen = ", ".join(f"{event}={count}" for event, count in sorted(events.items()))
    return f"; missing by sequence numbers: {lost} ({seen})"


def decode_results(paths: Iterable[str | Path], summary: DecodeSummary) -> Iterator[DecodeResult]:
    """Decode every datagram of the files in order, through one template cache."""
    templates = TemplateCache()
    sequences = SequenceTracker()
    for path in paths:
        try:
            datagrams = read_datagrams(path)
        except CaptureError as error:
            summary.unreadable_files.append(str(error))
            continue
        for datagram in datagrams:
            summary.datagrams += 1
            try:
                result = decode_datagram(datagram.payload, datagram.source, templates, datagram.timestamp)
            except DecodeError as error:
                summary.failed_datagrams += 1
                summary.errors[error.reason] += 1
                continue
            finally:
                mark = export_mark(datagram.payload, datagram.source, templates.get, datagram.timestamp)
                if mark is not None:
                    protocol, domain, sequence, units = mark
                    event, missed = sequences.observe((datagram.source[0], protocol, domain), sequence, units)
                    if event is not None:
                        summary.sequence_events[event] += 1
                        summary.sequence_missed[protocol] += missed
            summary.flows += len(result.flows)
            summary.options += len(result.options)
            summary.templates += result.templates_added
            for soft in result.errors:
                summary.errors[soft.reason] += 1
            yield result
        if datagrams.cut is not None:
            summary.cut_files.append(datagrams.cut.describe(path))
    summary.parked_now = templates.parked_sets


def decode_documents(
    paths: Iterable[str | Path], summary: DecodeSummary, *, include_options: bool = False
) -> Iterator[dict[str, Any]]:
    for result in decode_results(paths, summary):
        yield from documents_for(result.flows)
        if include_options:
            for record in result.options:
                yield flow_document(record)


def decode_enriched_documents(
    paths: Iterable[str | Path], summary: DecodeSummary, settings: EnrichSettings, *, include_options: bool = False
) -> Iterator[dict[str, Any]]:
    """As `decode_documents`, with the enrichment `flowd run` applies (options feed its tables)."""
    enricher = build_enricher(settings)
    loop = asyncio.new_event_loop()
    try:
        for result in decode_results(paths, summary):
            options = [flow_document(record) for record in result.options]
            enricher.learn_from_options(options)
            documents = documents_for(result.flows)
            loop.run_until_complete(enricher.enrich(documents))
            yield from documents
            if include_options:
                yield from options
    finally:
        loop.run_until_complete(enricher.close())
        loop.close()
