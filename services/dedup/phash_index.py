"""Multi-index hashing for 64-bit pHashes: all stored hashes within Hamming distance r, exactly.

The hash is cut into four 16-bit blocks. If two hashes differ in at most r bits, one of the
blocks differs in at most r // 4 of them (pigeonhole), so the candidates are the hashes whose
block equals one of the query block's few neighbours in that small space, looked up in a sorted
table per block; each candidate is then checked on all 64 bits.
"""

from __future__ import annotations

import itertools
import threading
from functools import lru_cache

import numpy as np
import numpy.typing as npt

BLOCKS = 4
BLOCK_BITS = 16
BLOCK_MASK = (1 << BLOCK_BITS) - 1


def phash_to_int(text: str) -> int:
    """A 16-hex-digit pHash (as imagehash prints it) as an unsigned 64-bit integer."""
    if len(text) != 16:
        raise ValueError("a pHash is 16 hexadecimal digits (64 bits)")
    return int(text, 16)


def int_to_phash(value: int) -> str:
    return f"{value:016x}"


def to_signed(value: int) -> int:
    """SQL's BIGINT is signed: store the 64 bits as such."""
    return value - (1 << 64) if value >= 1 << 63 else value


def to_unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


@lru_cache(maxsize=8)
def _flip_masks(radius: int) -> npt.NDArray[np.uint32]:
    """Every 16-bit mask with at most `radius` bits set."""
    masks = [0]
    for count in range(1, radius + 1):
        for bits in itertools.combinations(range(BLOCK_BITS), count):
            masks.append(sum(1 << b for b in bits))
    return np.array(masks, dtype=np.uint32)


def _blocks(hashes: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint32]:
    return np.stack(
        [
            ((hashes >> np.uint64(BLOCK_BITS * b)) & np.uint64(BLOCK_MASK)).astype(np.uint32)
            for b in range(BLOCKS)
        ],
        axis=1,
    )


class PHashIndex:
    """Hashes with ids; `search` answers exactly what a scan of every hash would.

    New hashes go to a small unsorted tail that is scanned; the sorted tables are rebuilt when
    the tail grows past a share of the whole, so inserts stay cheap.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hashes = np.zeros(0, dtype=np.uint64)
        self._ids: list[str] = []
        # Per block: rows sorted by block value, and where each of the 65536 values starts.
        self._sorted_rows: list[npt.NDArray[np.int64]] = []
        self._offsets: list[npt.NDArray[np.int64]] = []
        self._indexed = 0  # rows [0, _indexed) are in the sorted tables
        self._removed: set[str] = set()

    def __len__(self) -> int:
        return len(self._ids) - len(self._removed)

    def remove(self, point_id: str) -> None:
        """Hides the id from answers; its row goes at the next rebuild."""
        with self._lock:
            if point_id in self._ids:
                self._removed.add(point_id)

    def add(self, ids: list[str], hashes: list[int]) -> None:
        with self._lock:
            returning = self._removed.intersection(ids)
            if returning:  # ids deleted before and added again: drop their old rows first
                self._rebuild()
            self._ids.extend(ids)
            self._hashes = np.concatenate([self._hashes, np.array(hashes, dtype=np.uint64)])
            tail = len(self._ids) - self._indexed
            if tail > max(1024, len(self._ids) // 16):
                self._rebuild()

    def _rebuild(self) -> None:
        if self._removed:
            keep = [i for i, point_id in enumerate(self._ids) if point_id not in self._removed]
            self._ids = [self._ids[i] for i in keep]
            self._hashes = self._hashes[np.array(keep, dtype=np.int64)]
            self._removed = set()
        blocks = _blocks(self._hashes)
        self._sorted_rows = []
        self._offsets = []
        for b in range(BLOCKS):
            self._sorted_rows.append(np.argsort(blocks[:, b], kind="stable").astype(np.int64))
            counts = np.bincount(blocks[:, b], minlength=1 << BLOCK_BITS)
            self._offsets.append(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        self._indexed = len(self._ids)

    def search(self, query: int, radius: int) -> list[tuple[str, int]]:
        """(id, distance) of every stored hash within `radius`, nearest first."""
        with self._lock:
            hashes, ids, indexed = self._hashes, self._ids, self._indexed
            sorted_rows, offsets = self._sorted_rows, self._offsets
            removed = set(self._removed)
        query_value = np.uint64(query)
        candidates = [np.arange(indexed, len(ids), dtype=np.int64)]
        if indexed:
            masks = _flip_masks(radius // BLOCKS)
            query_blocks = _blocks(np.array([query], dtype=np.uint64))[0]
            for b in range(BLOCKS):
                keys = query_blocks[b] ^ masks  # distinct, since the masks are
                starts = offsets[b][keys]
                sizes = offsets[b][keys + 1] - starts
                hit = sizes > 0
                if not hit.any():
                    continue
                starts, sizes = starts[hit], sizes[hit]
                total = int(sizes.sum())
                run_starts = np.repeat(starts - np.cumsum(sizes) + sizes, sizes)
                positions = run_starts + np.arange(total)
                candidates.append(sorted_rows[b][positions])
        rows = np.concatenate(candidates)
        distances = np.bitwise_count(hashes[rows] ^ query_value)
        rows = np.unique(rows[distances <= radius])  # a match may come through several blocks
        distances = np.bitwise_count(hashes[rows] ^ query_value).astype(np.int64)
        order = np.argsort(distances, kind="stable")
        found = [(ids[int(rows[i])], int(distances[i])) for i in order]
        return [match for match in found if match[0] not in removed]

    def scan(self, query: int, radius: int) -> list[tuple[str, int]]:
        """The same answer by checking every hash: the reference the index is tested against."""
        with self._lock:
            hashes, ids, removed = self._hashes, list(self._ids), set(self._removed)
        distances = np.bitwise_count(hashes ^ np.uint64(query)).astype(np.int64)
        rows = np.flatnonzero(distances <= radius)
        order = np.argsort(distances[rows], kind="stable")
        found = [(ids[int(rows[i])], int(distances[rows[i]])) for i in order]
        return [match for match in found if match[0] not in removed]
