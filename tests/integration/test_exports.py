"""Exports through the gateway: a crawl and some uploads in, a dataset out that Hugging Face
`datasets` and `webdataset` load as it is, with every count reconciled."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import webdataset as wds
from datasets import load_dataset  # type: ignore[import-untyped]
from PIL import Image
from sqlmodel import Session, col, select

from services.gateway.auth import Role
from services.gateway.tables import ImageRow
from tests.helpers import photo_bytes, wait_for
from tests.integration.crawl_stack import crawl_stack, finished, start, write_crawl
from tests.integration.gateway_stack import Stack

__all__ = ["crawl_stack"]  # the fixture, used by name


def export(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    headers = stack.as_role(Role.VALIDATOR)
    response = stack.gateway.post("/v1/exports", json=body, headers=headers)
    assert response.status_code == 202, response.text

    def get() -> dict[str, Any]:
        return dict(
            stack.gateway.get(f"/v1/exports/{response.json()['id']}", headers=headers).json()
        )

    wait_for(lambda: get()["status"] in ("done", "failed"), timeout=120)
    return get()


def fill(stack: Stack, folder: Path) -> None:
    """A crawl (every image kept) and two uploads with their people's fields."""
    write_crawl(folder / "crawl")
    crawl = finished(
        stack, start(stack, {"source": str(folder / "crawl"), "policy": {"keep": "all"}})["id"]
    )
    assert crawl["status"] == "done"
    for name, country in (("coffee.png", "VN"), ("astronaut.png", "TH")):  # not in the crawl
        uploaded = stack.upload(
            photo_bytes(name), countries=country, location="Hue, Vietnam", caption_en=f"a {name}"
        )
        stack.wait_done(uploaded.json()["id"])


# webdataset leaves its tar files open for the garbage collector to close (the library's bug)
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_export_loads_with_datasets_and_webdataset(crawl_stack: Stack, tmp_path: Path) -> None:
    fill(crawl_stack, tmp_path)
    destination = tmp_path / "export"
    done = export(crawl_stack, {"destination": str(destination), "records_per_shard": 7})
    assert done["status"] == "done", done
    with Session(crawl_stack.engine) as session:
        unique = session.exec(
            select(ImageRow)
            .where(ImageRow.status == "done")
            .where(col(ImageRow.duplicate_of).is_(None))
        ).all()
    assert done["written"] == done["total"] == len(unique)
    assert done["shards"] == -(-len(unique) // 7)
    assert done["summary"]["by_source"] == {
        "crawl": sum(r.source == "crawl" for r in unique),
        "crowd": 2,
    }
    # a cache of its own: `datasets` keys a local folder's cache by its name, not its contents
    records = load_dataset(str(destination), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert len(records) == len(unique)
    by_key = {row["key"]: row for row in records}
    assert set(by_key) == {r.id for r in unique}
    for row in unique:
        exported = by_key[row.id]
        assert exported["image"].size == (row.width, row.height)  # a PIL image that opens
        assert exported["source"] == row.source and exported["tier"] == row.tier
        if row.source == "crowd":
            assert exported["license"] == "CC-BY-SA-4.0"
            assert exported["location"] == "Hue, Vietnam" and exported["caption_en"]
            assert exported["url"] is None
        else:
            assert exported["url"] == row.url and exported["license"].startswith("unknown")
            assert exported["caption_en"] == row.alt_text  # the crawl's alt text
    samples = list(
        wds.WebDataset(
            [str(p) for p in sorted((destination / "webdataset").glob("*.tar"))],
            shardshuffle=False,
        )
    )
    assert len(samples) == len(unique)
    for sample in samples:
        image = next(v for k, v in sample.items() if k in ("jpg", "png", "webp"))
        Image.open(io.BytesIO(image)).verify()
    card = (destination / "README.md").read_text()
    assert "Platinum" in card or "Rejected" in card  # counts by tier


def test_export_filters_and_refusals(crawl_stack: Stack, tmp_path: Path) -> None:
    fill(crawl_stack, tmp_path)
    crowd = export(
        crawl_stack,
        {
            "destination": str(tmp_path / "crowd"),
            "filters": {"sources": ["crowd"], "countries": ["VN"]},
        },
    )
    with Session(crawl_stack.engine) as session:
        uploads = session.exec(select(ImageRow).where(ImageRow.source == "crowd")).all()
    vietnamese = [r for r in uploads if ",VN," in r.countries or r.best_country == "VN"]
    assert (crowd["status"], crowd["written"]) == ("done", len(vietnamese))
    assert crowd["summary"]["by_source"] == {"crowd": len(vietnamese)}
    every = export(
        crawl_stack, {"destination": str(tmp_path / "all"), "filters": {"duplicates": True}}
    )
    with Session(crawl_stack.engine) as session:
        assert every["written"] == len(session.exec(select(ImageRow)).all())
    headers = crawl_stack.as_role(Role.VALIDATOR)

    def refused(body: dict[str, Any]) -> tuple[int, str]:
        response = crawl_stack.gateway.post("/v1/exports", json=body, headers=headers)
        return response.status_code, response.json()["error"]["code"]

    assert refused({"destination": str(tmp_path / "crowd")}) == (422, "bad_export_destination")
    assert refused({"destination": "/etc/seavl"}) == (422, "location_not_allowed")
    assert refused({"destination": "s3://bucket/x"}) == (422, "bad_export_destination")
    listed = crawl_stack.gateway.get("/v1/exports", headers=headers).json()
    assert listed["total"] == 2


def test_the_cli_exports_and_follows_it_to_the_end(crawl_stack: Stack, tmp_path: Path) -> None:
    fill(crawl_stack, tmp_path)
    seavl = [str(Path(sys.executable).with_name("seavl")), "export"]
    connection = ["--url", str(crawl_stack.gateway.base_url).rstrip("/")]
    connection += ["--api-key", crawl_stack.keys[Role.VALIDATOR]]
    destination = tmp_path / "crowd"
    done = subprocess.run(
        [*seavl, str(destination), "--source", "crowd", "--wait", *connection],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0].endswith(": queued")
    assert "done to " in done.stdout and "records 2/2 in 1 shards" in done.stdout
    assert (destination / "README.md").exists()
    again = subprocess.run(
        [*seavl, str(destination), *connection], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 2 and "bad_export_destination" in again.stdout, again.stdout
