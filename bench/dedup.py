"""Dedup in the embedded mode (the embedded vector store: usearch HNSW + SQLite) with 100k vectors.

    .venv/bin/python bench/dedup.py [--vectors 100000] [--queries 500] [--hashes 100000 1000000]
        [--store FOLDER]

Prints p50 / p99 latency of `POST /v1/dedup/check` (one 1280-d vector per request, over HTTP on
127.0.0.1) for two kinds of query: near-copies of a stored vector, and vectors with no
neighbour (the common case in a crawl); beside each, the exact scan it replaces (every stored
vector against the query with numpy, in process); insert-if-unique requests per second; and the
pHash index against full scans of every hash (per-hash in Python, and vectorised with numpy);
the time the service takes to open the store and its resident memory (RSS). All measured in the
same run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._service import PIDS, running_service  # noqa: E402
from services.dedup.config import DedupSettings  # noqa: E402
from services.dedup.embedded import EmbeddedVectorStore  # noqa: E402
from services.dedup.phash_index import PHashIndex  # noqa: E402

DIM = 1280
MODEL = "efficientnet-lite0"
# the exact scan reads every stored vector (5 GB at 1M): its figure needs few queries
SCANNED_QUERIES = 100


def clustered_unit_vectors(count: int, rng: np.random.Generator) -> np.ndarray:
    """Embedding-like data: points around 2,000 centres (cosine ~0.5 within a cluster), made a
    chunk at a time so that 1M of them take their 5 GB and little more."""
    centres = rng.standard_normal(size=(2000, DIM), dtype=np.float32)
    vectors = np.empty((count, DIM), dtype=np.float32)
    for start in range(0, count, 50_000):
        chunk = centres[rng.integers(0, 2000, size=min(50_000, count - start))]
        chunk += rng.standard_normal(size=chunk.shape, dtype=np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        vectors[start : start + len(chunk)] = chunk
    return vectors


def packed(vector: np.ndarray) -> str:
    return base64.b64encode(vector.astype("<f4").tobytes()).decode()


def resident_mb(pid: int) -> float:
    """Resident set size of a process now, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q) * 1000)


def check_latencies(client: httpx.Client, queries: list[np.ndarray]) -> tuple[list[float], int]:
    """Seconds per `POST /v1/dedup/check` of one vector, and how many found a neighbour."""
    latencies, found = [], 0
    for query in queries:
        body = {"model": MODEL, "vectors": [packed(query)]}
        started = time.perf_counter()
        response = client.post("/v1/dedup/check", json=body)
        latencies.append(time.perf_counter() - started)
        response.raise_for_status()
        found += bool(response.json()["vectors"][0]["neighbours"])
    return latencies, found


def scan_latencies(stored: np.ndarray, queries: list[np.ndarray]) -> list[float]:
    """Seconds per query of the exact answer without an index: every stored vector's cosine, on
    one BLAS thread as the services run it."""
    threshold = DedupSettings().threshold_for(MODEL)
    latencies = []
    with threadpool_limits(limits=1, user_api="blas"):
        for query in queries:
            started = time.perf_counter()
            unit = query / np.linalg.norm(query)
            np.flatnonzero(stored @ unit >= threshold)
            latencies.append(time.perf_counter() - started)
    return latencies


def load_store(settings: DedupSettings, vectors: np.ndarray, ids: list[str]) -> None:
    """Bulk load straight into the store's folder, 2,000 points a write."""
    started = time.perf_counter()
    store = EmbeddedVectorStore(settings)
    name = f"default__{MODEL}"
    store.ensure(name, DIM)
    for start in range(0, len(ids), 2000):
        chunk = slice(start, start + 2000)
        store.upsert(name, ids[chunk], vectors[chunk], [{}] * len(ids[chunk]))
    store.close()
    print(f"loaded {len(ids)} vectors of dimension {DIM} in {time.perf_counter() - started:.0f} s")


def stored_points(settings: DedupSettings) -> int:
    """Points of the bench's collection already in a store folder (0 if none)."""
    if not (settings.qdrant_path / "vectors.sqlite").exists():
        return 0
    store = EmbeddedVectorStore(settings)
    try:
        name = f"default__{MODEL}"
        return store.count(name) if store.dim(name) is not None else 0
    finally:
        store.close()


def bench_vectors(count: int, queries: int, reuse: Path | None) -> None:
    rng = np.random.default_rng(0)
    vectors = clustered_unit_vectors(count, rng)
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(count)]
    with contextlib.ExitStack() as cleanup:
        folder = reuse or Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
        folder.mkdir(parents=True, exist_ok=True)
        settings = DedupSettings(
            database_url=f"sqlite:///{folder}/db.sqlite", qdrant_path=folder / "q"
        )
        held = stored_points(settings)
        if held == 0:
            load_store(settings, vectors, ids)
        elif held != count:
            raise SystemExit(f"{folder} holds {held} points, not {count}: use another folder")
        else:
            print(f"reusing the store in {folder} ({held} vectors)")
        started = time.perf_counter()
        EmbeddedVectorStore(settings).close()
        print(f"store open ({count} vectors): {time.perf_counter() - started:.2f} s")
        started = time.perf_counter()
        env = {
            "SEAVL_DEDUP_DATABASE_URL": settings.database_url,
            "SEAVL_DEDUP_QDRANT_PATH": str(settings.qdrant_path),
        }
        with (
            running_service("dedup", env) as url,
            httpx.Client(base_url=url, timeout=600) as client,
        ):
            print(
                f"service start-up (opens the store, {count} vectors): "
                f"{time.perf_counter() - started:.1f} s"
            )
            for i in range(20):  # warm-up: worker threads, first-call caches
                client.post(
                    "/v1/dedup/check", json={"model": MODEL, "vectors": [packed(vectors[i])]}
                )
            gc.collect()
            gc.disable()  # the client's own collector pauses are not the service's latency
            near_copies = [
                vectors[i * 37 % count] + rng.normal(size=DIM).astype(np.float32) * 0.01
                for i in range(queries)
            ]
            strangers = list(clustered_unit_vectors(queries, np.random.default_rng(3)))
            for label, asked in (("near-copy", near_copies), ("no neighbour", strangers)):
                latencies, found = check_latencies(client, asked)
                scans = scan_latencies(vectors, asked[:SCANNED_QUERIES])
                print(
                    f"check, 1 vector/request, {label:12s}: p50 "
                    f"{percentile_ms(latencies, 50):.2f} ms, p99 {percentile_ms(latencies, 99):.2f}"
                    f" ms ({found}/{len(asked)} found a neighbour); exact numpy scan in process: "
                    f"p50 {percentile_ms(scans, 50):.2f} ms, p99 {percentile_ms(scans, 99):.2f} ms"
                )
            gc.enable()
            fresh = clustered_unit_vectors(queries, np.random.default_rng(1))
            started = time.perf_counter()
            for i, vector in enumerate(fresh):
                body = {
                    "id": hashlib.sha256(f"new{i}".encode()).hexdigest(),
                    "model": MODEL,
                    "vector": packed(vector),
                }
                client.post("/v1/dedup/insert", json=body).raise_for_status()
            rate = len(fresh) / (time.perf_counter() - started)
            print(
                f"insert-if-unique: {rate:.0f} inserts/s (sequential, each a locked check + write)"
            )
            for i in range(len(fresh)):  # a reused store keeps its `count` points
                sha256 = hashlib.sha256(f"new{i}".encode()).hexdigest()
                client.delete(f"/v1/dedup/points/{sha256}", params={"model": MODEL})
            print(f"service memory: RSS {resident_mb(PIDS[url]):.0f} MB with {count} vectors")


def bench_phash(count: int) -> None:
    rng = np.random.default_rng(2)
    hashes = [int(h) for h in rng.integers(0, 2**64, size=count, dtype=np.uint64)]
    index = PHashIndex()
    index.add([str(i) for i in range(count)], hashes)
    queries = [hashes[i] ^ int(rng.integers(0, 1 << 12)) for i in range(200)]
    started = time.perf_counter()
    answers = [index.search(q, 16) for q in queries]
    index_time = (time.perf_counter() - started) / len(queries)
    started = time.perf_counter()
    scanned = [index.scan(q, 16) for q in queries]
    numpy_time = (time.perf_counter() - started) / len(queries)
    started = time.perf_counter()
    for q in queries[:5]:
        [i for i, h in enumerate(hashes) if (h ^ q).bit_count() <= 16]
    python_time = (time.perf_counter() - started) / 5
    assert [sorted(a) for a in answers] == [sorted(s) for s in scanned]
    print(
        f"pHash within 16 bits, {count} stored: index {index_time * 1000:.3f} ms/query; "
        f"full scan in Python {python_time * 1000:.1f} ms (ratio {python_time / index_time:.0f}x), "
        f"vectorised numpy scan {numpy_time * 1000:.3f} ms (ratio {numpy_time / index_time:.1f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--hashes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument(
        "--store",
        type=Path,
        help="a folder for the vector store, kept after the run: built there if empty, reused "
        "(not rebuilt) by the next runs with the same --vectors",
    )
    args = parser.parse_args()
    for count in args.hashes:
        bench_phash(count)
    bench_vectors(args.vectors, args.queries, args.store)


if __name__ == "__main__":
    main()
