"""The bounded queue between the receivers and the decoder: the one place a worker drops.

The UDP receiver (and the TCP listener) append (data, address, time); datagrams are grouped in
batches of `batch_size`; when `capacity` datagrams wait, the excess is dropped and counted. The
consumer takes a full batch (queued ones joined, up to `joined_limit`), or the partial one when
nothing else waits; how long a partial batch may wait for company is `Pipeline`'s choice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from flowd.server.batch_decoder import Batch, Item, protocol_of

COALESCED_BATCHES = 8
"""Full ingress batches the decoder joins into one when they queue up (`IngressQueue.pop`):
a table costs about a millisecond whatever its rows, so a backlog is decoded in fewer, larger
tables. Measured with one worker on v9 (fixed-rate trials, alternated): 4 lost 5% at 350k
flows/s where 8 held it; 16 lost less above that but let v5 batches run long enough (some 75 ms)
for the kernel to drop. It needs the receiver to drain its socket per wake
(`udp.DrainingReceiver`): with asyncio's 32 datagrams per loop turn, joins of 4 already lost
datagrams in the kernel."""
SFLOW_COALESCED_BATCHES = 16
"""The same for batches that start with an sFlow datagram. Its datagrams carry a few samples
each (about 6, against NetFlow's 20-30), so twice as many join, for a joined batch of some
thousands of records either way (one worker: 8 lost 4% at 114k samples/s where 16 held it)."""


def _noop() -> None:
    return None


class IngressQueue:
    """Datagrams grouped in batches, at most `capacity` waiting; the excess is dropped and counted."""

    def __init__(self, batch_size: int, capacity: int, wake: Callable[[], None] = _noop) -> None:
        self.batch_size = max(1, batch_size)
        self.capacity = max(self.batch_size, capacity)
        self.wake = wake
        """Called when the queue goes from empty to non-empty, and when `wake_at` datagrams wait
        (sets the consumer's event)."""
        self.wake_at = 0
        """A count of waiting datagrams that also wakes the consumer (0: none): what a decoder
        lingering over a partial batch waits for."""
        self._ready: deque[Batch] = deque()
        self._current: Batch = []
        self._waiting = 0
        self.accepted = 0
        self.dropped = 0

    def __len__(self) -> int:
        """Datagrams waiting."""
        return self._waiting

    @property
    def full(self) -> bool:
        return self._waiting >= self.capacity

    def append(self, data: bytes, address: Any, received_at: float, *, force: bool = False) -> bool:
        """Queue a datagram; False (counted in `dropped`) when full. `force` is for TCP, whose
        sender is paused by backpressure instead of dropped (see tcp.py)."""
        if self._waiting >= self.capacity and not force:
            self.dropped += 1
            return False
        current = self._current
        if len(current) >= self.batch_size:
            self._ready.append(current)
            current = self._current = []
        current.append((data, address, received_at))
        self._waiting += 1
        self.accepted += 1
        if self._waiting == 1 or self._waiting == self.wake_at:
            self.wake()
        return True

    def _oldest(self) -> Item | None:
        if self._ready:
            return self._ready[0][0]
        return self._current[0] if self._current else None

    def oldest_at(self) -> float | None:
        """When the oldest waiting datagram arrived; None when none waits."""
        oldest = self._oldest()
        return None if oldest is None else oldest[2]

    def head(self) -> bytes | None:
        """The payload of the oldest waiting datagram, None when nothing waits."""
        oldest = self._oldest()
        return None if oldest is None else oldest[0]

    def joined_limit(self) -> int:
        """How many datagrams `pop` may join now: by the protocol of the oldest one."""
        first = self.head()
        joined = SFLOW_COALESCED_BATCHES if first is not None and protocol_of(first) == "sflow" else COALESCED_BATCHES
        return self.batch_size * joined

    def pop(self, limit: int = 0) -> Batch | None:
        """The oldest full batch, else the partial one; None when nothing waits.

        With `limit`, the full batches queued behind the first are joined to it while the total
        stays within `limit` datagrams: a backlog is decoded in bigger batches, whose fixed
        costs per table weigh less per flow, while a quiet queue still hands over at once.
        """
        ready = self._ready
        if ready:
            batch = ready.popleft()
            while ready and len(batch) + len(ready[0]) <= limit:
                batch += ready.popleft()
            if not ready and self._current and len(batch) + len(self._current) <= limit:
                batch += self._current  # the newest, maybe partial, batch too
                self._current = []
        elif self._current:
            batch, self._current = self._current, []
        else:
            return None
        self._waiting -= len(batch)
        return batch
