"""The embedded vector store: one process per store, durable, exact in its decisions."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from services.dedup.config import DedupSettings
from services.dedup.embedded import EmbeddedVectorStore, StoreInUseError
from services.dedup.vectors import QdrantServerStore, VectorStore
from tests.helpers import free_port, migrated_sqlite

ROOT = Path(__file__).resolve().parents[2]
NAME = "default__m"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def unit_rows(count: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def settings_for(tmp_path: Path, **extra: object) -> DedupSettings:
    return DedupSettings(
        database_url=migrated_sqlite(tmp_path / "dedup.db"),
        qdrant_path=tmp_path / "vectors",
        **extra,
    )


def test_a_second_open_of_the_same_store_is_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = EmbeddedVectorStore(settings)
    try:
        with pytest.raises(StoreInUseError) as refused:
            EmbeddedVectorStore(settings)
        assert str(settings.qdrant_path) in str(refused.value)
        assert f"process {os.getpid()}" in str(refused.value)
        assert "QDRANT_URL" in str(refused.value)
    finally:
        store.close()
    EmbeddedVectorStore(settings).close()  # closed, the store opens again


def test_a_second_dedup_process_on_the_same_store_exits_with_the_reason(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = EmbeddedVectorStore(settings)
    env = {
        **os.environ,
        "SEAVL_DEDUP_DATABASE_URL": settings.database_url,
        "SEAVL_DEDUP_QDRANT_PATH": str(settings.qdrant_path),
        "SEAVL_DEDUP_SERVER__PORT": str(free_port()),
    }
    try:
        second = subprocess.run(
            [sys.executable, "-m", "services.dedup"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        store.close()
    assert second.returncode != 0
    assert "is already open in process" in second.stderr
    assert str(settings.qdrant_path) in second.stderr


def test_points_outlive_the_process_even_one_that_dies_without_closing(tmp_path: Path) -> None:
    """A child writes in batches and exits without closing the store (as a killed process
    would); the next open finds every point, with its neighbours."""
    settings = settings_for(tmp_path, snapshot_every=300)
    vectors = unit_rows(1000, 32, seed=1)
    np.save(tmp_path / "vectors.npy", vectors)
    child = textwrap.dedent(
        f"""
        import hashlib, os
        import numpy as np
        from pathlib import Path
        from services.dedup.config import DedupSettings
        from services.dedup.embedded import EmbeddedVectorStore

        folder = Path({str(tmp_path)!r})
        store = EmbeddedVectorStore(DedupSettings(
            database_url=f"sqlite:///{{folder}}/dedup.db", qdrant_path=folder / "vectors",
            snapshot_every=300))
        vectors = np.load(folder / "vectors.npy")
        ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(len(vectors))]
        store.ensure({NAME!r}, vectors.shape[1])
        for start in range(0, len(vectors), 100):
            store.upsert({NAME!r}, ids[start:start + 100], vectors[start:start + 100],
                         [{{}}] * len(ids[start:start + 100]))
        store.delete({NAME!r}, ids[7])
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", child], cwd=ROOT, check=True, timeout=120)
    store = EmbeddedVectorStore(settings)
    try:
        assert store.count(NAME) == 999
        found = store.search(NAME, vectors[:20], threshold=0.999, limit=3)
        expected = [[sha(str(i))] if i != 7 else [] for i in range(20)]
        assert [[match for match, _ in row] for row in found] == expected
        paged = [point.sha256 for page in store.pages(NAME) for point in page]
        assert sorted(paged) == sorted(sha(str(i)) for i in range(1000) if i != 7)
    finally:
        store.close()


def test_the_decision_is_the_exact_cosine_at_the_threshold(tmp_path: Path) -> None:
    """Neighbours are those whose float32 cosine is at least the threshold, and no others."""
    store = EmbeddedVectorStore(settings_for(tmp_path))
    try:
        dim, threshold = 64, 0.9
        stored, other = unit_rows(2, dim, seed=2)
        other = other - (other @ stored) * stored
        other /= np.linalg.norm(other)  # orthogonal to `stored`
        store.ensure(NAME, dim)
        store.upsert(NAME, [sha("stored")], stored[None], [{}])
        for cosine in (threshold + 1e-4, threshold - 1e-4):
            query = cosine * stored + np.sqrt(1 - cosine**2) * other
            query = (query / np.linalg.norm(query)).astype(np.float32)
            exact = float(stored @ query)
            found = store.search(NAME, query[None], threshold, limit=5)[0]
            assert found == (
                [(sha("stored"), pytest.approx(exact, abs=1e-6))] if exact >= threshold else []
            )
    finally:
        store.close()


@pytest.mark.parametrize("scan", [True, False], ids=["scan of codes", "graph"])
def test_near_copies_are_found_among_many_like_a_full_scan_would(
    tmp_path: Path, scan: bool
) -> None:
    """Small collections scan every code, so they answer exactly as a full scan of the vectors;
    large ones walk the graph, which may miss a rare neighbour but never reports a false one."""
    store = EmbeddedVectorStore(settings_for(tmp_path, index_exact_below=10**6 if scan else 0))
    try:
        dim, count, threshold = 128, 4000, 0.9
        rng = np.random.default_rng(3)
        centres = rng.normal(size=(40, dim)).astype(np.float32)
        rows = centres[rng.integers(0, 40, count)] + rng.normal(size=(count, dim)).astype(
            np.float32
        )
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        ids = [sha(f"p{i}") for i in range(count)]
        store.ensure(NAME, dim)
        for start in range(0, count, 500):
            chunk = slice(start, start + 500)
            store.upsert(NAME, ids[chunk], rows[chunk], [{}] * len(ids[chunk]))
        picked = rng.integers(0, count, 200)
        queries = rows[picked] + rng.normal(size=(200, dim)).astype(np.float32) * 0.035
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        found = store.search(NAME, queries.astype(np.float32), threshold, limit=10)
        scores = queries @ rows.T
        missed = 0
        for row, matches in zip(scores, found, strict=True):
            expected = [
                ids[i] for i in sorted(np.flatnonzero(row >= threshold), key=lambda i: -row[i])
            ]
            got = [match for match, _ in matches]
            assert [score for _, score in matches] == sorted(
                (score for _, score in matches), reverse=True
            )
            assert set(got) <= set(expected)  # every answer is a true neighbour
            missed += len(expected[:10]) - len(got)
        assert missed == 0 if scan else missed <= 2, missed
    finally:
        store.close()


def test_a_folder_left_by_qdrant_local_mode_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path)
    (settings.qdrant_path / "collection" / "default__m").mkdir(parents=True)
    (settings.qdrant_path / "meta.json").write_text('{"collections": {}}')
    with caplog.at_level("WARNING", logger="services.dedup.embedded"):
        EmbeddedVectorStore(settings).close()
    assert "Qdrant's local mode" in caplog.text
    assert str(settings.qdrant_path) in caplog.text


def _dropped_and_made_again(store: VectorStore) -> None:
    """A dropped collection is gone with its points; one made again under its name is empty."""
    rows = unit_rows(3, 32, seed=5)
    store.ensure(NAME, 32)
    store.upsert(NAME, [sha(str(i)) for i in range(3)], rows, [{}, {}, {}])
    assert store.drop(NAME) and NAME not in store.collections() and store.dim(NAME) is None
    assert not store.drop(NAME)
    store.ensure(NAME, 16)  # another encoder: another size
    assert store.count(NAME) == 0
    store.upsert(NAME, [sha("new")], unit_rows(1, 16, seed=6), [{}])
    assert store.search(NAME, unit_rows(1, 16, seed=6), 0.99, limit=5)[0][0][0] == sha("new")


def test_a_dropped_collection_is_forgotten_in_the_embedded_store(tmp_path: Path) -> None:
    store = EmbeddedVectorStore(settings_for(tmp_path))
    try:
        _dropped_and_made_again(store)
    finally:
        store.close()
    reopened = EmbeddedVectorStore(settings_for(tmp_path))  # and stays forgotten
    try:
        assert reopened.count(NAME) == 1 and reopened.dim(NAME) == 16
    finally:
        reopened.close()


def test_a_dropped_collection_is_forgotten_by_qdrant(tmp_path: Path) -> None:
    """Through qdrant-client's local mode: the same client API as a server's, in process."""
    store = QdrantServerStore(settings_for(tmp_path, qdrant_url="http://127.0.0.1:1"))
    store.client = QdrantClient(location=":memory:")
    try:
        _dropped_and_made_again(store)
    finally:
        store.close()
