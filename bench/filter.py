"""Relevance scoring with 8,000 references: the O(d) centroid against the mean of cosines.

    .venv/bin/python bench/filter.py [--references 8000] [--queries 1024] [--repeats 5]

(a) the mean of cosines done as well as it can be without the centroid: references and queries
    normalised once, one matrix product Q @ R.T (BLAS), the mean of each row (O(|I_ref| d));
(b) the filter's scoring, in process (centroid dot product, O(d));
(c) the filter service over HTTP on 127.0.0.1 (SQLite), batches of vectors per request.
Each is warmed up, then timed `--repeats` times; prints the median vectors/s with the spread
(min-max) and the ratios of the medians (b)/(a) and (c)/(a), measured in the same run.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.filter.app import create_app  # noqa: E402
from services.filter.config import FilterSettings  # noqa: E402
from services.filter.relevance import mean_of_normalised, relevance_scores  # noqa: E402
from tests.helpers import live_server, migrated_sqlite  # noqa: E402

DIM, BATCH = 1280, 256


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def mean_of_cosines(queries: np.ndarray, reference_units: np.ndarray) -> np.ndarray:
    """The paper's score straight from its definition, vectorised (references normalised once,
    as a store of them would keep them)."""
    return (unit_rows(queries) @ reference_units.T).mean(axis=1)


def rates(count: int, run: Callable[[], object], repeats: int) -> list[float]:
    """Vectors/s of `run` (which handles `count` vectors), after one warm-up run."""
    run()
    measured = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        measured.append(count / (time.perf_counter() - started))
    return measured


def summary(measured: list[float]) -> str:
    return (
        f"{statistics.median(measured):12.0f} vectors/s "
        f"(min {min(measured):.0f}, max {max(measured):.0f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--references", type=int, default=8000)
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    references = np.abs(rng.normal(size=(args.references, DIM))).astype(np.float32)
    queries = np.abs(rng.normal(size=(args.queries, DIM))).astype(np.float32)

    reference_units = unit_rows(references)
    expected = mean_of_cosines(queries, reference_units)
    naive = rates(args.queries, lambda: mean_of_cosines(queries, reference_units), args.repeats)

    centroid = mean_of_normalised(references)

    def centroid_scores() -> np.ndarray:
        return relevance_scores(unit_rows(queries).astype(np.float32), centroid)

    assert np.allclose(centroid_scores(), expected, atol=1e-5)
    fast = rates(args.queries, centroid_scores, args.repeats)

    with tempfile.TemporaryDirectory() as folder:
        settings = FilterSettings(database_url=migrated_sqlite(Path(folder) / "bench.db"))
        with (
            live_server(create_app(settings)) as url,
            httpx.Client(base_url=url, timeout=120) as client,
        ):
            client.post(
                "/v1/reference-sets", json={"name": "bench", "model": "bench"}
            ).raise_for_status()
            for start in range(0, args.references, 1000):
                chunk = references[start : start + 1000]
                refs = [
                    {"vector": base64.b64encode(v.astype("<f4").tobytes()).decode()} for v in chunk
                ]
                client.post(
                    "/v1/reference-sets/bench/references", json={"references": refs}
                ).raise_for_status()
            packed = [base64.b64encode(q.astype("<f4").tobytes()).decode() for q in queries]

            def served_scores() -> list[float]:
                served: list[float] = []
                for start in range(0, args.queries, BATCH):
                    body = {"set": "bench", "vectors": packed[start : start + BATCH]}
                    answer = client.post("/v1/score", json=body)
                    answer.raise_for_status()
                    served += [r["score"] for r in answer.json()["results"]]
                return served

            assert np.allclose(served_scores(), expected, atol=1e-5)
            service = rates(args.queries, served_scores, args.repeats)

    naive_median = statistics.median(naive)
    print(
        f"relevance scoring, |I_ref| = {args.references}, d = {DIM}, {args.queries} vectors, "
        f"median of {args.repeats} after a warm-up"
    )
    print(f"  (a) mean of cosines, one BLAS product: {summary(naive)}")
    print(
        f"  (b) centroid, in process:              {summary(fast)}  ratio (b)/(a) = "
        f"{statistics.median(fast) / naive_median:.0f}x"
    )
    print(
        f"  (c) filter service, {BATCH}/request:     {summary(service)}  ratio (c)/(a) = "
        f"{statistics.median(service) / naive_median:.1f}x"
    )


if __name__ == "__main__":
    main()
