"""The log format: JSON lines for log stacks, text for a person at a terminal."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.logging import LIBRARY_LOGGERS, configure_logging
from services.common.request_ids import request_context


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    kept = ["", *LIBRARY_LOGGERS, "httpx"]
    saved = {
        name: (list(logging.getLogger(name).handlers), logging.getLogger(name).level)
        for name in kept
    }
    yield
    for name, (handlers, level) in saved.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).setLevel(level)


def logged_line(stream: io.TextIOBase) -> str:
    with request_context("req-1", "dedup"):
        logging.getLogger("services.dedup.api").warning("index %s rebuilt", "main")
    stream.seek(0)
    return stream.read().splitlines()[-1]


def test_a_file_gets_json_lines_and_a_terminal_gets_text(tmp_path: Path) -> None:
    with (tmp_path / "service.log").open("w+") as file:
        configure_logging("info", service="dedup", stream=file)
        line = json.loads(logged_line(file))
    assert {k: line[k] for k in ("level", "logger", "message", "service", "request_id")} == {
        "level": "WARNING",
        "logger": "services.dedup.api",
        "message": "index main rebuilt",
        "service": "dedup",
        "request_id": "req-1",
    }
    primary, secondary = os.openpty()
    with os.fdopen(primary, "r") as reader, os.fdopen(secondary, "w") as terminal:
        configure_logging("info", service="dedup", stream=terminal)
        with request_context("req-2"):
            logging.getLogger("services.dedup.api").warning("index rebuilt")
        terminal.flush()
        text = reader.readline()
    assert text.rstrip().endswith("WARNING services.dedup.api [req-2]: index rebuilt")


def test_seavl_log_format_chooses_over_the_terminal_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEAVL_LOG_FORMAT", "text")
    with (tmp_path / "service.log").open("w+") as file:
        configure_logging("info", service="dedup", stream=file)
        assert logged_line(file).endswith("WARNING services.dedup.api [req-1]: index main rebuilt")


def test_an_exception_s_traceback_stays_inside_its_json_line() -> None:
    stream = io.StringIO()
    configure_logging("info", service="gateway", log_format="json", stream=stream)
    try:
        raise ValueError("broken")
    except ValueError:
        logging.getLogger("services.gateway.queue").exception("job failed")
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "job failed" and "request_id" not in record
    assert "ValueError: broken" in record["exception"]
