"""Relevance tiers that mean the same thing for every model (issue 15), through the gateway and
the `seavl tiers` commands, on real photographs and the real default model."""

from __future__ import annotations

import base64
import math
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from bench._more_pictures import GCOMPRIS_RCC_DIR, SourcePicture, gcompris_photos
from services.common.tiers import PAPER_BOUNDARIES
from services.gateway.auth import Role
from services.gateway.tables import ImageRow
from tests.helpers import jpeg, photo, sample_photo
from tests.integration.crawl_stack import crawl_stack, finished, start, write_crawl
from tests.integration.gateway_stack import Stack, running_stack

__all__ = ["crawl_stack"]  # the fixture, used by name

MODEL = "efficientnet-lite0"
TIERS = ("Bronze", "Silver", "Gold", "Platinum", "Diamond")
# per cent of the background in each tier, Bronze to Diamond: 45 % Rejected
SHARES = (20.0, 15.0, 10.0, 5.0, 5.0)


@pytest.fixture
def stack(database_url: str, tmp_path: Path, live_embedder: str) -> Iterator[Stack]:
    with running_stack(database_url, tmp_path, live_embedder) as running:
        yield running


def seavl(stack: Stack, *arguments: str) -> subprocess.CompletedProcess[str]:
    """A `seavl` command as an operator runs it, with the gateway's settings."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *arguments],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "DATABASE_URL": stack.settings.database_url,
            "SEAVL_GATEWAY_EMBEDDER__URL": stack.settings.embedder.url,
            "SEAVL_GATEWAY_FILTER__URL": stack.settings.filter.url,
            "SEAVL_GATEWAY_DEDUP__URL": stack.settings.dedup.url,
        },
        timeout=300,
        check=False,
    )


def real_photos() -> tuple[list[SourcePicture], list[SourcePicture]]:
    """Monuments (the references) and every other series of gcompris' photographs."""
    assert (GCOMPRIS_RCC_DIR / "categorization.rcc").is_file(), "run scripts/ensure-photos.sh"
    photos = gcompris_photos()
    monuments = [p for p in photos if p.series == "gcompris-monuments"]
    others = [p for p in photos if p.series != "gcompris-monuments"]
    return monuments, others


def scores_of(stack: Stack, name: str, pictures: list[SourcePicture]) -> list[dict[str, object]]:
    """The filter's answers for the pictures: embedded by the embedder, scored by the filter."""
    results: list[dict[str, object]] = []
    with (
        httpx.Client(base_url=stack.settings.embedder.url, timeout=120) as embedder,
        httpx.Client(base_url=stack.settings.filter.url, timeout=60) as filter_service,
    ):
        for start in range(0, len(pictures), 32):
            images = [
                {"data": base64.b64encode(p.data).decode()} for p in pictures[start : start + 32]
            ]
            embedded = embedder.post("/v1/embed", json={"images": images, "model": MODEL})
            assert embedded.status_code == 200, embedded.text
            vectors = [r["embedding"] for r in embedded.json()["results"]]
            scored = filter_service.post("/v1/score", json={"set": name, "vectors": vectors})
            assert scored.status_code == 200, scored.text
            results.extend(scored.json()["results"])
    return results


def within_sampling_error(count: int, total: int, share: float) -> bool:
    """Three binomial standard deviations, and one image for the bin a boundary sits in."""
    sd = math.sqrt(share * (1 - share) / total)
    return abs(count / total - share) <= 3 * sd + 1 / total


def test_a_set_fitted_on_real_background_photos_puts_the_shares_in_each_tier(
    stack: Stack, tmp_path: Path
) -> None:
    monuments, others = real_photos()
    random.Random(15).shuffle(others)
    admin = stack.as_role(Role.ADMIN)
    created = stack.gateway.post(
        "/v1/reference-sets", json={"name": "monuments", "model": MODEL}, headers=admin
    )
    assert created.status_code == 201, created.text
    references = [{"image": base64.b64encode(p.data).decode()} for p in monuments[:12]]
    added = stack.gateway.post(
        "/v1/reference-sets/monuments/references",
        json={"references": references},
        headers=admin,
    )
    assert added.status_code == 201, added.text
    info = stack.gateway.get("/v1/reference-sets/monuments", headers=admin).json()
    assert info["tiers"]["source"] == "shares" and info["tiers"]["basis"] == "model default"
    assert info["rho_source"] == "platinum boundary"

    half = len(others) // 2
    fitting, held_out = others[:half], others[half:]
    folder = tmp_path / "background"
    folder.mkdir()
    for index, picture in enumerate(fitting):  # a plain folder, one of a crawl's sources
        (folder / f"{index:04d}.{extension(picture.data)}").write_bytes(picture.data)

    fitted = seavl(
        stack,
        "tiers",
        "fit",
        "monuments",
        "--from",
        str(folder),
        "--shares",
        ",".join(str(s) for s in SHARES),
    )

    assert fitted.returncode == 0, fitted.stderr
    assert "scoring the sample" in fitted.stdout  # the progress bar
    assert f"{len(fitting)} images scored" in fitted.stdout
    assert "v2 shares (sample)" in fitted.stdout
    shown = seavl(stack, "tiers", "show", "monuments")
    assert shown.returncode == 0, shown.stderr
    assert "v1 shares (model default)" in shown.stdout and "v2 shares (sample)" in shown.stdout

    fit_answers = scores_of(stack, "monuments", fitting)
    held_answers = scores_of(stack, "monuments", held_out)
    for answers in (fit_answers, held_answers):
        assert {(a["tier_source"], a["tiers_version"]) for a in answers} == {("shares", 2)}
    fit_counts = Counter(str(a["tier"]) for a in fit_answers)
    held_counts = Counter(str(a["tier"]) for a in held_answers)
    for tier, share in zip(TIERS, SHARES, strict=True):
        # the sample it was fitted on: each share to the image
        assert abs(fit_counts[tier] - share / 100 * len(fitting)) <= 1, (tier, fit_counts)
        # photographs it never saw: the same shares, within sampling error
        assert within_sampling_error(held_counts[tier], len(held_out), share / 100), (
            tier,
            held_counts,
        )
    rejected = 1 - sum(SHARES) / 100
    assert within_sampling_error(held_counts["Rejected"], len(held_out), rejected)
    # the set's own kind of photograph ranks high: most of the other monuments are tiered
    monument_answers = scores_of(stack, "monuments", monuments[12:])
    tiered = sum(a["tier"] != "Rejected" for a in monument_answers)
    assert tiered / len(monument_answers) > 1 - rejected


def extension(data: bytes) -> str:
    if data[8:12] == b"WEBP":
        return "webp"
    return "png" if data.startswith(b"\x89PNG") else "jpg"


def test_retiering_changes_tiers_not_scores(stack: Stack) -> None:
    pictures = [photo("chelsea.png"), photo("coffee.png"), sample_photo("china.jpg")]
    photos = [jpeg(picture) for picture in [*pictures, photo("rocket.jpg")]]
    done = [stack.wait_done(stack.upload(data).json()["id"]) for data in photos]
    assert {(d["tier_source"], d["tiers_version"]) for d in done} == {("shares", 1)}
    # the stack's two references (chelsea, coffee) are in Platinum or Diamond on the default
    assert {d["tier"] for d in done[:2]} <= {"Platinum", "Diamond"}
    assert all(d["accepted"] for d in done[:2])
    admin = stack.as_role(Role.ADMIN)

    # the paper's fixed numbers, which the default model's cosines never reach
    paper = stack.gateway.post(
        "/v1/reference-sets/default/tiers", json={"source": "paper"}, headers=admin
    )
    assert paper.status_code == 201, paper.text
    assert paper.json()["version"] == 2 and paper.json()["source"] == "paper"
    assert stack.image(done[0]["id"])["tiers_version"] == 1  # stored tiers keep their version
    # people reviewed one: its verdict is theirs now, the opposite of what ρ would say
    reviewed = done[2]
    people_said = not reviewed["score"] >= 0.545
    with Session(stack.engine) as session:
        row = session.get(ImageRow, reviewed["id"])
        assert row is not None
        row.review_count, row.accepted = 2, people_said
        session.add(row)
        session.commit()
    # one tiered by the version in force already, and one by a version newer than the one the
    # run reads (as when a crawl refits the boundaries while it runs): both stay as they are
    newer = stack.gateway.post(
        "/v1/reference-sets/default/tiers", json={"source": "paper"}, headers=admin
    ).json()["version"]
    late = stack.wait_done(stack.upload(jpeg(sample_photo("flower.jpg"))).json()["id"])
    assert late["tiers_version"] == newer == 3
    ahead = stack.wait_done(stack.upload(jpeg(photo("astronaut.png"))).json()["id"])
    with Session(stack.engine) as session:
        row = session.get(ImageRow, ahead["id"])
        assert row is not None
        row.tiers_version, row.tier = 4, "Gold"
        session.add(row)
        session.commit()

    retiered = seavl(stack, "tiers", "retier", "default")

    assert retiered.returncode == 0, retiered.stderr
    assert "re-tiering" in retiered.stdout
    changed = 0
    for before in done:
        after = stack.image(before["id"])
        assert after["score"] == before["score"]  # never embedded or scored again
        assert (after["tier_source"], after["tiers_version"]) == ("paper", 3)
        assert after["tier"] == PAPER_BOUNDARIES.tier_of(before["score"]).value
        if before is not reviewed:
            assert after["accepted"] is (before["score"] >= 0.545)  # the paper's ρ
        changed += after["tier"] != before["tier"]
    assert stack.image(reviewed["id"])["accepted"] is people_said  # left to people
    assert changed >= 2, done  # the two photographs unlike the references at least
    assert (
        f"{len(done)} images re-tiered by boundaries v3 ({changed} changed tier" in retiered.stdout
    )
    assert stack.image(late["id"])["tiers_version"] == 3  # already by the version in force
    assert (stack.image(ahead["id"])["tiers_version"], stack.image(ahead["id"])["tier"]) == (
        4,
        "Gold",
    )
    listed = stack.gateway.get(
        "/v1/images", params={"tier": "Rejected"}, headers=stack.as_role(Role.VALIDATOR)
    ).json()
    assert {item["id"] for item in listed["items"]} == {
        d["id"] for d in [*done, late] if PAPER_BOUNDARIES.tier_of(d["score"]).value == "Rejected"
    }
    again = seavl(stack, "tiers", "retier", "default")
    assert "0 images re-tiered" in again.stdout, again.stdout


def test_fits_from_a_crawls_first_shards_and_from_stored_images(
    crawl_stack: Stack, tmp_path: Path
) -> None:
    held = write_crawl(tmp_path / "crawl")
    crawl = start(crawl_stack, {"source": str(tmp_path / "crawl"), "policy": {"keep": "all"}})
    assert finished(crawl_stack, crawl["id"])["status"] == "done"
    shares = "20,20,20,15,12.5"  # the rarest tier holds one of 8 images

    from_shard = seavl(
        crawl_stack, "tiers", "fit", "default", "--from", f"crawl:{crawl['id']}", "--shards", "1"
    )
    # CC3M's shares need 2,000 scores for the rarest tier to hold one: said, nothing recorded
    assert from_shard.returncode == 1
    assert "too few for these shares" in from_shard.stderr and "2000" in from_shard.stderr
    from_shard = seavl(
        crawl_stack,
        "tiers",
        "fit",
        "default",
        "--from",
        f"crawl:{crawl['id']}",
        "--shards",
        "1",
        "--shares",
        shares,
    )
    assert from_shard.returncode == 0, from_shard.stderr
    first_shard = held["images"] // 2  # its images; its broken member is named on stderr
    assert f"{first_shard} images scored" in from_shard.stdout
    assert "v2 shares (sample)" in from_shard.stdout and "first 1 shards" in from_shard.stdout
    assert "unreadable" in from_shard.stderr

    stored = seavl(
        crawl_stack, "tiers", "fit", "default", "--from", "namespace:default", "--shares", shares
    )
    assert stored.returncode == 0, stored.stderr
    assert f"{held['images']} images scored" in stored.stdout
    assert "v3 shares (sample)" in stored.stdout
    assert f"{held['images']} stored images of dedup namespace 'default'" in stored.stdout
