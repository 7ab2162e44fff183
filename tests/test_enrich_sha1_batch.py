"""`sha1_batch.sha1_digests` against `hashlib` (OpenSSL's SHA-1), message by message."""

from __future__ import annotations

import hashlib
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowd.enrich import sha1_batch
from flowd.enrich.sha1_batch import LONGEST, sha1_digests


def _expected(messages: np.ndarray) -> list[bytes]:
    return [hashlib.sha1(row.tobytes()).digest() for row in messages]


@pytest.mark.parametrize("length", range(LONGEST + 1))
def test_every_length_that_fits_one_block(length: int) -> None:
    """Every message length pads differently (where the 0x80 byte and the bit count fall)."""
    rng = np.random.default_rng(length)
    messages = rng.integers(0, 256, size=(300, length), dtype=np.uint8)
    messages[0] = 0  # all zero and all ones: carries through every add
    messages[1] = 0xFF
    digests = sha1_digests(messages)
    assert [row.tobytes() for row in digests] == _expected(messages)


@given(st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=50))
@settings(max_examples=100, deadline=None)
def test_any_messages(rows: list[bytes]) -> None:
    messages = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), 16)
    assert [row.tobytes() for row in sha1_digests(messages)] == [hashlib.sha1(row).digest() for row in rows]


def test_chunks_join_in_order() -> None:
    """Batches longer than a chunk are hashed a chunk at a time; each digest stays on its row."""
    messages = np.random.default_rng(7).integers(0, 256, size=(1000, 40), dtype=np.uint8)
    with mock.patch.object(sha1_batch, "_CHUNK", 64):
        digests = sha1_digests(messages)
    assert [row.tobytes() for row in digests] == _expected(messages)


def test_empty_batch_and_too_long_messages() -> None:
    assert sha1_digests(np.zeros((0, 12), dtype=np.uint8)).shape == (0, 20)
    with pytest.raises(ValueError, match="one block"):
        sha1_digests(np.zeros((3, LONGEST + 1), dtype=np.uint8))
