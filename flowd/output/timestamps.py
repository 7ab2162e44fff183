"""Fast ISO 8601 UTC formatting: exporters stamp many records with the same second."""

from __future__ import annotations

import time

_SECOND_PREFIXES: dict[int, str] = {}
_MAX_CACHED_SECONDS = 4096


def iso_from_ms(epoch_ms: int) -> str:
    seconds, millis = divmod(int(epoch_ms), 1000)
    prefix = _SECOND_PREFIXES.get(seconds)
    if prefix is None:
        if len(_SECOND_PREFIXES) >= _MAX_CACHED_SECONDS:
            _SECOND_PREFIXES.clear()
        try:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        except (OverflowError, OSError, ValueError):
            prefix = "1970-01-01T00:00:00"
        _SECOND_PREFIXES[seconds] = prefix
    return f"{prefix}.{millis:03d}Z"


def iso_from_seconds(epoch_s: float) -> str:
    return iso_from_ms(int(epoch_s * 1000))
