"""The filter's tier boundaries over HTTP: versions with their source, boundaries that settle on
observed crawl scores, calibrated boundaries, and the errors of a fit."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from services.common.clients import ServiceClientSettings
from services.common.database import make_engine
from services.common.tiers import DirectionDefaults, TierShares, fit_labels
from services.filter.app import create_app
from services.filter.config import FilterSettings
from tests.helpers import live_server
from tests.integration.test_filter_api import add, create_set, error_code

DIM = 16
# small shares, so that a few dozen scores are a sample: 45 % Rejected, the rarest 5 %
EVEN = TierShares(bronze=0.2, silver=0.15, gold=0.1, platinum=0.05, diamond=0.05)
DIRECTION = DirectionDefaults(bronze=0.2, silver=0.3, gold=0.4, platinum=0.5, diamond=0.6)


@pytest.fixture
def filter_client(database_url: str, live_embedder: str) -> Iterator[httpx.Client]:
    settings = FilterSettings(
        database_url=database_url,
        embedder=ServiceClientSettings(url=live_embedder, timeout_seconds=30, attempts=2),
        model_shares_defaults={"shares-model": DIRECTION},
        tier_shares=EVEN,
    )
    with (
        live_server(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client


def random_units(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, DIM))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def score(client: httpx.Client, vectors: np.ndarray, observe: bool = False) -> dict[str, object]:
    response = client.post(
        "/v1/score", json={"set": "sea", "vectors": vectors.tolist(), "observe": observe}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def versions(client: httpx.Client) -> list[dict[str, object]]:
    response = client.get("/v1/reference-sets/sea/tiers")
    assert response.status_code == 200, response.text
    return list(response.json()["versions"])


def test_a_model_without_shares_defaults_starts_on_the_papers_numbers(
    filter_client: httpx.Client,
) -> None:
    create_set(filter_client)
    assert filter_client.get("/v1/reference-sets/sea").json()["tiers"] is None
    add(filter_client, random_units(3, 0))
    info = filter_client.get("/v1/reference-sets/sea").json()
    assert info["tiers"]["source"] == "paper" and info["tiers"]["version"] == 1
    assert info["tiers"]["boundaries"]["bronze"] == 0.515
    assert (info["rho"], info["rho_source"]) == (0.545, "model default")
    add(filter_client, random_units(2, 1))  # fixed numbers: no new version for new references
    assert [v["version"] for v in versions(filter_client)] == [1]
    result = score(filter_client, random_units(1, 2))["results"][0]
    assert (result["tier_source"], result["tiers_version"]) == ("paper", 1)


def test_shares_boundaries_settle_on_observed_scores_and_every_change_is_recorded(
    filter_client: httpx.Client,
) -> None:
    create_set(filter_client, model="shares-model")
    references = random_units(4, 0)
    add(filter_client, references)
    first = versions(filter_client)
    assert [(v["version"], v["source"], v["basis"]) for v in first] == [
        (1, "shares", "model default")
    ]
    norm = float(np.linalg.norm(references.mean(axis=0)))
    assert first[0]["boundaries"]["gold"] == pytest.approx(0.4 * norm, abs=1e-6)

    crawl = random_units(200, 1)
    early = score(filter_client, crawl[:10], observe=True)
    assert versions(filter_client)[-1]["version"] == 1  # 10 scores: too few for a 5 % tier
    score(filter_client, crawl[10:20], observe=True)
    settled = versions(filter_client)[-1]
    assert (settled["version"], settled["basis"], settled["samples"]) == (2, "observed", 20)
    assert filter_client.get("/v1/reference-sets/sea").json()["observed_scores"] == 20
    [listed] = filter_client.get("/v1/reference-sets").json()["sets"]
    assert listed["observed_scores"] == 20
    later = score(filter_client, crawl[20:40], observe=True)
    assert {r["tiers_version"] for r in early["results"]} == {1}
    assert {r["tiers_version"] for r in later["results"]} == {2}
    assert versions(filter_client)[-1]["samples"] == 40  # refitted once it doubled: v3
    score(filter_client, crawl[40:79], observe=True)
    assert len(versions(filter_client)) == 3  # 79 < 2 x 40
    score(filter_client, crawl[79:200], observe=True)
    final = versions(filter_client)[-1]
    assert (final["version"], final["samples"]) == (4, 200)
    # the boundaries put the shares of the observed scores in each tier
    scores = np.array([r["score"] for r in score(filter_client, crawl)["results"]])
    bounds = final["boundaries"]
    for name, share in zip(
        ("bronze", "silver", "gold", "platinum", "diamond"), EVEN.at_or_above(), strict=True
    ):
        assert np.mean(scores >= bounds[name] - 1e-9) == pytest.approx(share, abs=0.01)
    # an unobserved score changes nothing
    score(filter_client, crawl)
    assert len(versions(filter_client)) == 4
    # new references: the fitted boundaries stay but say so; the sketch starts again
    add(filter_client, random_units(1, 5))
    info = filter_client.get("/v1/reference-sets/sea").json()
    assert info["tiers"]["version"] == 4 and info["tiers"]["stale"] is True
    assert info["references_version"] == 2
    assert info["observed_scores"] == 0  # scores of the old references are not counted
    score(filter_client, crawl[:19], observe=True)
    assert len(versions(filter_client)) == 4
    score(filter_client, crawl[19:20], observe=True)
    renewed = filter_client.get("/v1/reference-sets/sea").json()["tiers"]
    assert (renewed["version"], renewed["samples"], renewed["stale"]) == (5, 20, False)


def test_calibrated_boundaries_come_from_the_labels_and_set_rho(
    filter_client: httpx.Client,
) -> None:
    create_set(filter_client)
    add(filter_client, np.eye(DIM)[0][None])

    def at(cosine: float) -> list[float]:
        vector = np.zeros(DIM)
        vector[0], vector[1] = cosine, np.sqrt(1 - cosine**2)
        return vector.tolist()

    labelled = [(0.9, "yes"), (0.8, "yes"), (0.7, "no"), (0.6, "yes"), (0.5, "no"), (0.4, "no")]
    samples = [{"vector": at(c), "label": label} for c, label in labelled]
    made = filter_client.post(
        "/v1/reference-sets/sea/calibrations", json={"samples": samples, "target_precision": 0.7}
    )
    assert made.status_code == 201, made.text
    calibration = made.json()
    targets = {"bronze": 0.5, "silver": 0.6, "gold": 0.7, "platinum": 0.8, "diamond": 1.0}
    fitted = filter_client.post(
        "/v1/reference-sets/sea/tiers",
        json={"source": "calibrated", "calibration_id": calibration["id"], "targets": targets},
    )
    assert fitted.status_code == 201, fitted.text
    body = fitted.json()
    expected = fit_labels(
        np.array([c for c, _ in labelled]),
        [label == "yes" for _, label in labelled],
        list(targets.values()),
    )
    assert [body["boundaries"][name] for name in targets] == pytest.approx(expected)
    assert (body["source"], body["basis"], body["version"]) == ("calibrated", "labels", 2)
    info = filter_client.get("/v1/reference-sets/sea").json()
    assert info["rho"] == pytest.approx(calibration["recommended_rho"])
    assert info["rho_source"] == "calibration"
    listed = filter_client.get("/v1/reference-sets/sea/calibrations").json()["calibrations"]
    assert [c["applied"] for c in listed] == [True]  # as applying it would say
    result = score(filter_client, np.array([at(0.85)]))["results"][0]
    assert (result["tier"], result["tier_source"], result["tiers_version"]) == (
        "Diamond",
        "calibrated",
        2,
    )


def test_a_fit_says_what_is_wrong(filter_client: httpx.Client) -> None:
    create_set(filter_client, model="shares-model")
    fit = "/v1/reference-sets/sea/tiers"
    assert error_code(filter_client.post(fit, json={"source": "paper"})) == "empty_set"
    add(filter_client, random_units(3, 0))
    too_few = filter_client.post(fit, json={"source": "shares", "scores": [0.1] * 19})
    assert too_few.status_code == 422 and error_code(too_few) == "too_few_scores"
    assert "at least 20" in too_few.json()["error"]["message"]
    moved = filter_client.post(
        fit, json={"source": "shares", "scores": [0.1] * 40, "references_version": 0}
    )
    assert moved.status_code == 409 and error_code(moved) == "references_changed"
    no_scores = filter_client.post(fit, json={"source": "shares"})
    assert no_scores.status_code == 422 and error_code(no_scores) == "scores_required"
    no_id = filter_client.post(fit, json={"source": "calibrated"})
    assert no_id.status_code == 422 and error_code(no_id) == "calibration_required"
    unknown = filter_client.post(fit, json={"source": "calibrated", "calibration_id": 9})
    assert unknown.status_code == 404 and error_code(unknown) == "unknown_calibration"
    bad_shares = filter_client.post(
        fit,
        json={"source": "shares", "scores": [0.1] * 40, "shares": {"bronze": 0.9}},
    )
    assert bad_shares.status_code == 422
    assert [v["version"] for v in versions(filter_client)] == [1]  # nothing recorded


def test_sets_from_before_tier_versions_start_on_their_default(
    filter_client: httpx.Client, database_url: str
) -> None:
    create_set(filter_client, model="shares-model")
    add(filter_client, random_units(3, 0))
    engine = make_engine(database_url)
    with engine.begin() as connection:  # as the migration leaves a set made before it
        connection.execute(text("DELETE FROM filter_tier_boundaries"))
    engine.dispose()
    filter_client.post("/v1/reference-sets/sea/references", json={"references": []})
    result = score(filter_client, random_units(1, 1))["results"][0]
    assert (result["tier_source"], result["tiers_version"]) == ("shares", 1)
