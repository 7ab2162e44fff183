"""`unique_inverse` against `np.unique(..., return_inverse=True)`, for spans on both sides of
the lookup-table bound and for every integer width and sign."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flowd.output import distinct as distinct_module
from flowd.output.distinct import DENSE_SPAN, unique_inverse

DTYPES = (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.intp)


@given(st.sampled_from(DTYPES), st.data())
@settings(max_examples=300, deadline=None)
def test_equals_np_unique(dtype: type[np.integer], data: st.DataObject) -> None:
    info = np.iinfo(dtype)
    low = data.draw(st.integers(int(info.min), int(info.max)))
    span = data.draw(st.sampled_from((1, 50, DENSE_SPAN, DENSE_SPAN + 1, 1 << 40)))
    high = min(int(info.max), low + span - 1)
    values = np.array(data.draw(st.lists(st.integers(low, high), max_size=300)), dtype=dtype)
    distinct, inverse = unique_inverse(values)
    expected_distinct, expected_inverse = np.unique(values, return_inverse=True)
    assert distinct.dtype == values.dtype
    assert distinct.tolist() == expected_distinct.tolist()
    assert inverse.tolist() == expected_inverse.reshape(-1).tolist()


def test_floats_and_strings_fall_back_to_np_unique() -> None:
    distinct, inverse = unique_inverse(np.array([2.5, 1.0, 2.5]))
    assert distinct.tolist() == [1.0, 2.5] and inverse.tolist() == [1, 0, 1]
    distinct, inverse = unique_inverse(np.array(["b", "a", "b"]))
    assert distinct.tolist() == ["a", "b"] and inverse.tolist() == [1, 0, 1]


sixteen_bytes = st.binary(min_size=16, max_size=16)


@given(st.lists(st.one_of(sixteen_bytes, st.sampled_from([bytes(16), b"\xff" * 16])), max_size=200))
def test_sixteen_byte_values_factorise_exactly(raw: list[bytes]) -> None:
    values = np.frombuffer(b"".join(raw), dtype="V16")
    distinct, inverse = unique_inverse(values)
    assert [distinct[i].tobytes() for i in inverse.tolist()] == raw
    assert len(distinct) == len(set(raw))


def test_sixteen_byte_values_sharing_a_key_still_factorise_exactly() -> None:
    """Two values built to have the same 64-bit key: the exact way is taken."""
    mask = (1 << 64) - 1
    odd = 0x9E3779B97F4A7C15
    first_low, first_high, second_high = 12345, 67890, 424242
    second_low = first_low ^ (first_high * odd & mask) ^ (second_high * odd & mask)
    raw = [
        first_low.to_bytes(8, "little") + first_high.to_bytes(8, "little"),
        second_low.to_bytes(8, "little") + second_high.to_bytes(8, "little"),
    ]
    values = np.frombuffer(b"".join(raw * 3), dtype="V16")
    assert distinct_module._hashed(values) is None
    distinct, inverse = unique_inverse(values)
    assert len(distinct) == 2
    assert [distinct[i].tobytes() for i in inverse.tolist()] == raw * 3
