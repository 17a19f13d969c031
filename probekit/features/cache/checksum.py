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

#: 16-bit words summed at once (bounds the temporary prefix sums to 256 KiB)
_WORDS_PER_BLOCK = 1 << 16


def fletcher32(vectors: np.ndarray) -> np.ndarray:
    """The checksum of each vector along the last axis, over its bytes: shape ``vectors.shape[:-1]``, uint32.

    Works on views (a block of rows of a larger array) without copying them whole: one 2-D slice
    at a time, a bounded number of rows at a time.
    """
    if vectors.dtype.byteorder == ">" or (vectors.dtype.byteorder == "=" and not np.little_endian):
        vectors = vectors.astype(vectors.dtype.newbyteorder("<"))
    if vectors.ndim == 1:
        return fletcher32(vectors[None])[0]
    out = np.empty(vectors.shape[:-1], dtype=np.uint32)
    for lead in np.ndindex(vectors.shape[:-2]):
        matrix = vectors[lead]  # (rows, D)
        rows = max(1, _WORDS_PER_BLOCK * 2 // max(matrix.itemsize * matrix.shape[1], 1))
        for lo in range(0, len(matrix), rows):
            words = np.ascontiguousarray(matrix[lo : lo + rows]).view(np.uint16)
            prefix = np.cumsum(words, axis=1, dtype=np.uint32)  # wraps mod 2**32, a multiple of 2**16
            s1 = prefix[:, -1] & np.uint32(0xFFFF)
            s2 = prefix.sum(axis=1, dtype=np.uint32) & np.uint32(0xFFFF)
            out[(*lead, slice(lo, lo + rows))] = (s2 << np.uint32(16)) | s1
    return out
