"""`DocumentTable.to_ndjson` against orjson: the same documents, whatever the values."""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowd.output.address_columns import ipv6_column
from flowd.output.render import render_hex64, render_integers, render_ipv4, render_iso_ms
from flowd.output.table import DocumentTable, FieldGroup, LazyColumn, factorize_values, split_lines
from flowd.output.timestamps import iso_from_ms

scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.text(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.text(max_size=8), max_size=3),
)


def rendered(matrix: np.ndarray[Any, Any]) -> list[bytes]:
    """Each row's value without the padding around it: whitespace inside a value stays and fails
    the comparison, as it would make the JSON invalid."""
    return [bytes(row).strip(b" ") for row in matrix]


def parsed(table: DocumentTable) -> list[dict[str, Any]]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        assert len({k for k, _ in pairs}) == len(pairs)
        return dict(pairs)

    lines = split_lines(table.to_ndjson())
    assert len(lines) == len(table)
    return [json.loads(line, object_pairs_hook=no_duplicates) for line in lines]


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=50))
def test_signed_integers_render_as_python_prints_them(values: list[int]) -> None:
    assert rendered(render_integers(np.array(values, dtype=np.int64))) == [str(v).encode() for v in values]


@given(st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=1, max_size=50))
def test_unsigned_integers_render_as_python_prints_them(values: list[int]) -> None:
    assert rendered(render_integers(np.array(values, dtype=np.uint64))) == [str(v).encode() for v in values]


@given(st.lists(st.integers(min_value=0, max_value=2**32 - 1), min_size=1, max_size=50))
def test_ipv4_addresses_render_as_dotted_quads(values: list[int]) -> None:
    expected = [f'"{ipaddress.IPv4Address(v)}"'.encode() for v in values]
    assert rendered(render_ipv4(np.array(values, dtype=">u4"))) == expected


_groups = st.one_of(st.just(0), st.just(0xFFFF), st.integers(min_value=0, max_value=0xFFFF))
ipv6_addresses = st.lists(_groups, min_size=8, max_size=8).map(lambda g: b"".join(v.to_bytes(2, "big") for v in g))
"""Mostly zero groups and 0xffff: runs to compress, IPv4-mapped and IPv4-compatible forms."""


@given(st.lists(ipv6_addresses, min_size=1, max_size=40))
def test_ipv6_addresses_render_as_the_c_library_writes_them(values: list[bytes]) -> None:
    expected = [socket.inet_ntop(socket.AF_INET6, v) for v in values]
    column = ipv6_column(np.frombuffer(b"".join(values), dtype="V16"))
    assert rendered(column.render()[0]) == [f'"{text}"'.encode() for text in expected]
    assert column.values() == expected
    distinct, index = column.distinct()
    assert [column.values_of(distinct)[i] for i in index.tolist()] == expected
    table = DocumentTable(len(values))
    table.add("source.ip", column)
    assert parsed(table) == [{"source.ip": text} for text in expected]


@given(st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=1, max_size=50))
def test_ids_render_as_sixteen_hex_digits(values: list[int]) -> None:
    assert rendered(render_hex64(np.array(values, dtype=np.uint64))) == [f'"{v:016x}"'.encode() for v in values]


@given(st.lists(st.integers(min_value=0, max_value=253_402_300_799_999), min_size=1, max_size=50))
def test_times_render_as_iso_from_ms(values: list[int]) -> None:
    matrix = render_iso_ms(np.array(values, dtype=np.int64))
    assert matrix is not None
    assert rendered(matrix) == [f'"{iso_from_ms(v)}"'.encode() for v in values]


def test_times_beyond_four_digit_years_are_left_to_python() -> None:
    assert render_iso_ms(np.array([253_402_300_800_000], dtype=np.int64)) is None
    assert render_iso_ms(np.array([-1], dtype=np.int64)) is None


@given(
    st.integers(min_value=1, max_value=12).flatmap(
        lambda rows: st.tuples(
            st.just(rows),
            st.lists(st.lists(st.one_of(st.none(), scalars), min_size=rows, max_size=rows), max_size=6),
            st.dictionaries(st.sampled_from(["k.a", "k.b", "event.kind"]), scalars, max_size=3),
            st.lists(
                st.one_of(st.none(), st.dictionaries(st.sampled_from(["g.x", "c0", "k.a"]), scalars, max_size=2)),
                min_size=rows,
                max_size=rows,
            ),
        )
    )
)
def test_ndjson_parses_to_the_dict_documents(case: tuple[Any, ...]) -> None:
    rows, columns, constants, groups = case
    table = DocumentTable(rows)
    table.add("always", np.arange(rows, dtype=np.uint16))
    for index, column in enumerate(columns):
        table.add(f"c{index}", column)
    for key, value in constants.items():
        table.set_constant(key, value)
    distinct, index = factorize_values([repr(g) for g in groups])
    table.add_groups([None if text == "None" else FieldGroup(eval(text)) for text in distinct], index)
    expected = table.to_dicts()
    assert parsed(table) == expected
    assert expected == [orjson.loads(orjson.dumps(d)) for d in expected]


def test_one_and_true_in_one_column_stay_apart() -> None:
    table = DocumentTable(3)
    table.add("v", [1, True, 1.0])
    assert parsed(table) == [{"v": 1}, {"v": True}, {"v": 1.0}]
    assert [type(d["v"]) for d in parsed(table)] == [int, bool, float]


def test_an_integer_beyond_64_bits_raises_for_the_caller_to_isolate() -> None:
    table = DocumentTable(2)
    table.add("v", [1, 2**64])
    with pytest.raises(orjson.JSONEncodeError):
        table.to_ndjson()


def test_a_table_of_only_sparse_columns_opens_with_a_constant_or_refuses() -> None:
    table = DocumentTable(2)
    table.add("v", [1, None])
    with pytest.raises(ValueError):
        table.to_ndjson()
    table.set_constant("k", "x")
    assert parsed(table) == [{"k": "x", "v": 1}, {"k": "x"}]


def test_factorize_gives_every_row_its_distinct_value() -> None:
    table = DocumentTable(5)
    table.add("ints", np.array([3, 1, 3, 2, 1], dtype=np.uint16))
    table.add("texts", ["b", None, "a", "b", None])
    table.set_constant("same", "x")
    for key in ("ints", "texts", "same"):
        found = table.factorize(key)
        assert found is not None
        distinct, index = found
        assert [distinct[i] for i in index] == table.column(key)
    assert table.factorize("absent") is None


def test_a_blanked_row_loses_the_key_in_both_outputs() -> None:
    table = DocumentTable(3)
    table.add("n", np.array([1, 2, 3], dtype=np.uint8))
    table.set_constant("c", 7)
    rows = np.array([False, True, False])
    table.set_constant("k", "x")
    table.blank("n", rows)
    table.blank("c", rows)
    expected = [{"n": 1, "c": 7, "k": "x"}, {"k": "x"}, {"n": 3, "c": 7, "k": "x"}]
    assert parsed(table) == table.to_dicts() == expected


@given(st.integers(min_value=-(2**63), max_value=2**64 - 1), st.integers(min_value=2, max_value=40))
def test_a_constant_integer_column_renders_once_for_every_row(value: int, rows: int) -> None:
    dtype = np.int64 if value < 2**63 else np.uint64
    matrix = render_integers(np.full(rows, value, dtype=dtype))
    assert matrix.strides[0] == 0  # one rendering, broadcast
    assert rendered(matrix) == [str(value).encode()] * rows


def test_constant_columns_and_groups_go_into_every_document_and_blanks_still_apply() -> None:
    table = DocumentTable(4)
    table.add("n", np.full(4, -7, dtype=np.int64))
    table.add("ip", LazyColumn(np.full(4, 0x0A000001, dtype=np.uint32), render_ipv4, _dotted, elementwise=True))
    table.add("same", ["x", "x", "x", "x"])
    table.add("varies", np.arange(4, dtype=np.int64))
    table.add_groups([FieldGroup({"g.city": "Oslo"})], np.zeros(4, dtype=np.intp))
    table.blank("n", np.array([False, True, False, False]))
    expected = [
        {"n": -7, "ip": "10.0.0.1", "same": "x", "varies": 0, "g.city": "Oslo"},
        {"ip": "10.0.0.1", "same": "x", "varies": 1, "g.city": "Oslo"},
        {"n": -7, "ip": "10.0.0.1", "same": "x", "varies": 2, "g.city": "Oslo"},
        {"n": -7, "ip": "10.0.0.1", "same": "x", "varies": 3, "g.city": "Oslo"},
    ]
    assert table.to_dicts() == expected
    assert parsed(table) == expected


def _dotted(array: np.ndarray[Any, Any]) -> list[str]:
    return [str(ipaddress.IPv4Address(int(v))) for v in array.tolist()]
