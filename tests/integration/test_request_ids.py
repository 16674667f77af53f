"""Request ids: each service answers and logs the id it was given (or one it made), the gateway's
jobs run with their upload's id in the gateway and in arq workers, and the services it calls log
the same id (JSON log lines, as a log stack reads them)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.logging import LIBRARY_LOGGERS, configure_logging
from services.common.request_ids import REQUEST_ID_HEADER
from services.gateway.auth import Role
from services.gateway.config import PipelineSettings
from tests.conftest import POSTGRES_URL, migrated_postgres
from tests.helpers import live_server, photo_bytes, wait_for
from tests.integration.gateway_stack import Stack, running_stack
from tests.integration.test_job_limits import start_worker_process
from tests.integration.test_reconciler import lost_record
from tests.integration.test_service_clients import probe_service


@dataclass
class LogLines:
    buffer: io.StringIO

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.buffer.getvalue().splitlines()]

    def of_request(self, request_id: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("request_id") == request_id]


@contextmanager
def json_logs() -> Iterator[LogLines]:
    """This process' log lines as the services write them in production (JSON), into a buffer.

    Enter it once the servers run: each uvicorn server sets up its loggers as it starts (and
    `live_server` keeps its access lines at warning)."""
    kept = ["", *LIBRARY_LOGGERS, "httpx"]
    saved = {
        name: (list(logger.handlers), logger.propagate, logger.level)
        for name in kept
        for logger in [logging.getLogger(name)]
    }
    buffer = io.StringIO()
    configure_logging("info", service="tests", log_format="json", stream=buffer)
    logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    try:
        yield LogLines(buffer)
    finally:
        for name, (handlers, propagate, level) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.setLevel(level)


def upload_with_request_id(stack: Stack, request_id: str) -> str:
    response = stack.gateway.post(
        "/v1/images",
        files={"image": ("photo.jpg", photo_bytes("chelsea.png"))},
        headers={**stack.as_role(Role.CONTRIBUTOR), REQUEST_ID_HEADER: request_id},
    )
    assert response.status_code == 202, response.text
    assert response.headers[REQUEST_ID_HEADER] == request_id
    return str(response.json()["id"])


def test_a_service_answers_and_logs_the_request_id_it_was_given(live_embedder: str) -> None:
    with json_logs() as logs, httpx.Client(base_url=live_embedder, timeout=60) as embedder:
        given = "upload-7f3a"
        response = embedder.post(
            "/v1/embed",
            files={"images": ("cat.jpg", photo_bytes("chelsea.png"))},
            headers={REQUEST_ID_HEADER: given},
        )
        assert response.status_code == 200
        assert response.headers[REQUEST_ID_HEADER] == given
        wait_for(lambda: logs.of_request(given) != [], timeout=5)
        (access,) = logs.of_request(given)
        assert access["service"] == "embedder" and access["logger"] == "uvicorn.access"
        assert "POST /v1/embed" in access["message"] and access["level"] == "INFO"
        assert access["timestamp"].endswith("Z")  # ISO 8601, UTC
        for unusable in ("x" * 129, "new\tline", "café".encode("latin-1")):
            answered = embedder.get("/healthz", headers={REQUEST_ID_HEADER: unusable})
            made = answered.headers[REQUEST_ID_HEADER]
            assert made != unusable and len(made) == 32 and int(made, 16) >= 0  # a uuid4's hex
        first, second = (embedder.get("/healthz").headers[REQUEST_ID_HEADER] for _ in range(2))
        assert first != second  # without one, each request gets its own


def test_an_unexpected_error_is_logged_with_its_request_id() -> None:
    with (
        live_server(probe_service()) as url,
        json_logs() as logs,
        httpx.Client(base_url=url) as client,
    ):
        response = client.get("/v1/explode", headers={REQUEST_ID_HEADER: "broken-1"})
        assert response.status_code == 500
        assert response.headers[REQUEST_ID_HEADER] == "broken-1"  # a 500 echoes it too
        wait_for(lambda: any("exception" in line for line in logs.of_request("broken-1")), 5)
        (error,) = [line for line in logs.of_request("broken-1") if "exception" in line]
        assert error["service"] == "probe" and error["level"] == "ERROR"
        assert "RuntimeError" in error["exception"]


def test_an_in_process_job_runs_with_its_upload_s_request_id(
    tmp_path: Path, live_embedder: str
) -> None:
    with running_stack(f"sqlite:///{tmp_path / 'seavl.db'}", tmp_path, live_embedder) as stack:
        with json_logs() as logs:
            image_id = upload_with_request_id(stack, "upload-in-process")
            assert stack.wait_done(image_id)["status"] == "done"
            wait_for(lambda: len(logs.of_request("upload-in-process")) >= 2, timeout=5)
        gateway_lines = [
            line["message"]
            for line in logs.of_request("upload-in-process")
            if line["service"] == "gateway"
        ]
        assert f"job process:{image_id}, try 1: done" in gateway_lines
        assert any("POST /v1/images" in message for message in gateway_lines)


@pytest.mark.parametrize("service", ["embedder", "filter", "dedup"])
def test_the_services_an_upload_reaches_log_its_request_id(
    service: str, tmp_path: Path, live_embedder: str
) -> None:
    """Needs the service clients to send `request_id_headers()` (services/common/clients.py)."""
    with running_stack(f"sqlite:///{tmp_path / 'seavl.db'}", tmp_path, live_embedder) as stack:
        with json_logs() as logs:
            image_id = upload_with_request_id(stack, f"upload-to-{service}")
            assert stack.wait_done(image_id)["status"] == "done"
        # the service wrote its access line before it answered the job's call
        carried = {line["service"] for line in logs.of_request(f"upload-to-{service}")}
        assert service in carried, carried


def test_a_worker_runs_a_queued_upload_with_its_request_id(
    redis_url: str, tmp_path: Path, live_embedder: str
) -> None:
    migrated_postgres()
    log = tmp_path / "worker.log"
    with running_stack(POSTGRES_URL, tmp_path, live_embedder, redis_url=redis_url) as stack:
        worker = start_worker_process(stack, redis_url, log)  # its log is a file: JSON lines
        try:
            image_id = upload_with_request_id(stack, "upload-queued")
            done = stack.wait_done(image_id, timeout=90)
            assert done["status"] == "done", done
        finally:
            worker.kill()
            worker.wait()
    ours = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    carried = [line for line in ours if line.get("request_id") == "upload-queued"]
    assert {line["service"] for line in carried} == {"gateway-worker"}
    assert f"job process:{image_id}, try 1: done" in [line["message"] for line in carried]
    # arq's own lines, once the worker has started, are JSON lines like ours
    assert any(line["logger"].startswith("arq") for line in ours)


def test_jobs_the_reconciler_queues_again_run_with_its_round_s_request_id(
    tmp_path: Path, live_embedder: str
) -> None:
    pipeline = PipelineSettings(reconcile_grace_seconds=0, reconcile_interval_seconds=0.2)
    database = f"sqlite:///{tmp_path / 'seavl.db'}"
    with (
        running_stack(database, tmp_path, live_embedder, pipeline=pipeline) as stack,
        json_logs() as logs,
    ):
        lost = lost_record(stack, photo_bytes("rocket.jpg"), attempts=1)
        assert stack.wait_done(lost, timeout=30)["status"] == "done"

        def job_lines() -> list[dict[str, Any]]:
            ran = f"job process:{lost}, try "
            return [line for line in logs.lines() if line["message"].startswith(ran)]

        wait_for(lambda: job_lines() != [], timeout=5)
    (job,) = job_lines()
    round_lines = [line["message"] for line in logs.of_request(job["request_id"])]
    assert "reconciler: 1 lost jobs queued again, 0 failed" in round_lines
