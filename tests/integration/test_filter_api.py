"""The filter over HTTP, on SQLite and on the real PostgreSQL, with the real embedder."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from services.common.clients import ServiceClientSettings
from services.common.schemas import ImageInput
from services.filter.app import create_app
from services.filter.config import FilterSettings
from tests.helpers import free_port, live_server, photo_bytes
from tests.unit.test_relevance import naive_mean_of_cosines

DIM = 16


def settings_for(database_url: str, embedder_url: str) -> FilterSettings:
    return FilterSettings(
        database_url=database_url,
        embedder=ServiceClientSettings(url=embedder_url, timeout_seconds=30, attempts=2),
    )


@pytest.fixture
def filter_client(database_url: str, live_embedder: str) -> Iterator[httpx.Client]:
    with (
        live_server(create_app(settings_for(database_url, live_embedder))) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client


def create_set(
    client: httpx.Client, name: str = "sea", model: str = "test-model", **extra: Any
) -> None:
    response = client.post("/v1/reference-sets", json={"name": name, "model": model, **extra})
    assert response.status_code == 201, response.text


def add(
    client: httpx.Client,
    vectors: np.ndarray,
    countries: list[str | None] | None = None,
    name: str = "sea",
) -> httpx.Response:
    countries = countries or [None] * len(vectors)
    references = [
        {"vector": v.tolist(), **({"country": c} if c else {})}
        for v, c in zip(vectors, countries, strict=True)
    ]
    return client.post(f"/v1/reference-sets/{name}/references", json={"references": references})


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def test_scores_match_the_naive_mean_and_countries_are_scored(filter_client: httpx.Client) -> None:
    rng = np.random.default_rng(0)
    create_set(filter_client)
    thai = rng.normal(size=(40, DIM)) + 2.0
    viet = rng.normal(size=(30, DIM)) - 2.0
    assert add(filter_client, thai, ["TH"] * 40).status_code == 201
    response = add(filter_client, viet, ["VN"] * 30)
    assert response.json()["references"] == 70
    queries = np.vstack([rng.normal(size=(3, DIM)) + 2.0, rng.normal(size=(2, DIM)) - 2.0])
    body = filter_client.post("/v1/score", json={"set": "sea", "vectors": queries.tolist()}).json()
    everything = np.vstack([thai, viet])
    for query, result in zip(queries, body["results"], strict=True):
        assert result["score"] == pytest.approx(naive_mean_of_cosines(query, everything), abs=1e-5)
        assert result["country_scores"]["TH"] == pytest.approx(
            naive_mean_of_cosines(query, thai), abs=1e-5
        )
        assert result["accepted"] == (result["score"] >= 0.545)
    assert [r["best_country"] for r in body["results"]] == ["TH", "TH", "TH", "VN", "VN"]
    info = filter_client.get("/v1/reference-sets/sea").json()
    assert (info["references"], info["countries"], info["dim"]) == (70, {"TH": 40, "VN": 30}, DIM)
    assert (info["rho"], info["rho_source"]) == (0.545, "model default")


def test_base64_vectors_and_tiers(filter_client: httpx.Client) -> None:
    create_set(filter_client)
    add(filter_client, np.eye(DIM)[:1] * 3.0)
    # cos = 0.545 exactly: Platinum and accepted
    query = np.zeros(DIM, dtype="<f4")
    query[0], query[1] = 0.545, np.sqrt(1 - 0.545**2)
    packed = base64.b64encode(query.tobytes()).decode()
    result = filter_client.post("/v1/score", json={"set": "sea", "vectors": [packed]}).json()[
        "results"
    ][0]
    assert result["score"] == pytest.approx(0.545, abs=1e-6)
    assert (result["tier"], result["accepted"]) == ("Platinum", True)
    assert result["country_scores"] is None and result["best_country"] is None


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"set": "sea", "vectors": [[1.0] * (DIM - 1)]}, 422, "dimension_mismatch"),
        ({"set": "sea", "vectors": [[float("nan")] * DIM]}, 422, "invalid_vector"),
        ({"set": "sea", "vectors": [[0.0] * DIM]}, 422, "invalid_vector"),
        ({"set": "sea", "vectors": []}, 422, "invalid_request"),
        ({"set": "nope", "vectors": [[1.0] * DIM]}, 404, "unknown_set"),
        ({"set": "sea", "vectors": [[1.0] * DIM], "model": "clip"}, 409, "model_mismatch"),
        ({"set": "sea", "vectors": ["***"]}, 422, "invalid_vector"),
    ],
)
def test_bad_score_requests(
    filter_client: httpx.Client, body: dict[str, Any], status: int, code: str
) -> None:
    create_set(filter_client)
    add(filter_client, np.ones((1, DIM)))
    response = filter_client.post(  # json.dumps writes NaN, as some clients do
        "/v1/score", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert (response.status_code, error_code(response)) == (status, code), response.text


def test_infinite_values_are_refused(filter_client: httpx.Client) -> None:
    create_set(filter_client)
    add(filter_client, np.ones((1, DIM)))
    bad = base64.b64encode(np.full(DIM, np.inf, dtype="<f4").tobytes()).decode()
    response = filter_client.post("/v1/score", json={"set": "sea", "vectors": [bad]})
    assert (response.status_code, error_code(response)) == (422, "invalid_vector")


def test_set_lifecycle_and_errors(filter_client: httpx.Client) -> None:
    create_set(filter_client)
    duplicate = filter_client.post("/v1/reference-sets", json={"name": "sea", "model": "m"})
    assert (duplicate.status_code, error_code(duplicate)) == (409, "set_exists")
    empty = filter_client.post("/v1/score", json={"set": "sea", "vectors": [[1.0] * DIM]})
    assert (empty.status_code, error_code(empty)) == (409, "empty_set")
    bad_country = filter_client.post(
        "/v1/reference-sets/sea/references",
        json={"references": [{"vector": [1.0] * DIM, "country": "FR"}]},
    )
    assert (bad_country.status_code, error_code(bad_country)) == (422, "invalid_request")
    ids = add(filter_client, np.eye(DIM)[:2]).json()["ids"]
    wrong_dim = add(filter_client, np.ones((1, DIM + 1)))
    assert (wrong_dim.status_code, error_code(wrong_dim)) == (422, "dimension_mismatch")
    assert (
        filter_client.get("/v1/reference-sets/sea").json()["references"] == 2
    )  # nothing half-written
    assert filter_client.delete(f"/v1/reference-sets/sea/references/{ids[0]}").status_code == 204
    score = filter_client.post(
        "/v1/score", json={"set": "sea", "vectors": [np.eye(DIM)[1].tolist()]}
    )
    assert score.json()["results"][0]["score"] == pytest.approx(1.0)
    assert [s["name"] for s in filter_client.get("/v1/reference-sets").json()["sets"]] == ["sea"]
    assert filter_client.delete("/v1/reference-sets/sea").status_code == 204
    gone = filter_client.get("/v1/reference-sets/sea")
    assert (gone.status_code, error_code(gone)) == (404, "unknown_set")


def test_concurrent_additions_lose_nothing(filter_client: httpx.Client) -> None:
    rng = np.random.default_rng(5)
    create_set(filter_client)
    batches = [rng.normal(size=(5, DIM)) for _ in range(12)]
    with ThreadPoolExecutor(6) as threads:
        statuses = list(threads.map(lambda b: add(filter_client, b).status_code, batches))
    assert statuses == [201] * 12
    query = rng.normal(size=DIM)
    score = filter_client.post("/v1/score", json={"set": "sea", "vectors": [query.tolist()]}).json()
    assert score["results"][0]["score"] == pytest.approx(
        naive_mean_of_cosines(query, np.vstack(batches)), abs=1e-5
    )


def test_replicas_see_each_others_changes(database_url: str, live_embedder: str) -> None:
    settings = settings_for(database_url, live_embedder)
    with live_server(create_app(settings)) as first, live_server(create_app(settings)) as second:
        a, b = httpx.Client(base_url=first), httpx.Client(base_url=second)
        with a, b:
            create_set(a)
            add(a, np.eye(DIM)[:1])
            vector = {"set": "sea", "vectors": [np.eye(DIM)[1].tolist()]}
            assert b.post("/v1/score", json=vector).json()["results"][0]["score"] == pytest.approx(
                0.0
            )
            add(a, np.eye(DIM)[1:2])  # b has the old centroid cached
            assert b.post("/v1/score", json=vector).json()["results"][0]["score"] == pytest.approx(
                0.5
            )


def test_image_references_go_through_the_embedder(filter_client: httpx.Client) -> None:
    create_set(filter_client, model="efficientnet-lite0")
    images = [
        {"image": base64.b64encode(photo_bytes(n)).decode(), "country": "TH"}
        for n in ("coffee.png", "chelsea.png")
    ]
    response = filter_client.post("/v1/reference-sets/sea/references", json={"references": images})
    assert response.status_code == 201, response.text
    assert filter_client.get("/v1/reference-sets/sea").json()["dim"] == 1280
    bad = filter_client.post(
        "/v1/reference-sets/sea/references",
        json={"references": [{"image": base64.b64encode(b"not an image").decode()}]},
    )
    assert (bad.status_code, error_code(bad)) == (415, "unsupported_image_type")
    # beside an image it can embed, the bad one keeps the status the embedder gave it
    mixed = filter_client.post(
        "/v1/reference-sets/sea/references",
        json={"references": [images[0], {"image": base64.b64encode(b"not an image").decode()}]},
    )
    assert (mixed.status_code, error_code(mixed)) == (415, "unsupported_image_type"), mixed.text
    assert mixed.json()["error"]["field"] == "references[1]"
    empty = filter_client.post(
        "/v1/reference-sets/sea/references", json={"references": [{"image": ""}]}
    )
    assert (empty.status_code, error_code(empty)) == (400, "empty_image"), empty.text
    assert filter_client.get("/v1/reference-sets/sea").json()["references"] == 2


def test_a_reference_image_is_the_image_input_every_service_takes(
    filter_client: httpx.Client,
) -> None:
    """`{"data": base64}` or `{"key": sha256}`, as the embedder takes images; `image` is the
    reference's older name for `data`."""
    create_set(filter_client, model="efficientnet-lite0")
    data = ImageInput.of_bytes(photo_bytes("coffee.png")).model_dump(exclude_none=True)
    added = filter_client.post(
        "/v1/reference-sets/sea/references", json={"references": [{**data, "country": "VN"}]}
    )
    assert added.status_code == 201, added.text
    assert filter_client.get("/v1/reference-sets/sea").json()["countries"] == {"VN": 1}
    both = filter_client.post(
        "/v1/reference-sets/sea/references",
        json={"references": [{**data, "vector": [1.0] * 1280}]},
    )
    assert (both.status_code, error_code(both)) == (422, "invalid_request"), both.text
    assert "exactly one of" in both.json()["error"]["message"]
    named_twice = filter_client.post(
        "/v1/reference-sets/sea/references",
        json={"references": [{**data, "image": data["data"]}]},
    )
    assert (named_twice.status_code, error_code(named_twice)) == (422, "invalid_request")
    assert "not both" in named_twice.json()["error"]["message"]


def test_embedder_down_gives_503(database_url: str) -> None:
    settings = settings_for(database_url, f"http://127.0.0.1:{free_port()}")
    with live_server(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as client:
        create_set(client, model="efficientnet-lite0")
        response = client.post(
            "/v1/reference-sets/sea/references",
            json={"references": [{"image": base64.b64encode(photo_bytes("coffee.png")).decode()}]},
        )
        assert (response.status_code, error_code(response)) == (503, "unavailable")
        assert int(response.headers["retry-after"]) > 0


def test_calibration_is_stored_and_applied(filter_client: httpx.Client) -> None:
    create_set(filter_client)
    reference = np.eye(DIM)[0]
    add(filter_client, reference[None])

    def at(cosine: float) -> list[float]:
        vector = np.zeros(DIM)
        vector[0], vector[1] = cosine, np.sqrt(1 - cosine**2)
        return vector.tolist()

    labelled = [
        (0.9, "yes"),
        (0.8, "yes"),
        (0.7, "yes"),
        (0.6, "no"),
        (0.56, "yes"),
        (0.52, "no"),
        (0.3, "no"),
    ]
    samples = [{"vector": at(c), "label": label} for c, label in labelled]
    response = filter_client.post(
        "/v1/reference-sets/sea/calibrations", json={"samples": samples, "target_precision": 0.8}
    )
    assert response.status_code == 201, response.text
    calibration = response.json()
    tiers = {row["tier"]: (row["count"], row["yes"]) for row in calibration["tiers"]}
    assert tiers["Diamond"] == (5, 4) and tiers["Bronze"] == (1, 0) and tiers["Rejected"] == (1, 0)
    assert calibration["recommended_rho"] == pytest.approx(0.56)
    assert calibration["applied"] is False
    assert filter_client.get("/v1/reference-sets/sea").json()["rho"] == 0.545
    applied = filter_client.post(
        f"/v1/reference-sets/sea/calibrations/{calibration['id']}/apply"
    ).json()
    assert (applied["rho"], applied["rho_source"]) == (pytest.approx(0.56), "calibration")
    score = filter_client.post("/v1/score", json={"set": "sea", "vectors": [at(0.55)]}).json()
    assert (score["rho"], score["results"][0]["accepted"]) == (pytest.approx(0.56), False)
    listed = filter_client.get("/v1/reference-sets/sea/calibrations").json()["calibrations"]
    assert [c["applied"] for c in listed] == [True]


def test_requests_carry_bounded_work(database_url: str, live_embedder: str) -> None:
    settings = settings_for(database_url, live_embedder)
    settings.max_vectors_per_request = 2
    with live_server(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        create_set(client)
        add(client, np.ones((1, DIM)))
        response = client.post("/v1/score", json={"set": "sea", "vectors": [[1.0] * DIM] * 3})
        assert (response.status_code, error_code(response)) == (422, "too_many_vectors")
        assert response.json()["error"]["field"] == "vectors"
