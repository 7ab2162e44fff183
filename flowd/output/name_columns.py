"""Columns of small codes written as their names: `network.iana_number`, `network.transport`
and `network.vlan.id` (strings in ECS) through a table rendered once, so a column of codes is
written by one `np.take` rather than a lookup per row. Shared by the flow and sFlow tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from flowd.output import ecs
from flowd.output.render import pad_nuls
from flowd.output.table import LazyColumn, Missing

Array = npt.NDArray[Any]


NameTable = tuple[npt.NDArray[np.uint8], list[str]]
"""The JSON string of each code (a padded byte matrix, a row per code) and its text."""


def _quoted_table(names: Callable[[int], str], size: int = 256) -> NameTable:
    texts = [names(value) for value in range(size)]
    encoded = np.array([f'"{t}"'.encode() for t in texts], dtype=np.bytes_)
    return pad_nuls(encoded.view(np.uint8).reshape(size, encoded.dtype.itemsize)), texts


IANA_NUMBERS = _quoted_table(str)
TRANSPORT_NAMES = _quoted_table(lambda p: ecs.TRANSPORTS.get(p, str(p)))
VLAN_IDS = _quoted_table(str, 4096)
"""`network.vlan.id` is a string in ECS; a 12-bit VLAN id is one of these."""


def byte_names(codes: Array, table: NameTable, missing: Missing = None) -> LazyColumn:
    """A column of small codes (a byte, or a VLAN id) through a table of names, one per code
    (every code must be below the table's length, `missing` rows' too)."""
    rendered, texts = table
    return LazyColumn(
        codes,
        lambda a: np.take(rendered, a.astype(np.intp), axis=0),
        lambda a: [texts[v] for v in a.tolist()],
        missing,
        elementwise=True,
    )


def vlan_id_column(values: Array, missing: Missing = None) -> LazyColumn | None:
    """`network.vlan.id` (a string in ECS) of 12-bit VLAN ids, through `VLAN_IDS`; None when a
    value is not one (`missing` rows' values must be one too)."""
    if len(values) and int(values.min()) >= 0 and int(values.max()) < len(VLAN_IDS[1]):
        return byte_names(values, VLAN_IDS, missing)
    return None
