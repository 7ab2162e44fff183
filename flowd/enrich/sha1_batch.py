"""SHA-1 (FIPS 180-4) of many short messages at once, in numpy.

A Community ID hashes 12 to 40 bytes per flow, and one `hashlib` call per flow costs about
0.25 µs, almost all of it the call and its objects rather than the hashing. Every message here
fits one 64-byte block (up to 55 bytes), so a batch is hashed as the standard's 80 rounds over
arrays holding one message per element: some 1,300 whole-array operations whatever the batch's
size. That costs less than the calls from a few thousand messages on (`WORTH_FROM`), about 0.11
µs per message at 20,000; smaller batches should keep `hashlib`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

WORTH_FROM = 4096
"""Messages per batch from which the array rounds cost less than a `hashlib` call each (the two
cross near 3,500 on our machines)."""

LONGEST = 55
"""The longest message that pads into one block (a 0x80 byte and the 8-byte length follow it)."""

_CHUNK = 32_768
"""Messages hashed together: larger arrays outgrow the CPU's caches and cost more per message."""

_INITIAL = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0)
_ROUND_CONSTANTS = (0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xCA62C1D6)

Words = npt.NDArray[np.uint32]


def sha1_digests(messages: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The SHA-1 digest of each row of `messages` (count × length bytes, length ≤ `LONGEST`), one
    20-byte row each."""
    count, length = messages.shape
    if length > LONGEST:
        raise ValueError(f"messages of {length} bytes need more than one block (at most {LONGEST})")
    digests = np.empty((count, 20), dtype=np.uint8)
    for start in range(0, count, _CHUNK):
        stop = min(start + _CHUNK, count)
        state = _compress(_padded_words(messages[start:stop]))
        digests[start:stop] = state.T.astype(">u4", order="C").view(np.uint8).reshape(stop - start, 20)
    return digests


def _padded_words(messages: npt.NDArray[np.uint8]) -> Words:
    """The one padded block of each message as 16 rows of big-endian words, a message per column."""
    count, length = messages.shape
    block = np.zeros((count, 64), dtype=np.uint8)
    block[:, :length] = messages
    block[:, length] = 0x80
    block[:, 62:] = np.frombuffer((length * 8).to_bytes(2, "big"), dtype=np.uint8)
    return block.view(">u4").T.astype(np.uint32, order="C")


def _compress(block: Words) -> Words:
    """The five state words after compressing one block per column from the initial state.

    Written for few whole-array passes: results go to preallocated arrays (`out=`), the message
    schedule is extended three rows per step (each row needs the ones three back), a rotation is
    two shifts combined by an add or an or (their bits do not overlap), and the five working
    variables rotate by renaming instead of copying.
    """
    count = block.shape[1]
    schedule = np.empty((80, count), dtype=np.uint32)
    schedule[:16] = block
    mixed = np.empty((3, count), dtype=np.uint32)
    shifted = np.empty((3, count), dtype=np.uint32)
    for row in range(16, 80, 3):
        end = min(row + 3, 80)
        x, y = mixed[: end - row], shifted[: end - row]
        np.bitwise_xor(schedule[row - 3 : end - 3], schedule[row - 8 : end - 8], out=x)
        np.bitwise_xor(x, schedule[row - 14 : end - 14], out=x)
        np.bitwise_xor(x, schedule[row - 16 : end - 16], out=x)
        np.left_shift(x, 1, out=y)
        np.right_shift(x, 31, out=x)
        np.bitwise_or(x, y, out=schedule[row:end])
    a, b, c, d, e = (np.full(count, value, dtype=np.uint32) for value in _INITIAL)
    mix = np.empty(count, dtype=np.uint32)
    spare = np.empty(count, dtype=np.uint32)
    for step in range(80):
        if step < 20:  # choose: d ^ (b & (c ^ d))
            np.bitwise_xor(c, d, out=mix)
            np.bitwise_and(mix, b, out=mix)
            np.bitwise_xor(mix, d, out=mix)
        elif 40 <= step < 60:  # majority: (b & c) | (d & (b | c))
            np.bitwise_or(b, c, out=mix)
            np.bitwise_and(mix, d, out=mix)
            np.bitwise_and(b, c, out=spare)
            np.bitwise_or(mix, spare, out=mix)
        else:  # parity
            np.bitwise_xor(b, c, out=mix)
            np.bitwise_xor(mix, d, out=mix)
        np.add(mix, e, out=mix)
        np.add(mix, schedule[step], out=mix)
        np.add(mix, np.uint32(_ROUND_CONSTANTS[step // 20]), out=mix)
        np.left_shift(a, 5, out=spare)
        np.add(mix, spare, out=mix)
        np.right_shift(a, 27, out=spare)
        np.add(mix, spare, out=mix)  # + a rotated left by 5
        np.left_shift(b, 30, out=e)  # e is spent: it takes b rotated left by 30
        np.right_shift(b, 2, out=spare)
        np.bitwise_or(e, spare, out=e)
        a, b, c, d, e, mix = mix, a, e, c, d, b
    state = np.empty((5, count), dtype=np.uint32)
    for row, (initial, value) in enumerate(zip(_INITIAL, (a, b, c, d, e), strict=True)):
        np.add(value, np.uint32(initial), out=state[row])
    return state
