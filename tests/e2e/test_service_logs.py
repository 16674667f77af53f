"""A service's log as its process writes it to a file (as in a container): JSON lines, uvicorn's
own lines included, each request's with its request id."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from services.common.request_ids import REQUEST_ID_HEADER
from tests.e2e.conftest import RunningService
from tests.helpers import wait_for


def test_the_embedder_process_logs_json_lines_with_request_ids(
    embedder_process: RunningService, tmp_path: Path
) -> None:
    log = tmp_path / "embedder.log"  # where the fixture sends the process' output
    answered = httpx.get(f"{embedder_process.url}/healthz", headers={REQUEST_ID_HEADER: "probe-42"})
    assert answered.headers[REQUEST_ID_HEADER] == "probe-42"

    def lines() -> list[dict[str, object]]:  # every line of the process is one JSON object
        return [json.loads(line) for line in log.read_text().splitlines()]

    wait_for(lambda: any(line.get("request_id") == "probe-42" for line in lines()), timeout=10)
    (access,) = [line for line in lines() if line.get("request_id") == "probe-42"]
    assert access["logger"] == "uvicorn.access" and access["service"] == "embedder"
    started = [line for line in lines() if "Uvicorn running on" in str(line["message"])]
    assert [line["logger"] for line in started] == ["uvicorn.error"]
