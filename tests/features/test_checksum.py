import numpy as np
import pytest

from probekit.features.cache.checksum import fletcher32


def _by_definition(data: bytes) -> int:
    """Fletcher-32 (modulus 2**16) as its running sums define it, over little-endian 16-bit words."""
    s1 = s2 = 0
    for i in range(0, len(data), 2):
        s1 = (s1 + int.from_bytes(data[i : i + 2], "little")) % 65536
        s2 = (s2 + s1) % 65536
    return (s2 << 16) | s1


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_every_vector_matches_the_running_sums(dtype):
    rng = np.random.default_rng(0)
    values = (rng.standard_normal((3, 2, 5, 37)) * 1e3).astype(dtype)
    values[0, 0, 0] = np.finfo(dtype).max  # words near 65535
    got = fletcher32(values)
    assert got.shape == (3, 2, 5) and got.dtype == np.uint32
    for index in np.ndindex(got.shape):
        assert got[index] == _by_definition(values[index].astype(values.dtype.newbyteorder("<")).tobytes())


def test_long_vectors_and_many_rows_cross_the_blocks(monkeypatch):
    monkeypatch.setattr("probekit.features.cache.checksum._WORDS_PER_BLOCK", 3003)
    monkeypatch.setattr("probekit.features.cache.checksum._WORDS_PER_DOT", 256)
    rng = np.random.default_rng(1)
    values = rng.integers(0, 65536, (5, 1001), dtype=np.uint16).view(np.float16)  # 3 rows per block, 4 dots per row
    got = fletcher32(values)
    for row in range(5):
        assert got[row] == _by_definition(values[row].tobytes())


def test_vectors_longer_than_the_modulus():
    """Over 2**16 words, the positional weights wrap: every word at its maximum tests exactness."""
    rng = np.random.default_rng(3)
    values = rng.integers(0, 65536, (2, 70_001), dtype=np.uint16)
    values[1] = 65535
    got = fletcher32(values.view(np.float16))
    for row in range(2):
        assert got[row] == _by_definition(values[row].tobytes())


def test_one_flipped_bit_changes_the_sum():
    values = np.random.default_rng(2).standard_normal((50, 64)).astype(np.float32)
    before = fletcher32(values)
    flipped = values.copy()
    flipped.view(np.uint8)[7, 9 * 4 + 1] ^= 0x08
    after = fletcher32(flipped)
    assert np.flatnonzero(before != after).tolist() == [7]
    swapped = values.copy()
    swapped[3, [0, 5]] = swapped[3, [5, 0]]  # the same words in another order
    assert np.flatnonzero(fletcher32(swapped) != before).tolist() == [3]
