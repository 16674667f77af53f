"""Relevance scoring with 8,000 references: the O(d) centroid against the naive mean of cosines.

    .venv/bin/python bench/filter.py

(a) naive: for each vector, the cosine with every reference, averaged (O(|I_ref| d));
(b) the filter's scoring, in process (centroid dot product, O(d));
(c) the filter service over HTTP on 127.0.0.1 (SQLite), batches of vectors per request.
Prints vectors/s and the ratios (b)/(a) and (c)/(a), measured in the same run.
"""

from __future__ import annotations

import base64
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.filter.app import create_app  # noqa: E402
from services.filter.config import FilterSettings  # noqa: E402
from services.filter.relevance import mean_of_normalised, relevance_scores  # noqa: E402
from tests.helpers import live_server  # noqa: E402

REFERENCES, DIM, QUERIES, BATCH = 8000, 1280, 1024, 256


def naive_scores(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    out = np.empty(len(queries))
    reference_norms = np.linalg.norm(references, axis=1)
    for i, query in enumerate(queries):
        out[i] = np.mean(references @ query / (reference_norms * np.linalg.norm(query)))
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    references = np.abs(rng.normal(size=(REFERENCES, DIM))).astype(np.float32)
    queries = np.abs(rng.normal(size=(QUERIES, DIM))).astype(np.float32)

    started = time.perf_counter()
    expected = naive_scores(queries, references)
    naive_rate = QUERIES / (time.perf_counter() - started)

    centroid = mean_of_normalised(references)
    started = time.perf_counter()
    units = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    fast = relevance_scores(units.astype(np.float32), centroid)
    fast_rate = QUERIES / (time.perf_counter() - started)
    assert np.allclose(fast, expected, atol=1e-5)

    with tempfile.TemporaryDirectory() as folder:
        settings = FilterSettings(database_url=f"sqlite:///{folder}/bench.db")
        with (
            live_server(create_app(settings)) as url,
            httpx.Client(base_url=url, timeout=120) as client,
        ):
            client.post(
                "/v1/reference-sets", json={"name": "bench", "model": "bench"}
            ).raise_for_status()
            for start in range(0, REFERENCES, 1000):
                chunk = references[start : start + 1000]
                refs = [
                    {"vector": base64.b64encode(v.astype("<f4").tobytes()).decode()} for v in chunk
                ]
                client.post(
                    "/v1/reference-sets/bench/references", json={"references": refs}
                ).raise_for_status()
            packed = [base64.b64encode(q.astype("<f4").tobytes()).decode() for q in queries]
            client.post(
                "/v1/score", json={"set": "bench", "vectors": packed[:BATCH]}
            ).raise_for_status()
            started = time.perf_counter()
            served = []
            for start in range(0, QUERIES, BATCH):
                body = {"set": "bench", "vectors": packed[start : start + BATCH]}
                served += [
                    r["score"] for r in client.post("/v1/score", json=body).json()["results"]
                ]
            service_rate = QUERIES / (time.perf_counter() - started)
            assert np.allclose(served, expected, atol=1e-5)

    print(f"relevance scoring, |I_ref| = {REFERENCES}, d = {DIM}, {QUERIES} vectors")
    print(f"  (a) naive mean of cosines:          {naive_rate:12.0f} vectors/s")
    print(
        f"  (b) centroid, in process:           {fast_rate:12.0f} vectors/s  ratio (b)/(a) = "
        f"{fast_rate / naive_rate:.0f}x"
    )
    print(
        f"  (c) filter service, {BATCH}/request:  {service_rate:12.0f} vectors/s  ratio (c)/(a) = "
        f"{service_rate / naive_rate:.0f}x"
    )


if __name__ == "__main__":
    main()
