"""The dedup service over HTTP: the embedded vector store, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.common.database import make_engine, session_scope, utcnow
from services.dedup.app import create_app, open_vector_store
from services.dedup.batch import STALE_AFTER
from services.dedup.config import DedupSettings
from services.dedup.tables import BatchJobStatus, JobRow
from tests.helpers import free_port, live_server, wait_for

DIM = 64


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def unit(vector: np.ndarray) -> list[float]:
    return (vector / np.linalg.norm(vector)).tolist()


def settings_for(database_url: str, tmp_path: Path, **extra: Any) -> DedupSettings:
    return DedupSettings(
        database_url=database_url, qdrant_path=tmp_path / "qdrant", thresholds={"m": 0.95}, **extra
    )


@pytest.fixture
def dedup(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    with (
        live_server(create_app(settings_for(database_url, tmp_path))) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client


def insert(
    client: httpx.Client, name: str, vector: list[float] | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"id": sha(name), **extra}
    if vector is not None:
        body.update(model="m", vector=vector)
    response = client.post("/v1/dedup/insert", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_insert_if_unique_and_check(dedup: httpx.Client) -> None:
    rng = np.random.default_rng(0)
    original = rng.normal(size=DIM)
    assert insert(dedup, "a", unit(original))["status"] == "inserted"
    near = unit(original + rng.normal(size=DIM) * 0.05)
    outcome = insert(dedup, "b", near)
    assert outcome["status"] == "duplicate"
    assert (
        outcome["duplicate_of"]["id"] == sha("a") and outcome["duplicate_of"]["by"] == "embedding"
    )
    assert insert(dedup, "c", unit(rng.normal(size=DIM)))["status"] == "inserted"
    assert (
        insert(dedup, "a", unit(original))["status"] == "inserted"
    )  # a retry rewrites, no duplicate
    checked = dedup.post("/v1/dedup/check", json={"model": "m", "vectors": [near]}).json()
    assert checked["threshold"] == 0.95
    assert [n["id"] for n in checked["vectors"][0]["neighbours"]] == [sha("a")]
    stats = dedup.get("/v1/dedup/collections/default/m").json()
    assert (stats["points"], stats["dim"]) == (2, DIM)
    assert dedup.get("/v1/dedup/collections").json()["collections"][0]["model"] == "m"


def test_a_looser_threshold_and_namespaces(dedup: httpx.Client) -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=DIM)
    insert(dedup, "a", unit(base))
    farther = unit(base + rng.normal(size=DIM) * 0.5)  # cosine around 0.9
    assert insert(dedup, "b", farther)["status"] == "inserted"
    loose = dedup.post(
        "/v1/dedup/check", json={"model": "m", "vectors": [farther], "threshold": 0.5}
    )
    assert {n["id"] for n in loose.json()["vectors"][0]["neighbours"]} == {sha("a"), sha("b")}
    other = dedup.post(
        "/v1/dedup/check", json={"model": "m", "namespace": "crawl", "vectors": [farther]}
    )
    assert other.json()["vectors"][0]["neighbours"] == []  # another namespace, nothing stored


def test_phash_duplicates(dedup: httpx.Client) -> None:
    insert(dedup, "a", phash="00000000ffffffff")
    outcome = insert(dedup, "b", phash="00000000fffffff0")
    assert outcome["status"] == "duplicate"
    assert outcome["duplicate_of"] == {"id": sha("a"), "by": "phash", "score": None, "distance": 4}
    assert insert(dedup, "c", phash="ffffffff00000000")["status"] == "inserted"
    checked = dedup.post(
        "/v1/dedup/check", json={"phashes": ["00000000ffff0000", "0f0f0f0f0f0f0f0f"]}
    ).json()
    assert checked["phashes"][0]["matches"] == [{"id": sha("a"), "distance": 16}]
    assert [m["distance"] for m in checked["phashes"][1]["matches"]] == []
    # with a vector, the pHash decides only when asked to
    rng = np.random.default_rng(2)
    assert (
        insert(dedup, "d", unit(rng.normal(size=DIM)), phash="00000000ffffffff")["status"]
        == "inserted"
    )
    outcome = insert(
        dedup, "e", unit(rng.normal(size=DIM)), phash="00000000ffffffff", match_phash=True
    )
    assert outcome["duplicate_of"]["by"] == "phash"


def test_delete_forgets_vector_and_phash(dedup: httpx.Client) -> None:
    vector = unit(np.ones(DIM))
    insert(dedup, "a", vector, phash="1234123412341234")
    assert dedup.delete(f"/v1/dedup/points/{sha('a')}", params={"model": "m"}).status_code == 204
    assert insert(dedup, "b", vector, phash="1234123412341234")["status"] == "inserted"
    gone = dedup.delete(f"/v1/dedup/points/{sha('zzz')}", params={"model": "m"})
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "unknown_point")
    unknown = dedup.delete(f"/v1/dedup/points/{sha('a')}", params={"model": "nope"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_collection")


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"model": "m", "vectors": [[1.0] * (DIM + 1)]}, 422, "dimension_mismatch"),
        ({"model": "m", "vectors": [[float("nan")] * DIM]}, 422, "invalid_vector"),
        ({"model": "m", "vectors": [[float("inf")] + [0.0] * (DIM - 1)]}, 422, "invalid_vector"),
        ({"model": "m", "vectors": []}, 422, "invalid_request"),
        ({"vectors": [[1.0] * DIM]}, 422, "invalid_request"),
        ({"phashes": ["xyz"]}, 422, "invalid_phash"),
        ({"model": "m", "vectors": [[1.0] * DIM], "namespace": "../etc"}, 422, "invalid_request"),
    ],
)
def test_bad_checks(dedup: httpx.Client, body: dict[str, Any], status: int, code: str) -> None:
    insert(dedup, "a", unit(np.ones(DIM)))
    response = dedup.post(
        "/v1/dedup/check", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text


def test_bad_inserts_store_nothing(dedup: httpx.Client) -> None:
    insert(dedup, "a", unit(np.ones(DIM)))
    for body, code in (
        ({"id": sha("b"), "model": "m", "vector": [1.0] * (DIM - 1)}, "dimension_mismatch"),
        ({"id": "not-a-sha", "model": "m", "vector": [1.0] * DIM}, "invalid_request"),
        ({"id": sha("b"), "vector": [1.0] * DIM}, "invalid_request"),
        ({"id": sha("b")}, "invalid_request"),
    ):
        response = dedup.post("/v1/dedup/insert", json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (422, code), body
    assert dedup.get("/v1/dedup/collections/default/m").json()["points"] == 1
    missing = dedup.get("/v1/dedup/collections/default/other")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "unknown_collection")


def test_concurrent_near_duplicates_keep_exactly_one(dedup: httpx.Client) -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=DIM)
    copies = [unit(base + rng.normal(size=DIM) * 0.03) for _ in range(24)]
    with ThreadPoolExecutor(12) as threads:
        outcomes = list(threads.map(lambda i: insert(dedup, f"copy{i}", copies[i]), range(24)))
    kept = [o for o in outcomes if o["status"] == "inserted"]
    assert len(kept) == 1
    assert {o["duplicate_of"]["id"] for o in outcomes if o["status"] == "duplicate"} == {
        kept[0]["id"]
    }
    assert dedup.get("/v1/dedup/collections/default/m").json()["points"] == 1


def test_replicas_keep_exactly_one(database_url: str, tmp_path: Path) -> None:
    """Two replicas, each its own app and database connections, sharing one vector store."""
    settings = settings_for(database_url, tmp_path)
    shared = open_vector_store(settings)
    rng = np.random.default_rng(4)
    try:
        with (
            live_server(create_app(settings, shared)) as first,
            live_server(create_app(settings, shared)) as second,
            httpx.Client(base_url=first) as a,
            httpx.Client(base_url=second) as b,
        ):
            for round_ in range(3):
                base = rng.normal(size=DIM)
                copies = [unit(base + rng.normal(size=DIM) * 0.03) for _ in range(16)]
                jobs = [(a if i % 2 else b, f"r{round_}-{i}", copies[i]) for i in range(16)]
                with ThreadPoolExecutor(16) as threads:
                    outcomes = list(threads.map(lambda job: insert(*job), jobs))
                assert sum(o["status"] == "inserted" for o in outcomes) == 1
            assert a.get("/v1/dedup/collections/default/m").json()["points"] == 3
    finally:
        shared.close()


def test_phashes_written_by_one_replica_are_seen_by_another(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, tmp_path)
    shared = open_vector_store(settings)
    try:
        with (
            live_server(create_app(settings, shared)) as first,
            live_server(create_app(settings, shared)) as second,
            httpx.Client(base_url=first) as a,
            httpx.Client(base_url=second) as b,
        ):
            b.post("/v1/dedup/check", json={"phashes": ["0000000000000000"]})  # b has caught up
            insert(a, "x", phash="0000000000000003")
            matches = b.post("/v1/dedup/check", json={"phashes": ["0000000000000000"]}).json()
            assert matches["phashes"][0]["matches"] == [{"id": sha("x"), "distance": 2}]
    finally:
        shared.close()


def test_batch_dedup_finds_the_known_groups(dedup: httpx.Client) -> None:
    rng = np.random.default_rng(5)
    expected_groups = {}
    singles = []
    for group in range(6):
        base = rng.normal(size=DIM)
        members = [f"g{group}-{k}" for k in range(1 + group % 3 + 1)]
        for k, name in enumerate(members):
            # stored directly (insert would refuse the copies), oldest first
            vector = unit(base + (rng.normal(size=DIM) * 0.03 if k else 0))
            _store_raw(dedup, name, vector)
        expected_groups[sha(members[0])] = sorted(sha(m) for m in members[1:])
    for i in range(20):
        singles.append(sha(f"single{i}"))
        _store_raw(dedup, f"single{i}", unit(rng.normal(size=DIM)))
    job = dedup.post("/v1/dedup/batch", json={"model": "m"})
    assert job.status_code == 202
    job_id = job.json()["id"]

    def batch_state() -> dict[str, Any]:
        return dict(dedup.get(f"/v1/dedup/batch/{job_id}").json())

    wait_for(lambda: batch_state()["status"] in ("done", "failed"), timeout=60)
    state = batch_state()
    assert state["status"] == "done", state
    assert (
        state["processed"]
        == state["total"]
        == 20 + sum(1 + len(v) for v in expected_groups.values())
    )
    groups = {g["keep"]: sorted(g["duplicates"]) for g in state["duplicate_groups"]}
    assert groups == expected_groups
    assert set(state["kept"]) == set(expected_groups) | set(singles)
    unknown = dedup.post("/v1/dedup/batch", json={"model": "nope"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_collection")
    missing = dedup.get("/v1/dedup/batch/no-such-job")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "unknown_job")


def test_a_batch_job_whose_replica_stopped_reporting_reads_interrupted(
    database_url: str, dedup: httpx.Client
) -> None:
    """A job left running by a replica that went away (its row not updated for longer than
    STALE_AFTER) reads `interrupted`, so its caller knows to start it again; a job as fresh
    still reads `running`."""
    engine = make_engine(database_url)
    stale = utcnow() - STALE_AFTER - timedelta(seconds=5)
    rows = {
        name: JobRow(
            id=str(uuid.uuid4()),
            namespace="default",
            model="m",
            threshold=0.95,
            status=BatchJobStatus.RUNNING.value,
            updated_at=stale if name == "stale" else utcnow(),
        )
        for name in ("stale", "fresh")
    }
    with session_scope(engine) as session:
        session.add_all(rows.values())
    engine.dispose()
    states = {
        name: dedup.get(f"/v1/dedup/batch/{row.id}").json()["status"] for name, row in rows.items()
    }
    assert states == {"stale": "interrupted", "fresh": "running"}


def _store_raw(client: httpx.Client, name: str, vector: list[float]) -> None:
    """Insert with a threshold of 1.0, which nothing but the image itself reaches."""
    outcome = client.post(
        "/v1/dedup/insert", json={"id": sha(name), "model": "m", "vector": vector, "threshold": 1.0}
    ).json()
    assert outcome["status"] == "inserted", outcome
    # Insertion times decide which member of a group is kept: the next insert must come later on
    # the clock the service read before it answered.
    answered_at = time.time()
    wait_for(lambda: time.time() > answered_at, timeout=1, interval=0.001)


def test_qdrant_unreachable_gives_503(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(database_url, tmp_path, qdrant_url=f"http://127.0.0.1:{free_port()}")
    with live_server(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as client:
        response = client.post("/v1/dedup/check", json={"model": "m", "vectors": [[1.0] * DIM]})
        assert (response.status_code, response.json()["error"]["code"]) == (503, "unavailable")
        assert response.headers["retry-after"]
        assert client.get("/readyz").status_code == 503


def test_insert_batch_checks_each_item_against_those_kept_before_it(dedup: httpx.Client) -> None:
    rng = np.random.default_rng(6)
    stored, fresh = rng.normal(size=DIM), rng.normal(size=DIM)
    insert(dedup, "stored", unit(stored))
    items = [
        {"id": sha("fresh"), "model": "m", "vector": unit(fresh)},
        {
            "id": sha("fresh-copy"),
            "model": "m",
            "vector": unit(fresh + rng.normal(size=DIM) * 0.03),
        },
        {
            "id": sha("stored-copy"),
            "model": "m",
            "vector": unit(stored + rng.normal(size=DIM) * 0.03),
        },
        {"id": sha("fresh"), "model": "m", "vector": unit(fresh)},  # the same image again
        {"id": sha("hash-only"), "phash": "00000000000000ff"},
        {"id": sha("hash-copy"), "phash": "00000000000000f0"},
    ]
    response = dedup.post("/v1/dedup/insert-batch", json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [
        "inserted",
        "duplicate",
        "duplicate",
        "inserted",
        "inserted",
        "duplicate",
    ]
    assert results[1]["duplicate_of"]["id"] == sha("fresh")
    assert results[2]["duplicate_of"]["id"] == sha("stored")
    assert results[5]["duplicate_of"] == {
        "id": sha("hash-only"),
        "by": "phash",
        "score": None,
        "distance": 4,
    }
    assert dedup.get("/v1/dedup/collections/default/m").json()["points"] == 2
    mixed = [
        {"id": sha("x"), "phash": "0" * 16},
        {"id": sha("y"), "phash": "0" * 16, "namespace": "other"},
    ]
    refused = dedup.post("/v1/dedup/insert-batch", json={"items": mixed})
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "invalid_request")


def test_checks_carry_bounded_work(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(database_url, tmp_path, max_vectors_per_request=2)
    with live_server(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        response = client.post("/v1/dedup/check", json={"phashes": ["0" * 16] * 3})
        assert (response.status_code, response.json()["error"]["code"]) == (422, "too_many_items")
