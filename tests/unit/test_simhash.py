"""The local-mode SimHash index against an exact scan of every vector."""

from __future__ import annotations

import numpy as np
import pytest

from services.dedup.simhash import SimHashIndex, candidate_cutoff


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_the_cutoff_widens_as_the_threshold_loosens() -> None:
    cutoffs = [candidate_cutoff(512, t, 1e-9) for t in (0.99, 0.95, 0.9, 0.8)]
    assert cutoffs == sorted(cutoffs) and cutoffs[0] < cutoffs[-1] < 256


@pytest.mark.parametrize("threshold", [0.8, 0.9, 0.95])
def test_search_finds_what_an_exact_scan_finds(threshold: float) -> None:
    rng = np.random.default_rng(int(threshold * 100))
    base = unit(rng.normal(size=(2000, 128)))
    # near copies at a range of similarities around the threshold
    noise = rng.normal(size=(400, 128)) * rng.uniform(0.02, 0.12, size=(400, 1))
    near = unit(base[:400] + noise)
    stored = np.vstack([base, near])
    ids = [f"p{i}" for i in range(len(stored))]
    index = SimHashIndex(128, bits=512)
    index.upsert(ids, stored)
    queries = unit(base[:200] + rng.normal(size=(200, 128)) * 0.05)
    answers = index.search(queries, threshold, limit=10_000)
    for query, answer in zip(queries, answers, strict=True):
        scores = stored @ query
        expected = {ids[i] for i in np.flatnonzero(scores >= threshold)}
        assert {point for point, _ in answer} == expected
        assert [s for _, s in answer] == sorted((s for _, s in answer), reverse=True)


def test_upsert_replaces_and_remove_forgets() -> None:
    rng = np.random.default_rng(3)
    vectors = unit(rng.normal(size=(3, 32)))
    index = SimHashIndex(32, bits=128)
    index.upsert(["a", "b", "c"], vectors)
    index.upsert(["a"], vectors[2:3])  # a now points like c
    assert {p for p, _ in index.search(vectors[2:3], 0.99, 10)[0]} == {"a", "c"}
    index.remove("c")
    assert len(index) == 2
    assert [p for p, _ in index.search(vectors[2:3], 0.99, 10)[0]] == ["a"]
    assert [p for p, _ in index.search(vectors[1:2], 0.99, 10)[0]] == ["b"]
