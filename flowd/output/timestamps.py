"""Fast ISO 8601 UTC formatting: exporters stamp many records with the same second."""

from __future__ import annotations

import time

from flowd.decode.memo import MEMO_CLEARS

FIRST_MS = 0
LAST_MS = 253_402_300_799_999
"""The epoch ms a document's dates hold: 1970 to the end of 9999. Elasticsearch's `date` refuses a
year past 9999 without a sign, and with it the whole document; a time outside comes from a
template's garbage, and is taken as no time at all."""


def in_document_range(epoch_ms: int) -> bool:
    return FIRST_MS <= epoch_ms <= LAST_MS


_SECOND_PREFIXES: dict[int, str] = {}
_MAX_CACHED_SECONDS = 4096


def iso_from_ms(epoch_ms: int) -> str:
    seconds, millis = divmod(int(epoch_ms), 1000)
    prefix = _SECOND_PREFIXES.get(seconds)
    if prefix is None:
        if len(_SECOND_PREFIXES) >= _MAX_CACHED_SECONDS:
            _SECOND_PREFIXES.clear()
            MEMO_CLEARS["timestamp_prefixes"] += 1
        try:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        except (OverflowError, OSError, ValueError):
            prefix = "1970-01-01T00:00:00"
        _SECOND_PREFIXES[seconds] = prefix
    return f"{prefix}.{millis:03d}Z"


def iso_from_seconds(epoch_s: float) -> str:
    return iso_from_ms(int(epoch_s * 1000))


UPTIME_WRAP_MS = 1 << 32
"""sysUpTime, and the flow times NetFlow v9 and IPFIX give relative to it, are unsigned 32-bit
milliseconds: the counter wraps every 49.7 days of the exporter's uptime."""

AHEAD_TOLERANCE_MS = 100_000
"""A relative time at most this far after the export's uptime is the exporter's clock running
ahead (some IOS releases stamp a flow's end after the export: CSCei12353) and stays in the
future; one further ahead was taken before the counter wrapped."""


def uptime_age_ms(uptime_ms: int, relative_ms: int) -> int:
    """How many ms before the export a sysUpTime-relative time lies, across the counter's wrap.

    `uptime_ms` may exceed 32 bits (IPFIX's, derived from systemInitTimeMilliseconds); the
    relative time is taken to lie within the last 49.7 days before it.
    """
    age = (uptime_ms - relative_ms) % UPTIME_WRAP_MS
    return age - UPTIME_WRAP_MS if age > UPTIME_WRAP_MS - AHEAD_TOLERANCE_MS else age
