"""The embedded store's search at speed: it reads only candidates whose code can belong to a
duplicate, and a one-vector check is answered on the event loop unless a write holds the graph,
when it waits in a worker thread instead of stalling every other request."""

from __future__ import annotations

import hashlib
import math
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from services.dedup.app import create_app
from services.dedup.config import DedupSettings
from services.dedup.embedded import EmbeddedVectorStore, code_distance_bound
from tests.helpers import live_server, migrated_sqlite

NAME = "default__m"
BITS = 1024


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def unit_rows(count: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def at_cosine(anchor: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly `cosine` from the unit vector `anchor`."""
    other = rng.normal(size=anchor.shape)
    other -= (other @ anchor) * anchor
    other /= np.linalg.norm(other)
    return np.asarray(cosine * anchor + math.sqrt(1 - cosine**2) * other)


@pytest.mark.parametrize("threshold", [0.5, 0.9, 0.95, 0.99])
def test_pairs_at_the_threshold_have_codes_within_the_bound(threshold: float) -> None:
    """Under fresh random hyperplanes each time, no pair at the threshold's cosine lands past
    the bound (a duplicate's candidate is never skipped), and the bound sits a few standard
    deviations above the mean distance (pairs much below the threshold are skipped)."""
    rng = np.random.default_rng(7)
    dim, pairs = 64, 400
    bound = code_distance_bound(BITS, threshold)
    distances = []
    for _ in range(pairs):
        planes = rng.standard_normal((dim, BITS))
        anchor = rng.normal(size=dim)
        anchor /= np.linalg.norm(anchor)
        near = at_cosine(anchor, threshold, rng)
        distances.append(int(np.count_nonzero((anchor @ planes > 0) != (near @ planes > 0))))
    p = math.acos(threshold) / math.pi
    mean, deviation = BITS * p, math.sqrt(BITS * p * (1 - p))
    assert max(distances) <= bound
    assert mean + 3 * deviation < bound < mean + 9 * deviation
    assert code_distance_bound(BITS, 1.0) < code_distance_bound(BITS, 0.999) < bound


def test_only_candidates_that_can_be_duplicates_are_read(tmp_path: Path) -> None:
    """A query with nothing near reads no stored vector; a near-copy reads its original only;
    and points at the threshold are still all found: the code distance bound drops no true
    duplicate. The candidates come from an exact scan of the codes (the default below 50k
    points), so the graph's own misses (about 1 query in 1,250 here) do not blur what is
    tested."""
    settings = DedupSettings(
        database_url=f"sqlite:///{tmp_path}/unused.db", qdrant_path=tmp_path / "vectors"
    )
    store = EmbeddedVectorStore(settings)
    try:
        dim, count, threshold = 64, 2000, 0.9
        rows = unit_rows(count, dim, seed=1)
        ids = [sha(str(i)) for i in range(count)]
        store.ensure(NAME, dim)
        store.upsert(NAME, ids, rows, [{}] * count)
        reads: list[str] = []
        reader: sqlite3.Connection = store._reader()  # the connection this thread searches with
        reader.set_trace_callback(reads.append)

        strangers = unit_rows(50, dim, seed=2)
        assert store.search(NAME, strangers, threshold, limit=10) == [[]] * 50
        assert reads == []

        rng = np.random.default_rng(3)
        picked = list(range(0, count, 40))
        at_threshold = np.stack(
            [at_cosine(rows[i].astype(np.float64), threshold + 2e-3, rng) for i in picked]
        ).astype(np.float32)
        found = store.search(NAME, at_threshold, threshold, limit=10)
        assert [[match for match, _ in row] for row in found] == [[ids[i]] for i in picked]
        # one statement, for the originals (keys count from 1 in insertion order) and no other
        assert len(reads) == 1
        read_keys = reads[0].rpartition("IN (")[2].rstrip(")").split(",")
        assert sorted(int(key) for key in read_keys) == [i + 1 for i in picked]
    finally:
        store.close()


def test_a_check_while_a_write_holds_the_graph_waits_in_a_thread(tmp_path: Path) -> None:
    """A one-vector check is answered on the event loop only if the graph is free: while a write
    holds it, the check waits in a worker thread, and the service keeps answering meanwhile."""
    settings = DedupSettings(
        database_url=migrated_sqlite(tmp_path / "dedup.db"),
        qdrant_path=tmp_path / "vectors",
        thresholds={"m": 0.9},
    )
    store = EmbeddedVectorStore(settings)
    try:
        vector = unit_rows(1, 32, seed=4)[0]
        with (
            live_server(create_app(settings, vector_store=store)) as url,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            inserted = client.post(
                "/v1/dedup/insert", json={"id": sha("a"), "model": "m", "vector": vector.tolist()}
            )
            assert inserted.json()["status"] == "inserted"
            graph_lock = store._collections[NAME].lock
            answers: list[httpx.Response] = []
            graph_lock.acquire()  # as an insert adding to the graph does
            try:
                checking = threading.Thread(
                    target=lambda: answers.append(
                        client.post(
                            "/v1/dedup/check", json={"model": "m", "vectors": [vector.tolist()]}
                        )
                    )
                )
                checking.start()
                time.sleep(0.3)
                assert answers == []  # waiting for the graph
                with httpx.Client(base_url=url, timeout=5) as other:
                    started = time.perf_counter()
                    assert other.get("/healthz").status_code == 200
                    assert time.perf_counter() - started < 2  # the event loop is not held
            finally:
                graph_lock.release()
            checking.join(timeout=30)
            assert answers[0].status_code == 200
            neighbours = answers[0].json()["vectors"][0]["neighbours"]
            assert [n["id"] for n in neighbours] == [sha("a")]
    finally:
        store.close()
