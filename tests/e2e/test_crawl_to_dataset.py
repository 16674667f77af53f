"""A crawl to a dataset, as a data engineer runs it: img2dataset downloads a few hundred real
images (and broken URLs, and pages that are not images) from a loopback server; seavl ingests
its shards and exports the curated set; every count reconciles and every exported image opens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from datasets import load_dataset  # type: ignore[import-untyped]

from bench._images import crawl_size_jpegs
from services.gateway.auth import Role
from services.gateway.config import CrawlSettings
from tests.helpers import quiet_files_handler, serving, wait_for
from tests.integration.gateway_stack import Stack, running_stack

IMAGES = 240
BROKEN = 20  # 404s
NOT_IMAGES = 20  # HTML pages behind image-looking URLs

DOWNLOAD = """
import sys
from img2dataset import download

download(
    url_list=sys.argv[1], input_format="csv", url_col="url", caption_col="caption",
    output_format="webdataset", output_folder=sys.argv[2], processes_count=1, thread_count=16,
    number_sample_per_shard=100, timeout=5, resize_mode="no", skip_reencode=True,
)
"""


def img2dataset(urls: Path, output: Path) -> None:
    environment = {
        **os.environ,
        "NO_ALBUMENTATIONS_UPDATE": "1",  # no update check over the network on import
        "no_proxy": "127.0.0.1",
        "NO_PROXY": "127.0.0.1",
    }
    done = subprocess.run(
        [sys.executable, "-c", DOWNLOAD, str(urls), str(output)],
        env=environment,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]


def follow(stack: Stack, path: str) -> dict[str, Any]:
    headers = stack.as_role(Role.VALIDATOR)

    def get() -> dict[str, Any]:
        return dict(stack.gateway.get(path, headers=headers).json())

    wait_for(lambda: get()["status"] in ("done", "failed"), timeout=600)
    return get()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_an_img2dataset_crawl_becomes_a_dataset_with_every_image_counted(
    tmp_path: Path, live_embedder: str
) -> None:
    www = tmp_path / "www"
    www.mkdir()
    rows = []
    for index, data in enumerate(crawl_size_jpegs(IMAGES, seed=51)):
        (www / f"{index}.jpg").write_bytes(data)
        rows.append(f"{index}.jpg,photo {index}")
    rows += [f"gone-{index}.jpg,missing {index}" for index in range(BROKEN)]
    for index in range(NOT_IMAGES):
        (www / f"page-{index}.jpg").write_text(f"<html><body>page {index}</body></html>")
        rows.append(f"page-{index}.jpg,page {index}")
    with serving(quiet_files_handler(www)) as port:
        urls = tmp_path / "urls.csv"
        lines = [f"http://127.0.0.1:{port}/{row}" for row in rows]
        urls.write_text("\n".join(["url,caption", *lines]) + "\n")
        img2dataset(urls, tmp_path / "crawl")
    stats = [json.loads(p.read_text()) for p in (tmp_path / "crawl").glob("*_stats.json")]
    downloaded = sum(s["successes"] for s in stats)
    assert downloaded == IMAGES  # img2dataset kept the images and none of the others

    crawl_settings = CrawlSettings(roots=[str(tmp_path)], batch_size=32)
    database = f"sqlite:///{tmp_path / 'seavl.db'}"
    with running_stack(database, tmp_path / "stack", live_embedder, crawl=crawl_settings) as stack:
        headers = stack.as_role(Role.VALIDATOR)
        body = {"source": str(tmp_path / "crawl"), "policy": {"keep": "all"}}
        queued = stack.gateway.post("/v1/crawls", json=body, headers=headers)
        assert queued.status_code == 202, queued.text
        crawl = follow(stack, f"/v1/crawls/{queued.json()['id']}")
        counts = crawl["images"]
        assert crawl["status"] == "done", crawl
        assert counts["seen"] == downloaded
        assert counts["accepted"] + counts["rejected"] + counts["duplicates"] + counts[
            "failed"
        ] == (downloaded)
        assert counts["stored"] == downloaded - counts["failed"]
        assert sum(t["count"] for t in crawl["tiers"]) == downloaded - counts["failed"]

        destination = tmp_path / "dataset"
        made = stack.gateway.post(
            "/v1/exports",
            json={"destination": str(destination), "records_per_shard": 100},
            headers=headers,
        )
        assert made.status_code == 202, made.text
        exported = follow(stack, f"/v1/exports/{made.json()['id']}")
    unique = counts["accepted"] + counts["rejected"]  # one image per duplicate group
    assert exported["status"] == "done" and exported["written"] == unique, exported
    # a cache of its own: `datasets` keys a local folder's cache by its name, not its contents
    records = load_dataset(str(destination), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert len(records) == unique
    for record in records:
        record["image"].load()  # every exported image opens
        assert record["url"].startswith(f"http://127.0.0.1:{port}/")
        assert record["caption_en"] == f"photo {record['url'].rsplit('/', 1)[1].split('.')[0]}"
        assert record["source"] == "crawl"
