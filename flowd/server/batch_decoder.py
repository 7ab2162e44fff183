"""A batch of datagrams in, flow documents out: the worker's decode stage, without its queues.

A batch's well-formed NetFlow v5 datagrams, its sFlow datagrams of common-shape flow samples and
its v9/IPFIX datagrams of data sets under known fixed-length templates are decoded together
(`decode_netflow_v5_batch`, `sflow_walk`, `decode_data_datagrams`); the rest one by one through
`decode_datagram`, v9/IPFIX where they stand in the batch, so templates and options data apply
from there on. Records become documents: tables per template layout, dicts for the rest. Any
exception from a decoder is counted per exporter, protocol and reason and logged at a bounded
rate; it never escapes, and a vectorised path that raises hands its records to the per-record
one (`flowd_fast_path_fallbacks`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from flowd.decode import TemplateCache, decode_datagram
from flowd.decode.batch import RecordBatch, merge_batches
from flowd.decode.data_set_batch import decode_data_datagrams
from flowd.decode.flowsets import decode_restored
from flowd.decode.netflow_v5 import V5_PREFIX, decode_netflow_v5_batch
from flowd.decode.sequence import SEQUENCE_SPACE, UNCOUNTED, SequenceTracker, export_mark, ipfix_data_records
from flowd.decode.sflow import decode_flow_sample
from flowd.decode.sflow_batch import SampleBatch, join_sample_batches
from flowd.decode.sflow_walk import SFLOW_V5_PREFIX, walk_sflow_datagrams
from flowd.errors import DecodeError
from flowd.model import KIND_NETFLOW_FLOW, DecodeResult, Exporter, FlowList, FlowRecord
from flowd.output.batch_documents import batch_table
from flowd.output.documents import flow_document
from flowd.output.sflow_table import sample_batch_tables, sflow_tables
from flowd.output.table import DocumentTable
from flowd.server.exporter_reports import ExporterReports
from flowd.server.fallbacks import Fallbacks
from flowd.server.metrics import LabelCap, WorkerStats
from flowd.server.rate_limited_log import RateLimitedLog

log = logging.getLogger("flowd.pipeline")
"""Named as when the decoder was part of pipeline.py: its lines keep the logger name they had."""

Item = tuple[bytes, Any, float]
"""(payload, source address as the socket gave it, receive time in seconds since the epoch)."""
Batch = list[Item]
ExporterItem = tuple[bytes, tuple[str, int], float]
"""A datagram with its exporter as (address, port), as the batch decoders take them."""
AtOnce = TypeVar("AtOnce", RecordBatch, SampleBatch)
Part = DocumentTable | list[dict[str, Any]]
"""A decoded data set as columns (written to NDJSON without dicts), or documents that are dicts."""
PROTOCOLS = {5: "netflow_v5", 9: "netflow_v9", 10: "ipfix"}
MIN_WALKED_DATAGRAMS = 8
"""Datagrams of one protocol a batch needs before they are decoded together (sFlow in
`sflow_walk`, NetFlow v5 in `decode_netflow_v5_batch`): below that, the fixed cost of doing it
in numpy (~150 µs for sFlow) outweighs the per-datagram work it saves."""


def protocol_of(data: bytes) -> str:
    """Metric label from the version word (sFlow: a 32-bit 5, so its first two bytes are zero)."""
    if len(data) < 4:
        return "unknown"
    version = (data[0] << 8) | data[1]
    if version == 0 and data[2] == 0 and data[3] == 5:
        return "sflow"
    return PROTOCOLS.get(version, "unknown")


class BatchDecoder:
    """Decodes batches through one template cache and turns records into documents."""

    def __init__(
        self,
        templates: TemplateCache,
        stats: WorkerStats,
        *,
        exporter_label_limit: int = 1000,
        warn: RateLimitedLog | None = None,
    ) -> None:
        self.templates = templates
        self.stats = stats
        self.exporter_label = LabelCap(exporter_label_limit)
        self.warn = warn or RateLimitedLog(log)
        self.fallbacks = Fallbacks(stats, self.warn)
        self.options: list[dict[str, Any]] = []
        self.sequences = SequenceTracker()
        self.exporter_reports = ExporterReports(stats, self.exporter_label)
        self._ipfix_records: dict[int, int | None] = {}
        """Data records of each IPFIX message of the batch being decoded, by `id` of its bytes."""

    def decode(self, batch: Batch) -> list[dict[str, Any]]:
        """Flow documents of the batch as dicts (see `decode_parts`)."""
        parts = self.decode_parts(batch)
        return [d for p in parts for d in (p.to_dicts() if isinstance(p, DocumentTable) else p)]

    def decode_parts(self, batch: Batch) -> list[Part]:
        """Flow documents of the batch: a table per template layout, dicts for the rest; options
        documents go to `self.options` (see `take_options`)."""
        flows = FlowList()
        stats = self.stats
        received = batch
        if self.templates.releasable:  # what a previous run parked, once its exporter's traffic comes here
            exporters = {item[1] for item in batch}
            for exporter, result in decode_restored(self.templates, time.time(), exporters):
                self._take_result(result, exporter, PROTOCOLS[result.version], flows)
        sample_batches, batch = self._walk_sflow(batch)
        v5_batches, batch = self._netflow_v5_at_once(batch)
        for v5_batch in v5_batches:
            flows.add_batch(v5_batch)
        items = _exporter_items(batch, range(len(batch)))
        decoded: list[bool] = [False] * len(items)

        def decode_one(index: int) -> None:
            decoded[index] = True
            self._decode_datagram(items[index], flows)

        counted: dict[int, int] = {}
        try:
            data_batches, taken = decode_data_datagrams(items, self.templates, decode_one, counted)
        except Exception as error:  # a bug in the batch path: what it held goes one datagram at a time
            # (after those it had already passed on: a template change between them is applied early)
            self.fallbacks.fell_back("data_sets", error)
            data_batches, taken = [], {}
            counted.clear()
            for index, done in enumerate(decoded):
                if not done:
                    self._decode_datagram(items[index], flows)
        for version, datagrams in taken.items():
            if datagrams:
                stats.inc("flowd_datagrams_decoded", (PROTOCOLS[version],), datagrams)
        for data_batch in data_batches:
            stats.inc("flowd_flows_decoded", (PROTOCOLS[data_batch.version],), len(data_batch))
            flows.add_batch(data_batch)
        parts: list[Part] = []
        dicts: list[dict[str, Any]] = []
        samples: list[FlowRecord] = []
        for part in merge_batches(flows.parts):  # one table per template layout, not per datagram
            if isinstance(part, RecordBatch):
                if part.kind == KIND_NETFLOW_FLOW:
                    try:
                        parts.append(batch_table(part))
                        continue
                    except Exception as error:  # a mapping bug: redo record by record to isolate it
                        self.fallbacks.fell_back("netflow_table", error)
            elif isinstance(part, SampleBatch):
                sample_batches.append(part)  # read in numpy below, the whole batch at once
                continue
            elif part and part[0].kind.startswith("sflow"):
                samples.extend(part)  # sFlow samples of the whole batch, tabled by layout below
                continue
            self._documents(part, dicts)
        if sample_batches:
            parts.extend(self._sample_tables(join_sample_batches(sample_batches), samples))
        if samples:
            try:
                tables, rest = sflow_tables(samples)
            except Exception as error:  # a mapping bug: the dict path isolates it record by record
                self.fallbacks.fell_back("sflow_tables", error)
                tables, rest = [], samples
            parts.extend(tables)
            self._documents(rest, dicts)
        if dicts:
            parts.append(dicts)
        data_records = self._ipfix_records
        for index, records in counted.items():
            data_records[id(items[index][0])] = records
        self._track_sequences(received)
        data_records.clear()
        self._count_exporters(received)
        if self.exporter_reports.has_sources:
            self.exporter_reports.maybe_prune()
        return parts

    def _count_exporters(self, batch: Batch) -> None:
        """Datagrams per exporter and protocol (`flowd_exporter_datagrams`), whatever they hold:
        an exporter that goes silent shows as a rate of 0, which an alert can watch."""
        counts = Counter((source[0], data[:4]) for data, source, _ in batch)
        for (address, head), count in counts.items():
            self.stats.inc("flowd_exporter_datagrams", (self.exporter_label(address), protocol_of(head)), count)

    def _track_sequences(self, batch: Batch) -> None:
        """Exports missing before each of the batch's datagrams, by their sequence numbers, in
        the order they arrived. An IPFIX message's sequence number counts data records, which
        were counted as it was decoded, with the templates of that moment (`_ipfix_records`)."""
        observe, lookup, stats = self.sequences.observe, self.templates.get, self.stats
        streams, data_records = self.sequences.streams, self._ipfix_records
        try:
            for data, source, received_at in batch:
                counted = data_records.get(id(data), UNCOUNTED)
                mark = export_mark(data, source[:2], lookup, received_at, counted)
                if mark is None:
                    continue
                protocol, domain, sequence, units = mark
                key = (source[0], protocol, domain)
                known = streams.get(key)
                if known is not None and known[0] == sequence and units is not None:  # as expected: most of them
                    streams[key] = ((sequence + units) % SEQUENCE_SPACE, sequence, None)
                    continue
                event, missed = observe(key, sequence, units)
                if event is not None:
                    exporter = self.exporter_label(source[0])
                    stats.inc("flowd_export_sequence_events", (exporter, protocol, event))
                    if missed:
                        stats.inc("flowd_export_sequence_missed", (exporter, protocol), missed)
        except Exception as error:  # a bug here must not cost the batch its documents
            self.warn.warning("sequences", f"sequence tracking failed: {type(error).__name__}: {error}")

    def _decode_datagram(self, item: ExporterItem, flows: FlowList) -> None:
        """One datagram through `decode_datagram`: its flows join `flows`, its options
        documents `self.options`, its errors the counters and the rate-limited log."""
        data, exporter, received_at = item
        protocol = protocol_of(data)
        stats = self.stats
        try:
            result = decode_datagram(data, exporter, self.templates, received_at)
        except DecodeError as error:
            self._error(exporter, protocol, error.reason, str(error))
            return
        except Exception as error:  # a decoder bug: count it, keep the worker alive
            self._error(exporter, protocol, "internal_error", f"{type(error).__name__}: {error}")
            return
        finally:
            if protocol == "ipfix":  # with the templates it carried, before later ones change them
                self._ipfix_records[id(data)] = ipfix_data_records(data, exporter, self.templates.get, received_at)
        stats.inc("flowd_datagrams_decoded", (protocol,))
        self._take_result(result, exporter, protocol, flows)

    def _take_result(self, result: DecodeResult, exporter: Exporter, protocol: str, flows: FlowList) -> None:
        """A decode result's flows join `flows`, its options documents `self.options`, its
        errors the counters and the rate-limited log."""
        stats = self.stats
        for soft in result.errors:
            self._error(exporter, protocol, soft.reason, soft.message)
        if result.flows:
            stats.inc("flowd_flows_decoded", (protocol,), len(result.flows))
            for part in result.flows.parts:
                flows.add_batch(part)
        if result.options:
            stats.inc("flowd_options_records_decoded", (protocol,), len(result.options))
            first = len(self.options)
            self._documents(result.options, self.options)
            try:
                self.exporter_reports.learn(self.options[first:])
            except Exception as error:  # a bug here must not cost the datagram its flows
                self.warn.warning("exporter_reports", f"exporter reports failed: {type(error).__name__}: {error}")

    def _netflow_v5_at_once(self, batch: Batch) -> tuple[list[RecordBatch], Batch]:
        """The records of the batch's well-formed NetFlow v5 datagrams decoded at once
        (`decode_netflow_v5_batch`), and the datagrams left for `decode_datagram`."""
        return self._at_once(batch, V5_PREFIX, "netflow_v5", "netflow_v5_batch", decode_netflow_v5_batch)

    def _walk_sflow(self, batch: Batch) -> tuple[list[SampleBatch], Batch]:
        """The batch's sFlow datagrams made only of common-shape flow samples, walked at once
        (`sflow_walk`), and the datagrams left for `decode_datagram`."""

        def walk(items: list[ExporterItem]) -> tuple[list[SampleBatch], list[int]]:
            walked, left = walk_sflow_datagrams(items, decode_flow_sample)
            return ([] if walked is None else [walked]), left

        return self._at_once(batch, SFLOW_V5_PREFIX, "sflow", "sflow_walk", walk)

    def _at_once(
        self,
        batch: Batch,
        prefix: bytes,
        protocol: str,
        path: str,
        decode: Callable[[list[ExporterItem]], tuple[list[AtOnce], list[int]]],
    ) -> tuple[list[AtOnce], Batch]:
        """What `decode` makes of the batch's datagrams that start with `prefix` (when there are
        enough to pay), and the datagrams it left, with the rest, for `decode_datagram`. A bug
        in `decode` is counted as a fallback of `path`, and every datagram goes the per-datagram way."""
        indices = [i for i, item in enumerate(batch) if item[0][: len(prefix)] == prefix]
        if len(indices) < MIN_WALKED_DATAGRAMS:
            return [], batch
        try:
            parts, left = decode(_exporter_items(batch, indices))
        except Exception as error:
            self.fallbacks.fell_back(path, error)
            return [], batch
        if not parts:
            return [], batch
        self.stats.inc("flowd_datagrams_decoded", (protocol,), len(indices) - len(left))
        self.stats.inc("flowd_flows_decoded", (protocol,), sum(len(part) for part in parts))
        return parts, _without(batch, indices, left)

    def _sample_tables(self, batch: SampleBatch, samples: list[FlowRecord]) -> list[DocumentTable]:
        """Tables of the sFlow samples read in numpy; the rest join `samples` as records."""
        try:
            tables, left = sample_batch_tables(batch)
        except Exception as error:  # a bug in the vectorised reader: every sample goes the per-sample way
            self.fallbacks.fell_back("sflow_samples", error)
            samples.extend(batch)
            return []
        samples.extend(batch.records(left))
        return tables

    def take_options(self) -> list[dict[str, Any]]:
        """Options documents decoded since the last call (interface and application tables)."""
        options, self.options = self.options, []
        return options

    def _documents(self, records: Iterable[FlowRecord], into: list[dict[str, Any]]) -> None:
        for record in records:
            try:
                into.append(flow_document(record))
            except Exception as error:  # a mapping bug must not lose the rest of the batch
                protocol = "sflow" if record.kind.startswith("sflow") else PROTOCOLS.get(record.version, "unknown")
                self._error(record.exporter, protocol, "document_error", f"{type(error).__name__}: {error}")

    def _error(self, exporter: tuple[str, int], protocol: str, reason: str, message: str) -> None:
        self.stats.inc("flowd_decode_errors", (self.exporter_label(exporter[0]), protocol, reason))
        self.warn.warning(
            f"{exporter[0]}|{reason}", f"{protocol} from {exporter[0]}:{exporter[1]}: {reason}: {message}"
        )


def _exporter_items(batch: Batch, indices: Iterable[int]) -> list[ExporterItem]:
    """The datagrams at `indices` with their exporter as (address, port)."""
    return [(batch[i][0], (batch[i][1][0], batch[i][1][1]), batch[i][2]) for i in indices]


def _without(batch: Batch, indices: list[int], left: list[int]) -> Batch:
    """`batch` without the datagrams at `indices` that were decoded (all but the `left`-th)."""
    decoded = set(indices).difference([indices[i] for i in left])
    return [item for i, item in enumerate(batch) if i not in decoded]
