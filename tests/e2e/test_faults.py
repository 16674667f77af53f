"""The fault test of issue 9, bounded: uploads while Redis is cut, and a worker SIGKILLed in
what used to be its job's last try (the tries before it found the embedder down), then every
record ends `done`."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.gateway.config import PipelineSettings
from tests.conftest import POSTGRES_URL, migrated_postgres
from tests.helpers import photo_bytes, sigkilled_after, wait_for
from tests.integration.gateway_stack import running_stack
from tests.integration.test_gateway_distributed import run_worker_until_idle
from tests.integration.test_job_limits import held_peer, start_worker_process
from tests.integration.test_reconciler import outage_peer, redis_server

PIPELINE = PipelineSettings(
    max_tries=2,
    job_timeout_seconds=3,
    retry_delay_seconds=0.1,
    retry_delay_max_seconds=0.5,
    retry_window_seconds=60,
    reconcile_grace_seconds=0,
    reconcile_interval_seconds=3600,  # at a worker's start, which is when the test needs it
)


@pytest.mark.timeout(60)
def test_uploads_during_a_redis_cut_and_a_killed_worker_all_end_done(
    tmp_path: Path, live_embedder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrated_postgres()
    for name, value in PIPELINE.model_dump().items():  # the worker process's settings
        monkeypatch.setenv(f"SEAVL_GATEWAY_PIPELINE__{name.upper()}", str(value))
    with (
        redis_server(tmp_path / "redis") as redis,
        outage_peer(live_embedder) as outage,  # the embedder refusing while it restarts
        held_peer(60, outage.url) as embedder,  # the embedder hanging
        running_stack(
            POSTGRES_URL, tmp_path, embedder.url, redis_url=redis.url, pipeline=PIPELINE
        ) as stack,
    ):
        outage.down = True
        first = stack.upload(photo_bytes("rocket.jpg")).json()["id"]
        log = tmp_path / "worker.log"
        worker = start_worker_process(stack, redis.url, log)
        with sigkilled_after(worker):
            # more tries on a refusing embedder than max_tries: none of them counts
            wait_for(lambda: outage.refused >= 4 * PIPELINE.max_tries, timeout=30)
            embedder.hold()
            outage.down = False
            assert embedder.arrived.wait(20), log.read_text()[-3000:]  # a try is running
        assert stack.image(first)["status"] == "processing"  # as the killed worker left it
        redis.stop()
        refused = [stack.upload(photo_bytes(name)) for name in ("chelsea.png", "coffee.png")]
        assert [r.status_code for r in refused] == [503, 503]
        embedder.release()
        redis.start()
        # a worker's reconciler queues the refused uploads; the killed job runs again once the
        # dead worker's lease ends
        run_worker_until_idle(stack)
        with stack.engine.connect() as connection:
            ids = list(connection.exec_driver_sql("SELECT id FROM gateway_images").scalars())
        assert len(ids) == 3 and first in ids
        ended = [stack.image(image_id) for image_id in ids]
        assert [(image["status"], image["error"]) for image in ended] == [("done", None)] * 3
