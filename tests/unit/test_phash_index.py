"""The pHash index answers exactly what a scan of every hash answers."""

from __future__ import annotations

import numpy as np
import pytest

from services.dedup.phash_index import (
    PHashIndex,
    int_to_phash,
    phash_to_int,
    to_signed,
    to_unsigned,
)


def random_hashes(count: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.integers(0, 2**64, size=count, dtype=np.uint64)]


def flip(value: int, bits: int, rng: np.random.Generator) -> int:
    for bit in rng.choice(64, size=bits, replace=False):
        value ^= 1 << int(bit)
    return value


def brute_force(stored: dict[str, int], query: int, radius: int) -> set[tuple[str, int]]:
    return {
        (i, bin(h ^ query).count("1"))
        for i, h in stored.items()
        if bin(h ^ query).count("1") <= radius
    }


@pytest.mark.parametrize("radius", [0, 4, 16, 20])
def test_index_finds_exactly_what_a_scan_finds_on_10k_hashes(radius: int) -> None:
    rng = np.random.default_rng(radius)
    hashes = random_hashes(10_000, seed=1)
    stored = {f"h{i}": h for i, h in enumerate(hashes)}
    # plant near-duplicates at every distance up to 24 bits from some stored hashes
    for j in range(300):
        stored[f"near{j}"] = flip(hashes[j % 50], j % 25, rng)
    index = PHashIndex()
    index.add(list(stored), list(stored.values()))
    queries = [flip(hashes[q], int(rng.integers(0, 6)), rng) for q in range(50)] + random_hashes(
        20, seed=9
    )
    total = 0
    for query in queries:
        expected = brute_force(stored, query, radius)
        assert set(index.search(query, radius)) == expected
        total += len(expected)
    assert total > 0 or radius == 0


def test_answers_are_nearest_first_and_follow_inserts_and_removals() -> None:
    index = PHashIndex()
    base = random_hashes(3000, seed=2)
    index.add([f"h{i}" for i in range(3000)], base)
    query = base[7]
    index.add(["close"], [query ^ 0b1])  # lands in the unsorted tail
    found = index.search(query, 16)
    assert found[:2] == [("h7", 0), ("close", 1)]
    index.remove("h7")
    assert ("h7", 0) not in index.search(query, 16)
    index.add(["h7"], [query ^ 0b11])  # the same id again, with another hash
    assert ("h7", 2) in index.search(query, 16)
    assert [m for m in index.search(query, 16) if m[0] == "h7"] == [("h7", 2)]
    assert index.search(query, 16) == index.scan(query, 16)


def test_hash_text_and_signed_storage_round_trip() -> None:
    value = phash_to_int("ffffffffffffffff")
    assert value == 2**64 - 1 and to_signed(value) == -1 and to_unsigned(-1) == value
    assert int_to_phash(phash_to_int("00ab00cd00ef0012")) == "00ab00cd00ef0012"
    with pytest.raises(ValueError):
        phash_to_int("abc")
