"""Fletcher-32 of every stored feature vector: a changed byte on disk is found when it is read.

Each (t, slot, sample) vector of a feature dataset has its checksum in
``/{split}/checksums/{layer}`` (T, S, N) uint32, computed by the writer over the bytes it stores and
checked by the reader over the bytes it reads. The checksum is Fletcher's (Fletcher 1982) over the
vector's bytes as little-endian 16-bit words ``w_1..w_n``, with modulus 2**16 (the variant whose
sums wrap in machine integers, so numpy computes them at memory speed):
``s1 = sum(w_i)``, ``s2 = sum over j of (w_1 + ... + w_j)``, both mod 2**16, checksum
``s2 << 16 | s1``. Any one changed bit changes ``s1``; ``s2`` depends on the words' order.

Why not HDF5's own ``fletcher32`` filter: the writer allocates every chunk when the cache is
created (so a killed process never leaves the file's metadata half-updated), and HDF5 then
pre-writes every filtered chunk, which doubles the bytes a cache costs to write (measured: 2.0x,
against 1.0x unfiltered). Per-vector sums are written with the vectors they cover, whatever the
block or resume boundaries, for 4 bytes per vector.
"""

from __future__ import annotations

import numpy as np

#: 16-bit words summed at once (bounds the temporary prefix sums to 64 MiB)
_WORDS_PER_BLOCK = 1 << 24


def fletcher32(vectors: np.ndarray) -> np.ndarray:
    """The checksum of each vector along the last axis, over its bytes: shape ``vectors.shape[:-1]``, uint32."""
    if vectors.dtype.byteorder == ">" or (vectors.dtype.byteorder == "=" and np.little_endian is False):
        vectors = vectors.astype(vectors.dtype.newbyteorder("<"))
    words = np.ascontiguousarray(vectors).view(np.uint16)
    n = words.shape[-1]
    flat = words.reshape(-1, n)
    out = np.empty(len(flat), dtype=np.uint32)
    rows = max(1, _WORDS_PER_BLOCK // max(n, 1))
    for lo in range(0, len(flat), rows):
        prefix = np.cumsum(flat[lo : lo + rows], axis=1, dtype=np.uint32)  # wraps mod 2**32, a multiple of 2**16
        s1 = prefix[:, -1] & np.uint32(0xFFFF)
        s2 = prefix.sum(axis=1, dtype=np.uint32) & np.uint32(0xFFFF)
        out[lo : lo + rows] = (s2 << np.uint32(16)) | s1
    return out.reshape(words.shape[:-1])
