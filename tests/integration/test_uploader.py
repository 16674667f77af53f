"""`seavl upload`, as a user runs it, against a running gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.gateway.auth import Role
from tests.e2e.conftest import ROOT
from tests.helpers import encode, photo, photo_bytes
from tests.integration.gateway_stack import Stack, running_stack


@pytest.fixture
def stack(tmp_path: Path, live_embedder: str) -> Iterator[Stack]:
    with running_stack(f"sqlite:///{tmp_path / 'seavl.db'}", tmp_path, live_embedder) as running:
        yield running


def upload(
    stack: Stack, folder: Path, *extra: str, key: str | None = None, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`seavl upload FOLDER --countries TH …` as a user runs it, against the stack's gateway."""
    env = {**os.environ, "SEAVL_UPLOADER_API_KEY": key or stack.keys[Role.CONTRIBUTOR]}
    gateway = url or str(stack.gateway.base_url)
    command = [
        sys.executable,
        "-m",
        "services.cli",
        "upload",
        str(folder),
        "--url",
        gateway,
        "--countries",
        "TH",
        *extra,
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_upload_skips_duplicates_and_resumes(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "day1").mkdir(parents=True)
    (folder / "day1" / "cat.png").write_bytes(photo_bytes("chelsea.png", "PNG"))
    (folder / "day1" / "coffee.jpg").write_bytes(photo_bytes("coffee.png"))
    (folder / "notes.txt").write_text("not an image, not even looked at")
    captions = tmp_path / "captions.csv"
    captions.write_text(
        'file,caption_en,location\nday1/cat.png,A tabby cat.,"Chiang Mai, Thailand"\n'
    )
    first = upload(stack, folder, "--caption-file", str(captions))
    assert first.returncode == 0, first.stderr
    assert "sent 2, skipped as duplicate 0, rejected 0, failed 0" in first.stderr
    sent = [json.loads(line) for line in (folder / ".seavl-upload.jsonl").read_text().splitlines()]
    assert sorted(e["path"] for e in sent) == ["day1/cat.png", "day1/coffee.jpg"]
    ids = {e["path"]: e["detail"] for e in sent}
    cat = stack.wait_done(ids["day1/cat.png"])
    stack.wait_done(ids["day1/coffee.jpg"])
    assert (cat["caption_en"], cat["location"], cat["countries"]) == (
        "A tabby cat.",
        "Chiang Mai, Thailand",
        ["TH"],
    )

    # a second day: the same cat re-encoded (a duplicate), a broken file, and the first day again
    (folder / "day2").mkdir()
    (folder / "day2" / "cat-again.jpg").write_bytes(
        encode(photo("chelsea.png"), "JPEG", quality=75)
    )
    (folder / "day2" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    second = upload(stack, folder)
    assert second.returncode == 0, second.stderr
    assert "sent 0, skipped as duplicate 1, rejected 1, failed 0" in second.stderr
    assert "settled in an earlier run 2" in second.stderr
    assert "cat-again.jpg" in second.stderr and "corrupt_image" in second.stderr
    third = upload(stack, folder)
    assert (
        "sent 0, skipped as duplicate 0, rejected 0, failed 0; settled in an earlier run 4"
        in third.stderr
    )


def test_a_refused_key_stops_the_upload(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(photo_bytes("coffee.png"))
    result = upload(stack, folder, key="seavl_nope_nope")
    assert result.returncode != 0 and "refused the key" in result.stderr
    assert not (folder / ".seavl-upload.jsonl").exists()


def test_a_gateway_that_is_down_fails_without_settling(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(photo_bytes("coffee.png"))
    result = upload(stack, folder, "--retries", "2", url="http://127.0.0.1:9")
    assert result.returncode != 0 and "cannot be reached" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (folder / ".seavl-upload.jsonl").exists()
