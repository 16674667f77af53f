"""Crawls for tests: img2dataset-like webdataset shards written in code, and a crawl started
and followed through the gateway."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bench._images import crawl_size_jpegs
from services.gateway.auth import Role
from services.gateway.config import CrawlSettings
from tests.helpers import photo_with_gps, wait_for
from tests.integration.gateway_stack import Stack, running_stack

SAMPLES_PER_SHARD = 8


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _sample_json(key: str, url: str, status: str = "success", **extra: Any) -> bytes:
    return json.dumps(
        {"key": key, "url": url, "caption": f"alt text {key}", "status": status, **extra}
    ).encode()


def write_crawl(folder: Path) -> dict[str, int]:
    """Two webdataset shards as img2dataset writes them: distinct scenes, a near-copy of one
    (saved again), a photo with GPS in its EXIF, a failed download (json only) and a
    member that is not an image. What it holds, by kind."""
    folder.mkdir(parents=True)
    scenes = crawl_size_jpegs(2 * SAMPLES_PER_SHARD - 1, seed=31)
    copy = Image.open(io.BytesIO(scenes[0]))
    copy_bytes = io.BytesIO()
    copy.save(copy_bytes, "JPEG", quality=70)  # the same picture, saved again
    images = [*scenes[:SAMPLES_PER_SHARD], copy_bytes.getvalue(), photo_with_gps("chelsea.png")]
    images += scenes[SAMPLES_PER_SHARD:]
    shards = [images[: len(images) // 2], images[len(images) // 2 :]]
    for number, shard_images in enumerate(shards):
        with tarfile.open(folder / f"{number:05d}.tar", "w") as tar:
            for index, data in enumerate(shard_images):
                key = f"{number:05d}{index:04d}"
                url = f"http://127.0.0.1/{key}.jpg"
                _member(tar, f"{key}.jpg", data)
                _member(tar, f"{key}.txt", f"alt text {key}".encode())
                width, height = Image.open(io.BytesIO(data)).size
                meta = {"original_width": width * 2, "original_height": height * 2}
                _member(tar, f"{key}.json", _sample_json(key, url, **meta))
            failed = f"{number:05d}9998"
            _member(
                tar,
                f"{failed}.json",
                _sample_json(
                    failed,
                    "http://127.0.0.1/gone.jpg",
                    "failed_to_download",
                    error_message="HTTP Error 404: Not Found",
                ),
            )
            broken = f"{number:05d}9999"
            _member(tar, f"{broken}.jpg", b"<html>not an image</html>")
            _member(tar, f"{broken}.json", _sample_json(broken, "http://127.0.0.1/page"))
        (folder / f"{number:05d}_stats.json").write_text("{}")
    return {"images": len(images), "failed": 2 * len(shards), "shards": len(shards)}


@pytest.fixture
def crawl_stack(database_url: str, tmp_path: Path, live_embedder: str) -> Iterator[Stack]:
    crawl = CrawlSettings(roots=[str(tmp_path)], batch_size=5)
    with running_stack(database_url, tmp_path / "stack", live_embedder, crawl=crawl) as stack:
        yield stack


def start(stack: Stack, body: dict[str, Any], role: Role = Role.VALIDATOR) -> dict[str, Any]:
    response = stack.gateway.post("/v1/crawls", json=body, headers=stack.as_role(role))
    assert response.status_code == 202, response.text
    return dict(response.json())


def finished(stack: Stack, crawl_id: str) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        response = stack.gateway.get(
            f"/v1/crawls/{crawl_id}", headers=stack.as_role(Role.VALIDATOR)
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    wait_for(lambda: get()["status"] in ("done", "failed"), timeout=120)
    return get()
