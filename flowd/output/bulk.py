"""The `_bulk` protocol without the network: request bodies, batching, retry policy, responses.

Bodies are NDJSON built once per batch with orjson. Each document gets a `create` action; with
document ids on, the `_id` is fixed when the document is encoded (a random per-encoder prefix and
a counter), so a batch that is retried, spooled, or replayed after a restart carries the same ids
and a copy the cluster already holds answers 409, which counts as done: exactly once per flow.
`create` with an `_id` is allowed on data streams; `index` with an `_id` is not.

Everything here is plain data and arithmetic with time and randomness injected, so the adapter
in `elasticsearch.py` stays thin and this part is tested without a server.
"""

from __future__ import annotations

import base64
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from flowd.output.render import PAD
from flowd.output.sink import Body

CREATE_ACTION = b'{"create":{}}\n'
"""The constant action line when documents carry no `_id`."""
RETRYABLE_ITEM_STATUSES = frozenset({408, 429})
"""Besides every 5xx: per-item statuses that mean 'not now', not 'not ever'."""
DUPLICATE_STATUS = 409
"""`create` of an `_id` that exists: the document is already indexed, so it counts as done."""
_DUMPS_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY


@dataclass(slots=True)
class Unserialisable:
    """A document orjson refused (an integer beyond 64 bits, an unknown type): dead-lettered."""

    document: dict[str, Any]
    reason: str


class BulkEncoder:
    """Documents -> `_bulk` line pairs (action line + document line), one bytes object each."""

    def __init__(self, *, document_ids: bool = True, id_prefix: bytes | None = None) -> None:
        self.document_ids = document_ids
        prefix = id_prefix if id_prefix is not None else base64.urlsafe_b64encode(os.urandom(9))
        self._head = b'{"create":{"_id":"' + prefix + b"-"
        self._counter = 0

    def encode(self, documents: Iterable[dict[str, Any]]) -> tuple[list[bytes], list[Unserialisable]]:
        dumps = orjson.dumps
        options = _DUMPS_OPTIONS
        pairs: list[bytes] = []
        append = pairs.append
        rejected: list[Unserialisable] = []
        if not self.document_ids:
            action = CREATE_ACTION
            for document in documents:
                try:
                    append(action + dumps(document, option=options))
                except orjson.JSONEncodeError as error:
                    rejected.append(Unserialisable(document, str(error)))
            return pairs, rejected
        head = self._head
        counter = self._counter
        for document in documents:
            try:
                line = dumps(document, option=options)
            except orjson.JSONEncodeError as error:
                rejected.append(Unserialisable(document, str(error)))
                continue
            append(head + b'%x"}}\n' % counter + line)
            counter += 1
        self._counter = counter
        return pairs, rejected

    def encode_lines(self, lines: list[bytes]) -> list[bytes]:
        """Pairs for documents already serialised (one JSON object per line, no newline)."""
        if not self.document_ids:
            return [CREATE_ACTION + line + b"\n" for line in lines]
        head = self._head
        start = self._counter
        self._counter = start + len(lines)
        return [head + b'%x"}}\n' % counter + line + b"\n" for counter, line in enumerate(lines, start)]

    def action_lines(self, count: int) -> npt.NDArray[np.uint8]:
        """The action lines of the next `count` documents as a byte matrix (for
        `DocumentTable.to_ndjson(prefixes=...)`): the lines `encode_lines` writes, each
        right-aligned after spaces (JSON whitespace), as the `_id` counters differ in length."""
        if not self.document_ids:
            line = np.frombuffer(CREATE_ACTION, dtype=np.uint8)
            return np.broadcast_to(line, (count, len(line)))
        start = self._counter
        self._counter = start + count
        ids = np.arange(start, start + count, dtype=np.uint64)
        shifts = np.arange(60, -4, -4, dtype=np.uint64)
        nibbles = ((ids[:, None] >> shifts) & np.uint64(15)).astype(np.intp)
        significant = np.maximum.accumulate(nibbles != 0, axis=1)
        significant[:, -1] = True  # the counter 0 is written "0"
        digit_counts = significant.sum(axis=1)
        head = np.frombuffer(self._head, dtype=np.uint8)
        tail = np.frombuffer(b'"}}\n', dtype=np.uint8)
        lines = np.full((count, len(head) + 16 + len(tail)), PAD, dtype=np.uint8)
        lines[:, len(head) : len(head) + 16] = _HEX_DIGITS[nibbles]
        lines[:, len(head) + 16 :] = tail
        for digits in np.unique(digit_counts).tolist():  # a batch's counters span one or two lengths
            rows = digit_counts == digits
            start = 16 - digits  # the head goes just before the first significant digit
            lines[rows, start : start + len(head)] = head
            lines[rows, :start] = PAD
        return lines


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@dataclass(slots=True)
class Batch:
    """One `_bulk` request body and what is known about it."""

    body: Body
    """A view of a table's array when the batch is one piece of one table (`cut`), else bytes."""
    docs: int
    created_at: float
    spool_name: str | None = None
    """Set when the batch lives in a spool file (removed once the cluster has it all)."""

    @property
    def nbytes(self) -> int:
        return len(self.body)

    def detach(self) -> None:
        """Own the body: a view keeps its table's whole array alive, which a batch waiting out an
        outage or a retry must not (memory is accounted per batch, by its own bytes)."""
        if isinstance(self.body, memoryview):
            self.body = bytes(self.body)


def split_pairs(body: Body) -> list[bytes]:
    """A body back into its (action + document) pairs; orjson never writes a raw newline inside a line."""
    lines = bytes(body).split(b"\n")
    return [lines[i] + b"\n" + lines[i + 1] + b"\n" for i in range(0, len(lines) - 1, 2)]


def document_of(pair: bytes) -> bytes:
    """The document line of a pair, without its newline."""
    start = pair.index(b"\n") + 1
    return pair[start:].rstrip(b"\n")


class BatchBuilder:
    """Collects encoded pairs and cuts batches at `batch_docs` documents or `batch_bytes` bytes."""

    def __init__(self, batch_docs: int, batch_bytes: int, clock: Callable[[], float]) -> None:
        if batch_docs < 1 or batch_bytes < 1:
            raise ValueError("batch_docs and batch_bytes must be positive")
        self.batch_docs = batch_docs
        self.batch_bytes = batch_bytes
        self._clock = clock
        self._pairs: list[Body] = []
        """Pairs and blocks of pairs (`add_body`) of the open batch."""
        self._docs = 0
        self._bytes = 0
        self.opened_at = 0.0

    @property
    def docs(self) -> int:
        return self._docs

    @property
    def nbytes(self) -> int:
        return self._bytes

    def add(self, pairs: list[bytes]) -> list[Batch]:
        """Append pairs; returns the batches that became full."""
        if not pairs:
            return []
        if not self._pairs:
            self.opened_at = self._clock()
        full: list[Batch] = []
        open_pairs = self._pairs
        docs = self._docs
        size = self._bytes
        limit_docs = self.batch_docs
        limit_bytes = self.batch_bytes
        for pair in pairs:
            open_pairs.append(pair)
            docs += 1
            size += len(pair)
            if docs >= limit_docs or size >= limit_bytes:
                full.append(Batch(b"".join(open_pairs), docs, self.opened_at))
                open_pairs = []
                docs = size = 0
                self.opened_at = self._clock()
        self._pairs = open_pairs
        self._docs = docs
        self._bytes = size
        return full

    def add_body(self, body: Body, count: int, pair_bytes: int = 0) -> list[Batch]:
        """Append `count` pairs written as one body; the same batches as `add(split_pairs(body))`,
        but a body that fits the open batch is kept whole and one that does not is cut only
        where a batch ends. `pair_bytes`: every pair is that long (a table's rows are padded to
        one width), so pairs end at its multiples; 0: the pair ends are found in numpy."""
        if not count:
            return []
        if self._docs + count < self.batch_docs and self._bytes + len(body) < self.batch_bytes:
            if not self._pairs:
                self.opened_at = self._clock()
            self._pairs.append(body)
            self._docs += count
            self._bytes += len(body)
            return []
        octets = np.frombuffer(body, dtype=np.uint8)
        if pair_bytes:
            if len(body) != count * pair_bytes or not (octets[pair_bytes - 1 :: pair_bytes] == 10).all():
                raise ValueError(f"a body of {len(body)} bytes is not {count} lines of {pair_bytes} bytes")
            ends = np.arange(pair_bytes, len(body) + 1, pair_bytes)
        else:
            newlines = np.flatnonzero(octets == 10)
            if len(newlines) != 2 * count:
                raise ValueError(f"a body of {count} pairs has {len(newlines)} lines")
            ends = newlines[1::2] + 1  # byte offset after each pair
        full: list[Batch] = []
        start = 0  # first pair not yet placed
        while start < count:
            if not self._pairs:
                self.opened_at = self._clock()
            offset = int(ends[start - 1]) if start else 0
            room_docs = self.batch_docs - self._docs
            # The pair that reaches either limit closes the batch (as in `add`).
            by_bytes = int(np.searchsorted(ends, offset + self.batch_bytes - self._bytes, side="left"))
            last = min(start + room_docs - 1, by_bytes, count - 1)
            stop = int(ends[last])
            self._pairs.append(body[offset:stop])
            self._docs += last + 1 - start
            self._bytes += stop - offset
            start = last + 1
            if self._docs >= self.batch_docs or self._bytes >= self.batch_bytes:
                batch = self.cut()
                assert batch is not None
                full.append(batch)
            elif offset and 2 * (stop - offset) < len(body):
                # A short tail stays in the open batch: a copy of it, so the table's whole buffer
                # (tens of MB) is not kept alive for it while the next table is laid out.
                self._pairs[-1] = bytes(self._pairs[-1])
        return full

    def cut(self) -> Batch | None:
        """The open batch, however small; None when empty."""
        if not self._pairs:
            return None
        pieces = self._pairs
        # One piece (a stretch of one table's rows, the usual batch) is sent as it is: joining
        # would copy megabytes per request, about as much as laying the table out cost.
        batch = Batch(pieces[0] if len(pieces) == 1 else b"".join(pieces), self._docs, self.opened_at)
        self._pairs = []
        self._docs = self._bytes = 0
        return batch


@dataclass(slots=True)
class RetryPolicy:
    """Capped exponential backoff with jitter: attempt n waits up to min(cap, initial * 2**n).

    The wait is drawn from [(1 - jitter) * d, d] so that many collectors recovering together do
    not return in step, while a wait never drops below half the nominal delay (with jitter 0.5).
    """

    initial_s: float = 0.2
    cap_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    random: Callable[[], float] = field(default=random.random)

    def delay_s(self, attempt: int) -> float:
        """Wait before retry number `attempt` (0 for the first retry)."""
        nominal = min(self.cap_s, self.initial_s * self.multiplier ** min(attempt, 64))
        return nominal * (1.0 - self.jitter * self.random())


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status in RETRYABLE_ITEM_STATUSES


@dataclass(slots=True)
class Rejection:
    """An item the cluster refused for its content, with the server's own words."""

    index: int
    status: int
    error: Any


@dataclass(slots=True)
class BulkOutcome:
    """What a `_bulk` response says about each item of the request, by position."""

    created: int = 0
    duplicates: int = 0
    retry: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    retry_statuses: dict[int, int] = field(default_factory=dict)


BLOCK_ERRORS = frozenset({"cluster_block_exception"})
"""Item errors about the cluster's state, not the document: an index made read-only when a disk
passed its flood stage answers 403 with these until an operator (or the cluster) lifts the block."""


def _blocked(result: Any) -> bool:
    error = result.get("error") if isinstance(result, dict) else None
    return isinstance(error, dict) and error.get("type") in BLOCK_ERRORS


def classify_bulk_response(body: Any, docs: int) -> BulkOutcome:
    """Sort the items of a 2xx `_bulk` response into created, duplicate, retry and rejected.

    A response that does not list exactly one item per document is not trusted: everything is
    retried (ids make that safe).
    """
    outcome = BulkOutcome()
    if isinstance(body, dict) and body.get("errors") is False and "items" not in body:
        outcome.created = docs  # filter_path dropped the items of a response without errors
        return outcome
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or len(items) != docs:
        outcome.retry = list(range(docs))
        outcome.retry_statuses[0] = docs
        return outcome
    for position, item in enumerate(items):
        result: Any = next(iter(item.values()), {}) if isinstance(item, dict) and item else {}
        status = result.get("status", 0) if isinstance(result, dict) else 0
        if 200 <= status < 300:
            outcome.created += 1
        elif status == DUPLICATE_STATUS:
            outcome.duplicates += 1
        elif is_retryable_status(status) or status == 0 or _blocked(result):
            outcome.retry.append(position)
            outcome.retry_statuses[status] = outcome.retry_statuses.get(status, 0) + 1
        else:
            outcome.rejected.append(Rejection(position, status, result.get("error")))
    return outcome


def dead_letter_line(document: bytes, status: int, error: Any, at: str) -> bytes:
    """One line of the dead-letter file: when, the status and reason the server gave, the document."""
    head = orjson.dumps({"@timestamp": at, "status": status, "error": error})
    return head[:-1] + b',"document":' + document + b"}\n"
