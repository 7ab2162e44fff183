"""Sampling rates the operator sets per exporter, for exporters that announce none or a wrong one.

Many exporters sample without saying so: NetFlow v5 with an empty sampling field, v9 and IPFIX
exporters that send no sampler options (or send them rarely, so flows decoded before the first
one count as unsampled), sFlow agents reporting a rate they do not apply. Their traffic volumes
come out too small by the rate. `enrich.sampling_rates` replaces whatever an exporter announced;
`enrich.default_sampling_rates` applies to flows whose exporter announced no rate (decoded as 1).
Both map an exporter address or network to a rate; the longest prefix wins.

Applied to the decoded documents, a table at a time: `flowd.sampling_rate` becomes the rate and
the estimated totals (`network.*`, `source.*` and `destination.*` bytes and packets) are scaled by
it; the raw counters (`flowd.raw_*`, `netflow.*`, `sflow.*`) stay as the exporter sent them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.config_values import parse_exporter_rates
from flowd.enrich.addresses import PrefixMap
from flowd.output.documents import MAX_LONG
from flowd.output.table import Table

RATE_KEY = "flowd.sampling_rate"
TOTALS_FROM_RAW = (("network.bytes", "flowd.raw_bytes"), ("network.packets", "flowd.raw_packets"))
"""Both directions' estimates, recomputed from the raw counters they were scaled from."""
PER_DIRECTION = ("source.bytes", "source.packets", "destination.bytes", "destination.packets")
"""Estimates per direction, which have no raw counterpart in the document: rescaled."""

Integers = npt.NDArray[np.int64]
Rows = npt.NDArray[np.bool_]
Column = tuple[Integers, Rows]
"""Integers (0 where absent) and the rows that have a value."""


class SamplingRates:
    """The configured rates, applied to tables of documents (`apply`)."""

    def __init__(self, overrides: dict[str, int], defaults: dict[str, int]) -> None:
        self._overrides = PrefixMap(parse_exporter_rates("enrich.sampling_rates", overrides))
        self._defaults = PrefixMap(parse_exporter_rates("enrich.default_sampling_rates", defaults))
        self.configured = bool(self._overrides or self._defaults)
        self.counters = {"sampling_rates_configured": 0}
        """Documents whose rate the configuration set."""

    def rates_of(self, exporter: Any) -> tuple[int, int]:
        """(rate replacing the announced one, rate for flows announcing none) of one exporter
        address, 0 where the configuration has none; once per distinct exporter of a table."""
        return self._overrides.lookup_text(exporter) or 0, self._defaults.lookup_text(exporter) or 0

    def apply(self, table: Table) -> None:
        """Set the configured rates in the documents of `table` that they apply to, and scale
        their estimated totals to them."""
        if not self.configured or not len(table):
            return
        exporters = table.factorize("observer.ip")
        announced = _integer_column(table, RATE_KEY)
        if exporters is None or announced is None:
            return
        distinct, index = exporters
        configured = np.array([self.rates_of(exporter) for exporter in distinct], dtype=np.int64)[index]
        old, has_rate = announced
        override, default = configured[:, 0], configured[:, 1]
        new = np.where(override > 0, override, np.where((old <= 1) & (default > 0), default, old))
        changed = has_rate & (new != old)
        if not changed.any():
            return
        self.counters["sampling_rates_configured"] += int(np.count_nonzero(changed))
        for key, raw_key in TOTALS_FROM_RAW:
            estimate, raw = _integer_column(table, key), _integer_column(table, raw_key)
            if estimate is not None and raw is not None:
                rows = changed & estimate[1] & raw[1]
                _set_integers(table, key, np.where(rows, _saturated(raw[0], new), estimate[0]), estimate[1])
        rescalable = changed & (old > 0)  # a rate of 0 left nothing to divide back
        for key in PER_DIRECTION:
            estimate = _integer_column(table, key)
            if estimate is not None:
                rows = rescalable & estimate[1]
                unscaled = estimate[0] // np.where(rows, old, 1)
                _set_integers(table, key, np.where(rows, _saturated(unscaled, new), estimate[0]), estimate[1])
        _set_integers(table, RATE_KEY, np.where(changed, new, old), has_rate)


def _saturated(values: Integers, factors: Integers) -> Integers:
    """`values` × `factors`, saturated at the largest long (what a document can hold)."""
    limits = MAX_LONG // np.maximum(factors, 1)
    return np.where(values > limits, MAX_LONG, values * factors)


def _integer_column(table: Table, key: str) -> Column | None:
    """`key`'s integers (0 where absent) and the rows that have one; None when no row has it."""
    array = table.integers(key)
    if array is not None:
        return array.astype(np.int64), np.ones(len(array), dtype=np.bool_)
    values = table.column(key)
    if values is None:
        return None
    present = np.fromiter((type(value) is int and 0 <= value <= MAX_LONG for value in values), np.bool_, len(values))
    numbers = [value if keep else 0 for value, keep in zip(values, present.tolist(), strict=True)]
    return np.array(numbers, dtype=np.int64), present


def _set_integers(table: Table, key: str, values: Integers, present: Rows) -> None:
    """`values` in the rows that have one; the other rows keep what they had."""
    if present.all():
        table.add(key, values)
    else:
        table.override(
            key, [value if keep else None for value, keep in zip(values.tolist(), present.tolist(), strict=True)]
        )
