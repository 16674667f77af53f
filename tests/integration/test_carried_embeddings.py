"""An image job may carry its embedding (the upload's privacy pass answered it): the pipeline
scores and dedups by it instead of asking an embedder again. These run the pipeline's batch
by hand on records left queued in Redis (no worker runs them)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from services.common.schemas import EmbeddedImage, ImageInput
from services.gateway.jobs import Job, JobOutcome, Processed
from services.gateway.pipeline import Pipeline
from services.gateway.worker import carried_embedding
from tests.helpers import photo_bytes
from tests.integration.gateway_stack import Stack, running_stack


def run_batch(stack: Stack, jobs: list[tuple[str, Any]]) -> list[JobOutcome]:
    """`Pipeline.process_batch` for `(image id, what its job carries)`; a carried value that
    is a function gets the embedder's answer for the image and returns what to carry."""

    async def run() -> list[JobOutcome]:
        pipeline = Pipeline.create(stack.settings, stack.engine)
        try:
            batch = []
            for image_id, carry in jobs:
                if callable(carry):
                    [answer] = await pipeline.embedder.embed([ImageInput(key=image_id)])
                    assert isinstance(answer, EmbeddedImage)
                    carry = carry(answer)
                batch.append(Job(image_id, 1, False, embedded=carry))
            return await pipeline.process_batch(batch)
        finally:
            await pipeline.close()

    return asyncio.run(run())


def test_a_carried_embedding_of_a_retired_model_is_scored_apart(
    database_url: str, redis_url: str, tmp_path: Path, live_embedder: str
) -> None:
    """The embedder's default model changed between an upload and its job: each model's
    images are scored on their own, so the reference set refusing the old model's vectors
    leaves that image unscored, saying why, and the other is scored as ever."""
    with running_stack(database_url, tmp_path, live_embedder, redis_url=redis_url) as stack:
        old = stack.upload(photo_bytes("coffee.png")).json()["id"]
        new = stack.upload(photo_bytes("rocket.jpg")).json()["id"]
        assert stack.image(old)["status"] == stack.image(new)["status"] == "queued"

        def retired(answer: EmbeddedImage) -> EmbeddedImage:
            return answer.model_copy(update={"model": "retired-model"})

        outcomes = run_batch(stack, [(old, retired), (new, None)])
        assert outcomes == [Processed("done"), Processed("done")]
        unscored, scored = stack.image(old), stack.image(new)
    assert unscored["model"] == "retired-model" and unscored["score"] is None
    assert unscored["notes"].startswith("relevance not scored: ")
    assert "retired-model" in unscored["notes"]
    assert scored["model"] == "efficientnet-lite0" and scored["score"] is not None
    assert scored["notes"] is None


def test_a_carried_embedding_is_what_the_record_and_dedup_get(
    database_url: str, redis_url: str, tmp_path: Path, live_embedder: str
) -> None:
    """The record takes the carried pHash and model, and dedup its vector: a copy of the
    image embedded afresh is found to duplicate it."""
    with running_stack(database_url, tmp_path, live_embedder, redis_url=redis_url) as stack:
        first = stack.upload(photo_bytes("chelsea.png")).json()["id"]
        copy = stack.upload(photo_bytes("chelsea.png", "PNG")).json()["id"]
        outcomes = run_batch(stack, [(first, lambda answer: answer), (copy, None)])
        assert outcomes == [Processed("done"), Processed("done")]
        original, duplicate = stack.image(first), stack.image(copy)
    assert original["duplicate_of"] is None and original["phash"]
    assert duplicate["duplicate_of"] == first


def test_a_job_whose_carried_embedding_cannot_be_read_embeds_again() -> None:
    """A job queued by another version with an embedding this worker cannot read is run as
    one that carries none (the image is embedded again), not failed."""
    assert carried_embedding("a" * 64, '{"model": "efficientnet-lite0"}') is None
    assert carried_embedding("a" * 64, None) is None
    carried = EmbeddedImage(
        index=0,
        model="efficientnet-lite0",
        dim=2,
        embedding="AACAPwAAAAA=",
        sha256="a" * 64,
        phash="0" * 16,
        width=4,
        height=3,
        format="JPEG",
    )
    assert carried_embedding("a" * 64, carried.model_dump_json()) == carried
