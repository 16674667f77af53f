"""`seavl dedup reindex`: the dedup store rebuilt from the stored images, in upload order, with
the records' `duplicate_of` set to what the pipeline decides today."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlmodel import Session

from services.gateway.tables import ImageRow
from tests.helpers import encode, jpeg, noise_image, photo
from tests.integration.gateway_stack import Stack, running_stack

MODEL = "efficientnet-lite0"


@pytest.fixture
def stack(database_url: str, tmp_path: Path, live_embedder: str) -> Iterator[Stack]:
    with running_stack(database_url, tmp_path, live_embedder) as running:
        yield running


def reindex(stack: Stack, *arguments: str) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it, with the gateway's settings."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "dedup", "reindex", *arguments],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "DATABASE_URL": stack.settings.database_url,
            "SEAVL_GATEWAY_EMBEDDER__URL": stack.settings.embedder.url,
            "SEAVL_GATEWAY_DEDUP__URL": stack.settings.dedup.url,
        },
        timeout=180,
        check=False,
    )


def set_duplicate_of(stack: Stack, image_id: str, original: str | None) -> None:
    with Session(stack.engine) as session:
        row = session.get(ImageRow, image_id)
        assert row is not None
        row.duplicate_of = original
        session.add(row)
        session.commit()


def test_reindex_rebuilds_the_store_in_upload_order_and_corrects_the_records(
    stack: Stack,
) -> None:
    cat = photo("chelsea.png")
    original = stack.wait_done(stack.upload(jpeg(cat, 95)).json()["id"])
    grey = stack.wait_done(stack.upload(jpeg(cat.convert("L").convert("RGB"), 85)).json()["id"])
    other = stack.wait_done(stack.upload(jpeg(photo("coffee.png"))).json()["id"])
    assert grey["duplicate_of"] == original["id"] and other["duplicate_of"] is None
    unique = noise_image((96, 96), seed=int.from_bytes(os.urandom(4), "big"))
    gone = stack.wait_done(stack.upload(encode(unique, "PNG")).json()["id"])["id"]

    # a store and records that no longer agree, as after the encoder changed: a point of no
    # stored image, and two records decided otherwise
    dedup = httpx.Client(base_url=stack.settings.dedup.url, timeout=60)
    collection = f"/v1/dedup/collections/default/{MODEL}"
    dim = dedup.get(collection).json()["dim"]
    stray = np.random.default_rng(7).standard_normal(dim)
    stray = (stray / np.linalg.norm(stray)).tolist()
    inserted = dedup.post(
        "/v1/dedup/insert",
        json={"id": "f" * 64, "namespace": "default", "model": MODEL, "vector": stray},
    )
    assert inserted.json()["status"] == "inserted", inserted.text
    assert dedup.get(collection).json()["points"] == 4  # original, other, gone, the stray
    set_duplicate_of(stack, grey["id"], None)
    set_duplicate_of(stack, other["id"], original["id"])
    # and an image whose bytes are no longer in the store
    (stack.settings.storage.dir / gone[:2] / gone).unlink()

    rebuilt = reindex(stack)

    assert rebuilt.returncode == 1, rebuilt.stderr  # one image could not be inserted again
    assert "reindexing" in rebuilt.stdout and "4/4" in rebuilt.stdout  # the progress bar
    assert (
        f"namespace 'default', model '{MODEL}': 3 images inserted again (2 kept, 1 duplicates, "
        "2 decided differently than before); 4 points dropped first; 1 images unreadable"
    ) in rebuilt.stdout
    assert gone in rebuilt.stderr  # named in the log
    assert stack.image(grey["id"])["duplicate_of"] == original["id"]
    assert stack.image(other["id"])["duplicate_of"] is None
    assert stack.image(original["id"])["duplicate_of"] is None
    assert dedup.get(collection).json()["points"] == 2  # the original and the other photo
    found = dedup.post(
        "/v1/dedup/check",
        json={"namespace": "default", "model": MODEL, "vectors": [stray], "threshold": 0.5},
    ).json()
    assert found["vectors"][0]["neighbours"] == []  # the stray point is gone

    # a namespace nothing was inserted into: nothing to do, the default one untouched
    empty = reindex(stack, "--namespace", "elsewhere")
    assert empty.returncode == 0, empty.stderr
    assert "0 images inserted again" in empty.stdout
    assert dedup.get(collection).json()["points"] == 2
    dedup.close()


def test_dropping_a_collection_forgets_its_points_and_their_phashes(stack: Stack) -> None:
    done = stack.wait_done(stack.upload(jpeg(photo("rocket.jpg"))).json()["id"])
    with httpx.Client(base_url=stack.settings.dedup.url, timeout=60) as dedup:
        collection = f"/v1/dedup/collections/default/{MODEL}"
        assert dedup.get(collection).json()["phashes"] == 1
        dropped = dedup.delete(collection)
        assert dropped.status_code == 200, dropped.text
        assert dropped.json() == {"namespace": "default", "model": MODEL, "points": 1}
        assert dedup.get(collection).status_code == 404
        by_phash = dedup.post(
            "/v1/dedup/check",
            json={"namespace": "default", "phashes": [done["phash"]], "max_hamming": 0},
        ).json()
        assert by_phash["phashes"][0]["matches"] == []
        again = dedup.delete(collection)
        assert (again.status_code, again.json()["error"]["code"]) == (404, "unknown_collection")
        bad = dedup.delete("/v1/dedup/collections/default/not a model")
        assert bad.status_code == 422, bad.text
