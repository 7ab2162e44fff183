"""Documents as columns, written out as dicts or straight to NDJSON.

A `DocumentTable` holds the documents of one decoded data set: a value column per key (None in
a row means the key is absent from that document), constants shared by every row, and field
groups (several fields known together, such as an address's GeoIP fields) chosen per row.

`to_ndjson` never builds a dict per document. Each column renders to a byte matrix, one row per
document (`render.py`: integers by numpy digit arithmetic, addresses and ids from their arrays,
everything else by orjson once per distinct value), padded with spaces; the matrices are laid side
by side after their `,"key":` prefixes and an absent value turns its whole field into spaces. The
result is the NDJSON as it is, with insignificant whitespace where values are shorter than their
column. The dict-per-document path costs about fifty dict insertions and an orjson call per flow,
the largest share of a worker's time; this one is a few C loops per column.

`to_dicts` gives the same documents as dicts; a test holds both to the same output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from flowd.decode.memo import MEMO_CLEARS
from flowd.output.distinct import unique_inverse
from flowd.output.render import PAD, render_fragments, render_integers, render_values

Matrix = npt.NDArray[np.uint8]
Missing = npt.NDArray[np.bool_] | None
Factorized = tuple[npt.NDArray[Any], npt.NDArray[np.intp]]
"""Distinct elements of an array and each element's index among them."""


class FieldGroup:
    """Fields that go into a document together; rendered once, however many rows use them."""

    __slots__ = ("_fragment", "fields", "keys")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self.keys = _interned_keys(tuple(fields))
        """The field names, one shared frozenset per combination (so tables compare them cheaply)."""
        self._fragment: bytes | None = None

    @classmethod
    def shared(cls, fields: dict[str, Any]) -> FieldGroup:
        """The one group of these fields: callers that make a group per address (most of which
        add the same few fields) get a shared object, so a table renders each content once."""
        key = orjson.dumps(fields)
        group = _SHARED_GROUPS.get(key)
        if group is None:
            if len(_SHARED_GROUPS) >= MAX_SHARED_GROUPS:
                _SHARED_GROUPS.clear()
                MEMO_CLEARS["field_groups"] += 1
            group = _SHARED_GROUPS[key] = cls(fields)
        return group

    @property
    def fragment(self) -> bytes:
        """`,"key":value,...` (empty for no fields)."""
        if self._fragment is None:
            self._fragment = b"," + orjson.dumps(self.fields)[1:-1] if self.fields else b""
        return self._fragment


MAX_SHARED_GROUPS = 65_536
_SHARED_GROUPS: dict[bytes, FieldGroup] = {}
MAX_KEY_SETS = 4096
_KEY_SETS: dict[tuple[str, ...], frozenset[str]] = {}


def _interned_keys(keys: tuple[str, ...]) -> frozenset[str]:
    found = _KEY_SETS.get(keys)
    if found is None:
        if len(_KEY_SETS) > MAX_KEY_SETS:  # key combinations are few; bound it anyway
            _KEY_SETS.clear()
            MEMO_CLEARS["field_key_sets"] += 1
        found = _KEY_SETS[keys] = frozenset(keys)
    return found


class LazyColumn:
    """A column kept as a numpy array, turned into Python values only when something asks.

    `render` writes JSON from the array directly (dotted quads, hex ids, ISO times), once
    however many keys share the column, and may return None to fall back to rendering the
    Python values. `missing` marks rows without a value (their Python value is None).
    """

    __slots__ = (
        "_convert",
        "_distinct",
        "_find_distinct",
        "_render",
        "_rendered",
        "_values",
        "array",
        "elementwise",
        "missing",
    )

    def __init__(
        self,
        array: npt.NDArray[Any],
        render: Callable[[npt.NDArray[Any]], Matrix | None],
        convert: Callable[[npt.NDArray[Any]], list[Any]],
        missing: Missing = None,
        # `convert` gives every row's value; `values()` applies `missing`.
        *,
        elementwise: bool = False,
        distinct: Callable[[], Factorized] | None = None,
    ) -> None:
        self.array = array
        self.missing = missing
        self.elementwise = elementwise
        """`convert` maps each element of `array` to its value alone, so distinct array values
        are distinct document values (`DocumentTable.factorize` relies on it)."""
        self._render = render
        self._convert = convert
        self._values: list[Any] | None = None
        self._rendered: tuple[Matrix, Missing] | None = None
        self._find_distinct = distinct
        """Where `distinct` comes from when the column's owner already knows it."""
        self._distinct: Factorized | None = None

    def distinct(self) -> Factorized:
        """The distinct elements of `array` and each row's index among them, found once (an
        `elementwise` column's are its distinct values: rendering, documents and enrichment
        all ask)."""
        if self._distinct is None:
            find = self._find_distinct
            self._distinct = find() if find is not None else unique_inverse(self.array)
        return self._distinct

    def without(self, rows: npt.NDArray[np.bool_]) -> LazyColumn:
        """The same column with `rows` absent."""
        original = self
        missing = rows if self.missing is None else self.missing | rows
        return LazyColumn(self.array, lambda _: original.render()[0], self._convert, missing)

    def __len__(self) -> int:
        return len(self.array)

    def values_of(self, elements: npt.NDArray[Any]) -> list[Any]:
        """Python values of other elements of the same kind (an `elementwise` column's distinct ones)."""
        return self._convert(elements)

    def values(self) -> list[Any]:
        """Python values, None in the missing rows."""
        if self._values is None:
            values = self._convert(self.array)
            if self.missing is not None:
                values = [None if gone else v for v, gone in zip(values, self.missing.tolist(), strict=True)]
            self._values = values
        return self._values

    def render(self) -> tuple[Matrix, Missing]:
        if self._rendered is None:
            matrix = self._render_constant()
            if matrix is None:
                matrix = self._render(self.array)
            self._rendered = (matrix, self.missing) if matrix is not None else render_values(self.values())
        return self._rendered

    def _render_constant(self) -> Matrix | None:
        """One value in every row (an exporter's address, a layout's protocol) rendered once and
        broadcast, which `to_ndjson` then writes into its template row instead of every row."""
        array = self.array
        if not self.elementwise or self.missing is not None or array.ndim != 1 or len(array) < 2:
            return None
        if array.dtype.kind not in "iu" or array.min() != array.max():
            return None
        single = self._render(array[:1])
        return None if single is None else np.broadcast_to(single, (len(array), single.shape[1]))


Column = list[Any] | npt.NDArray[Any] | LazyColumn
"""A Python list (None: absent in that row), a numpy integer array, or a `LazyColumn`."""


def python_values(column: Column) -> list[Any]:
    if isinstance(column, LazyColumn):
        return column.values()
    if isinstance(column, np.ndarray):
        return column.tolist()  # type: ignore[no-any-return]
    return column


def python_list(array: npt.NDArray[Any]) -> list[Any]:
    """An array's Python values: the `convert` of a `LazyColumn` whose array is its values."""
    return array.tolist()  # type: ignore[no-any-return]


def render_column(column: Column) -> tuple[Matrix, Missing]:
    """The JSON of every value as a space-padded byte matrix, and the rows without a value."""
    if isinstance(column, LazyColumn):
        return column.render()
    if isinstance(column, np.ndarray):
        return render_integers(column), None
    return render_values(column)


ROWS_PER_CHUNK = 1024
"""Rows `to_ndjson` fills at once (about 2 MB of documents), bounding the rows each pass touches
(256 to 4,096 measured alike)."""
Groups = tuple[list["FieldGroup | None"], npt.NDArray[np.intp]]
"""Distinct groups and, per row, the index of its group."""


class DocumentTable:
    """The documents of one data set as columns; see the module docstring."""

    __slots__ = ("constants", "count", "fields", "groups")

    def __init__(self, count: int) -> None:
        self.count = count
        self.fields: dict[str, Column] = {}
        self.constants: dict[str, Any] = {}
        self.groups: list[Groups] = []

    def __len__(self) -> int:
        return self.count

    def add(self, key: str, column: Column) -> None:
        """A column for `key`, replacing a constant or column of that key."""
        self.constants.pop(key, None)
        self.fields[key] = column

    def set_constant(self, key: str, value: Any) -> None:
        self.fields.pop(key, None)
        self.constants[key] = value

    def column(self, key: str) -> list[Any] | None:
        """The Python values of `key` in every row (None where absent); None when no row has it."""
        column = self.fields.get(key)
        if column is not None:
            return python_values(column)
        if key in self.constants:
            return [self.constants[key]] * self.count
        return None

    def integers(self, key: str) -> npt.NDArray[Any] | None:
        """`key` as an integer array when it is one with a value in every row."""
        column = self.fields.get(key)
        if isinstance(column, np.ndarray):
            return column
        value = self.constants.get(key)
        if type(value) is int:
            return np.full(self.count, value, dtype=np.int64)
        return None

    def factorize(self, key: str, *, raw: bool = False) -> tuple[list[Any], npt.NDArray[np.intp]] | None:
        """The distinct values of `key` (None among them for rows without it) and each row's index.
        `raw`: a lazily rendered column's values as its array holds them (MACs as integers), not
        as the documents show them."""
        column = self.fields.get(key)
        if column is None:
            if key not in self.constants:
                return None
            return [self.constants[key]], np.zeros(self.count, dtype=np.intp)
        if isinstance(column, np.ndarray):
            distinct, index = unique_inverse(column)
            return distinct.tolist(), index
        if isinstance(column, LazyColumn) and column.elementwise and column.array.ndim == 1:
            distinct, index = column.distinct()
            values = distinct.tolist() if raw else column.values_of(distinct)
            if column.missing is not None:
                values.append(None)
                index = np.where(column.missing, len(values) - 1, index)
            return values, index
        return factorize_values(python_values(column))

    def factorize_array(self, key: str) -> tuple[npt.NDArray[Any], npt.NDArray[np.intp]] | None:
        """Distinct raw array values of `key` and each row's index, when the column is an array
        (a `LazyColumn` with a value in every row, such as IPv4 addresses as uint32); else None."""
        column = self.fields.get(key)
        if isinstance(column, LazyColumn) and column.elementwise and column.missing is None and column.array.ndim == 1:
            return column.distinct()
        return None

    def override(self, key: str, values: list[Any]) -> None:
        """Set `key` in the rows where `values` is not None; the other rows keep what they had."""
        old = self.column(key)
        if old is not None:
            values = [o if v is None else v for v, o in zip(values, old, strict=True)]
        self.add(key, values)

    def add_groups(self, distinct: list[FieldGroup | None], index: npt.NDArray[np.intp]) -> None:
        """Group `distinct[index[row]]` goes into each row (None: nothing); a group's fields win
        over a column or constant of the same key."""
        if len(distinct) > 1:  # groups equal in content are often one object (see `FieldGroup.shared`)
            ids = np.fromiter(map(id, distinct), dtype=np.uint64, count=len(distinct))
            unique, first, remap = np.unique(ids, return_index=True, return_inverse=True)
            if len(unique) < len(distinct):
                distinct = [distinct[i] for i in first.tolist()]
                index = remap.reshape(-1)[index]
        keys: set[str] = set()
        for key_set in {g.keys for g in distinct if g is not None}:
            keys |= key_set
        for key in keys & (self.fields.keys() | self.constants.keys()):
            holders = [i for i, g in enumerate(distinct) if g is not None and key in g.fields]
            self.blank(key, np.isin(index, holders))
        self.groups.append((distinct, index))

    def blank(self, key: str, rows: npt.NDArray[np.bool_]) -> None:
        """Remove `key` from the documents of `rows`."""
        column = self.fields.get(key)
        if isinstance(column, LazyColumn):
            self.fields[key] = column.without(rows)
        elif isinstance(column, np.ndarray):
            self.fields[key] = LazyColumn(column, render_integers, lambda a: a.tolist()).without(rows)
        else:
            values = self.column(key)
            assert values is not None
            self.add(key, [None if gone else v for v, gone in zip(values, rows.tolist(), strict=True)])

    # -- output -------------------------------------------------------------------------

    def to_dicts(self) -> list[dict[str, Any]]:
        if not self.count:
            return []
        keys = list(self.fields)
        values = [python_values(c) for c in self.fields.values()]
        sparse = [i for i, v in enumerate(values) if None in v]
        constants = self.constants
        documents = []
        for row in zip(*values, strict=True):
            document = dict(zip(keys, row, strict=True))
            for index in sparse:
                if row[index] is None:
                    del document[keys[index]]
            document.update(constants)
            documents.append(document)
        for distinct, rows in self.groups:
            for document, position in zip(documents, rows.tolist(), strict=True):
                group = distinct[position]
                if group is not None:
                    document.update(group.fields)
        return documents

    def to_ndjson(self, prefixes: Matrix | None = None) -> bytes:
        """One JSON object per row, each ending in a newline. Raises `orjson.JSONEncodeError` for
        a value JSON cannot hold (an integer beyond 64 bits); `to_dicts` then isolates it.

        `prefixes` (a space-padded byte matrix, a row per document) goes before each document: the
        `_bulk` action lines of `BulkEncoder.action_lines`, so a bulk body needs no pass per line.
        """
        return bytes(self.to_ndjson_buffer(prefixes))

    def to_ndjson_buffer(self, prefixes: Matrix | None = None) -> memoryview:
        """`to_ndjson` as a view of the array it was laid out in, not copied into `bytes`: the
        sinks write it or join it into a request body, which copies it anyway, so this saves a
        copy and an allocation of megabytes per table."""
        count = self.count
        if not count:
            return memoryview(b"")
        pieces: list[tuple[bytes, Matrix, Missing]] = []
        rendered: dict[int, tuple[Matrix, Missing]] = {}  # a column shared by several keys renders once
        for key, column in self.fields.items():
            matrix, missing = rendered.get(id(column)) or rendered.setdefault(id(column), render_column(column))
            pieces.append((b',"' + key.encode() + b'":', matrix, missing))  # keys are ours: no escaping
        head = b"{" + orjson.dumps(self.constants)[1:-1]
        if len(head) == 1:  # no constants: open with a field every row has
            first = next((i for i, (_, _, missing) in enumerate(pieces) if missing is None), None)
            if first is None:
                raise ValueError("a table needs a constant or a column present in every row")
            prefix, matrix, _ = pieces.pop(first)
            head += prefix[1:]
            pieces.insert(0, (b"", matrix, None))
        groups = [
            (render_fragments([b"" if g is None else g.fragment for g in distinct]), index)
            for distinct, index in self.groups
        ]
        # One row of every constant byte (the opening, each `,"key":`, the closing), value slots blank.
        template = bytearray()
        slots: list[tuple[int, int, int, Matrix, Missing]] = []  # (field start, value start, end, ...)
        if prefixes is not None:
            if len(prefixes) != count:
                raise ValueError(f"{len(prefixes)} prefixes for {count} documents")
            slots.append((0, 0, prefixes.shape[1], prefixes, None))
            template += b" " * prefixes.shape[1]
        template += head
        for prefix, matrix, missing in pieces:
            start = len(template)
            template += prefix
            if missing is None and _is_constant(matrix):  # the same bytes in every row: no slot
                template += matrix[0].tobytes()
                continue
            slots.append((start, len(template), len(template) + matrix.shape[1], matrix, missing))
            template += b" " * matrix.shape[1]
        group_slots = []
        for fragments, index in groups:
            if len(fragments) == 1:  # every row has the one group
                template += fragments[0].tobytes()
                continue
            group_slots.append((len(template), len(template) + fragments.shape[1], fragments, index))
            template += b" " * fragments.shape[1]
        template += b"}\n"
        row = np.frombuffer(bytes(template), dtype=np.uint8)
        width = len(row)
        out = np.empty((count, width), dtype=np.uint8)
        # Each value slot as one fixed-size element per row: copies go element by element, not
        # byte by byte.
        filled = [slot for slot in slots if slot[2] > slot[1]]  # an empty value has no bytes to copy
        fields = np.dtype(
            {
                "names": [f"f{i}" for i in range(len(filled))],
                "formats": [np.dtype((np.void, end - start)) for _, start, end, _, _ in filled],
                "offsets": [start for _, start, _, _, _ in filled],
                "itemsize": width,
            }
        )
        records = out.view(fields).reshape(count)
        values = [records[f"f{i}"] for i in range(len(filled))]
        sources = [_elements(matrix) for _, _, _, matrix, _ in filled]
        for first in range(0, count, ROWS_PER_CHUNK):  # each chunk warm in cache while filled
            last = min(count, first + ROWS_PER_CHUNK)
            chunk = out[first:last]
            chunk[:] = row
            for target, source in zip(values, sources, strict=True):
                target[first:last] = source[first:last]
            for field_start, _, end, _, missing in slots:
                if missing is not None:
                    chunk[missing[first:last], field_start:end] = PAD
            for value_start, end, fragments, index in group_slots:
                chunk[:, value_start:end] = np.take(fragments, index[first:last], axis=0)
        return out.reshape(-1).data


def _is_constant(matrix: Matrix) -> bool:
    """Whether `matrix` is one row broadcast to every row (`render_values` and `render_integers`
    return a single value so)."""
    return matrix.strides[0] == 0 or len(matrix) == 1


def _elements(matrix: Matrix) -> npt.NDArray[np.void]:
    """A byte matrix as one fixed-size element per row."""
    matrix = np.ascontiguousarray(matrix)
    return matrix.view(np.dtype((np.void, matrix.shape[1]))).reshape(len(matrix))


def split_lines(body: bytes) -> list[bytes]:
    """NDJSON into its documents (without newlines); JSON text never holds a raw newline."""
    return body.split(b"\n")[:-1]


def factorize_values(values: list[Any]) -> tuple[list[Any], npt.NDArray[np.intp]]:
    """Distinct hashable values in first-seen order, and each value's index."""
    positions: dict[Any, int] = {}
    index = [positions.setdefault(v, len(positions)) for v in values]
    return list(positions), np.array(index, dtype=np.intp)


class DocumentsView:
    """The table interface over documents that are dicts already (sFlow samples, options and
    variable-length records), so one enrichment implementation serves both; writes go straight
    into the dicts. Columns read are kept until a write could change them."""

    __slots__ = ("_columns", "count", "documents")

    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self.documents = documents
        self.count = len(documents)
        self._columns: dict[str, list[Any] | None] = {}

    def __len__(self) -> int:
        return self.count

    def column(self, key: str) -> list[Any] | None:
        if key in self._columns:
            return self._columns[key]
        values: list[Any] | None = [d.get(key) for d in self.documents]
        if values is not None and values.count(None) == len(values):
            values = None
        self._columns[key] = values
        return values

    def integers(self, key: str) -> npt.NDArray[Any] | None:
        return None

    def factorize_array(self, key: str) -> tuple[npt.NDArray[Any], npt.NDArray[np.intp]] | None:
        return None

    def factorize(self, key: str, *, raw: bool = False) -> tuple[list[Any], npt.NDArray[np.intp]] | None:
        values = self.column(key)
        return None if values is None else factorize_values(values)

    def add(self, key: str, column: Column) -> None:
        self._columns.pop(key, None)
        for document, value in zip(self.documents, python_values(column), strict=True):
            if value is not None:
                document[key] = value

    override = add

    def set_constant(self, key: str, value: Any) -> None:
        self._columns.pop(key, None)
        for document in self.documents:
            document[key] = value

    def add_groups(self, distinct: list[FieldGroup | None], index: npt.NDArray[np.intp]) -> None:
        for keys in {g.keys for g in distinct if g is not None}:
            for key in keys:
                self._columns.pop(key, None)
        for document, position in zip(self.documents, index.tolist(), strict=True):
            group = distinct[position]
            if group is not None:
                document.update(group.fields)


Table = DocumentTable | DocumentsView
