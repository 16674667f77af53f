"""In-memory neighbour search for Qdrant's local mode, which otherwise scans every vector.

Random-hyperplane hashing (SimHash): each vector gets `bits` sign bits of random projections; two
vectors at angle θ differ in each bit with probability θ/π. A query takes as candidates the
vectors whose codes differ in at most the cutoff for which a true neighbour (cosine ≥ ε) is
missed with probability below `miss_probability` (binomial tail), then checks the candidates'
exact cosine. Codes are 64 bytes per vector at 512 bits, and a first pass over two 64-bit words
per vector (1.6 MB for 100k vectors, instead of 512 MB of floats) drops nearly all of them.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy.stats import binom

Matrix = npt.NDArray[np.float32]
FIRST_PASS_BITS = 128


@lru_cache(maxsize=64)
def candidate_cutoff(bits: int, threshold: float, miss_probability: float) -> int:
    """Largest Hamming distance that still makes a vector a candidate."""
    angle = math.acos(max(-1.0, min(1.0, threshold)))
    flip = angle / math.pi
    return int(binom.isf(miss_probability, bits, flip))


class SimHashIndex:
    """Unit vectors by id, searchable by cosine threshold; exact answers with high probability."""

    def __init__(self, dim: int, bits: int = 512, miss_probability: float = 1e-9, seed: int = 0):
        if bits % 64 or bits < FIRST_PASS_BITS:
            raise ValueError(f"bits must be a multiple of 64, at least {FIRST_PASS_BITS}")
        self.dim, self.bits, self.miss_probability = dim, bits, miss_probability
        self._planes = np.random.default_rng(seed).standard_normal((dim, bits)).astype(np.float32)
        self._lock = threading.Lock()
        # word-major: row w holds every vector's w-th 64-bit word, contiguous for the first pass
        self._codes = np.zeros((bits // 64, 0), dtype=np.uint64)
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._ids: list[str] = []
        self._row_of: dict[str, int] = {}
        self._size = 0

    def __len__(self) -> int:
        return len(self._row_of)

    def _encode(self, vectors: Matrix) -> npt.NDArray[np.uint64]:
        signs = (vectors @ self._planes) > 0
        return np.packbits(signs, axis=1).view(np.uint64)

    def _grow(self, needed: int) -> None:
        capacity = self._codes.shape[1]
        if needed <= capacity:
            return
        new_capacity = max(needed, capacity * 2, 1024)
        codes = np.zeros((self.bits // 64, new_capacity), dtype=np.uint64)
        vectors = np.zeros((new_capacity, self.dim), dtype=np.float32)
        codes[:, :capacity], vectors[:capacity] = self._codes, self._vectors
        self._codes, self._vectors = codes, vectors

    def upsert(self, ids: list[str], vectors: Matrix) -> None:
        codes = self._encode(vectors)
        with self._lock:
            for point_id, code, vector in zip(ids, codes, vectors, strict=True):
                row = self._row_of.get(point_id)
                if row is None:
                    self._grow(self._size + 1)
                    row = self._size
                    self._size += 1
                    self._ids.append(point_id)
                    self._row_of[point_id] = row
                self._codes[:, row], self._vectors[row] = code, vector

    def remove(self, point_id: str) -> None:
        """Moves the last row into the removed one, so the arrays stay dense."""
        with self._lock:
            row = self._row_of.pop(point_id, None)
            if row is None:
                return
            last = self._size - 1
            if row != last:
                moved = self._ids[last]
                self._ids[row] = moved
                self._row_of[moved] = row
                self._codes[:, row], self._vectors[row] = self._codes[:, last], self._vectors[last]
            self._ids.pop()
            self._size -= 1

    def search(
        self, queries: Matrix, threshold: float, limit: int
    ) -> list[list[tuple[str, float]]]:
        """Per query, up to `limit` (id, cosine) with cosine ≥ threshold, most similar first."""
        cutoff = candidate_cutoff(self.bits, threshold, self.miss_probability)
        first_cutoff = candidate_cutoff(FIRST_PASS_BITS, threshold, self.miss_probability)
        query_codes = self._encode(queries)
        answers: list[list[tuple[str, float]]] = []
        with self._lock:
            size = self._size
            codes, vectors, ids = self._codes[:, :size], self._vectors[:size], self._ids
            for query, code in zip(queries, query_codes, strict=True):
                if size == 0:
                    answers.append([])
                    continue
                # Pass 1 reads the first 128 bits of every vector and drops nearly all; pass 2
                # checks all bits of the survivors. Each pass misses a true neighbour with
                # probability below miss_probability.
                first = np.bitwise_count(codes[0] ^ code[0]) + np.bitwise_count(codes[1] ^ code[1])
                survivors = np.flatnonzero(first <= first_cutoff)
                distances = np.bitwise_count(codes[:, survivors] ^ code[:, None]).sum(
                    axis=0, dtype=np.int32
                )
                candidates = survivors[distances <= cutoff]
                scores = vectors[candidates] @ query
                hits = scores >= threshold
                rows, hit_scores = candidates[hits], scores[hits]
                order = np.argsort(-hit_scores, kind="stable")[:limit]
                answers.append([(ids[int(rows[i])], float(hit_scores[i])) for i in order])
        return answers
