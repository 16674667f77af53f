"""Jobs that run at the same time share a pipeline batch, and a batch costs each service one
call whatever its size: the default batch holds 32 jobs, where 16 cost every upload twice the
calls (measured in bench/pipeline.py: the gateway's, the filter's and dedup's CPU per image)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.gateway.jobs import Job, JobOutcome, Processed
from services.gateway.pipeline import Pipeline
from services.gateway.queue import pipeline_batcher
from tests.helpers import encode, noise_image, recording
from tests.integration.gateway_stack import JOBS_ASK_THE_EMBEDDER, Stack, running_stack


def run_together(stack: Stack, image_ids: list[str]) -> list[JobOutcome]:
    """Every image's job submitted at once to the pipeline's batcher, as a worker's turns do."""

    async def run() -> list[JobOutcome]:
        pipeline = Pipeline.create(stack.settings, stack.engine)
        batcher = pipeline_batcher(pipeline, stack.settings.pipeline)
        batcher.start()
        try:
            jobs = [Job(image_id, 1, False) for image_id in image_ids]
            return list(await asyncio.gather(*batcher.submit_many(jobs)))
        finally:
            await batcher.stop()
            await pipeline.close()

    return asyncio.run(run())


def test_jobs_running_together_are_embedded_32_to_a_call(
    database_url: str, redis_url: str, tmp_path: Path, live_embedder: str
) -> None:
    """33 jobs at once: one call embeds 32 of them, a second the one left over."""
    with (
        recording(live_embedder) as (embedder, embedder_url),
        running_stack(  # jobs wait in Redis, where no worker runs them
            database_url, tmp_path, embedder_url, redis_url=redis_url, **JOBS_ASK_THE_EMBEDDER
        ) as stack,
    ):
        uploads = [stack.upload(encode(noise_image((48, 40), seed), "PNG")) for seed in range(33)]
        image_ids = [upload.json()["id"] for upload in uploads]
        assert len(set(image_ids)) == 33
        outcomes = run_together(stack, image_ids)
        statuses = {stack.image(image_id)["status"] for image_id in image_ids}
    assert outcomes == [Processed("done")] * 33 and statuses == {"done"}
    calls = [  # the pipeline's (the filter embedded the reference photographs, as bytes)
        [item["key"] for item in body["images"]]
        for body in embedder.bodies["v1/embed"]
        if all("key" in item for item in body["images"])
    ]
    assert sorted(len(keys) for keys in calls) == [1, 32]
    assert sorted(key for keys in calls for key in keys) == sorted(image_ids)
