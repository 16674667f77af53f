"""One log format for every service and worker: JSON lines for log stacks, text for a terminal.

`SEAVL_LOG_FORMAT` chooses: `json` (one object a line: `timestamp` in ISO 8601 UTC, `level`,
`logger`, `message`, `service`, `request_id` when the line was written for a request or a job,
`exception` with the traceback when there is one) or `text`; unset, text when stderr is a
terminal and JSON otherwise (a container, a file, a pipe). The variable is one for the whole
deployment, as the service token is: every process of it logs alike.

uvicorn's and arq's loggers write through the same handler, so their lines have the same form.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Literal, TextIO

import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.request_ids import current_request_id, current_service

LogFormat = Literal["json", "text"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TEXT_FORMAT_WITH_REQUEST_ID = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# Loggers of the libraries that run our processes; they come with handlers of their own (arq's
# command line, uvicorn's default config), which would write their lines twice or in their form.
LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "arq")


class LogSettings(BaseSettings):
    """`SEAVL_LOG_FORMAT`: `json` or `text` (unset: text on a terminal, JSON elsewhere)."""

    model_config = SettingsConfigDict(env_prefix="SEAVL_LOG_", env_file=".env", extra="ignore")

    format: LogFormat | None = Field(default=None)


class RequestContextFilter(logging.Filter):
    """Puts the service and the request id of the code that logs onto its line (read when the
    line is written, in the thread and task that write it)."""

    def __init__(self, service: str | None) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        if getattr(record, "service", None) is None:
            record.service = current_service() or self.service
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": getattr(record, "service", None),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """The classic line, with the request id after the logger's name when there is one."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._with_request_id = logging.Formatter(TEXT_FORMAT_WITH_REQUEST_ID)

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            return super().format(record)
        return self._with_request_id.format(record)


class SeavlHandler(logging.StreamHandler[TextIO]):
    """Our handler on the root logger, told apart so that configuring again replaces it."""


def chosen_format(stream: TextIO) -> LogFormat:
    """`SEAVL_LOG_FORMAT`, or text on a terminal and JSON elsewhere."""
    configured = LogSettings().format
    if configured is not None:
        return configured
    return "text" if stream.isatty() else "json"


def log_handler(
    service: str | None, log_format: LogFormat | None = None, stream: TextIO | None = None
) -> logging.Handler:
    """A handler writing to `stream` (stderr) in `log_format` (see `chosen_format`), with the
    service and the request id on every line."""
    output = stream or sys.stderr
    handler = SeavlHandler(output)
    chosen = log_format or chosen_format(output)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    handler.addFilter(RequestContextFilter(service))
    return handler


def configure_logging(
    level: str = "info",
    service: str | None = None,
    log_format: LogFormat | None = None,
    stream: TextIO | None = None,
) -> None:
    """Logs of this process at `level` and above through one handler (a second call replaces
    it: the worker's start-up sets its own level after the command line's)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, SeavlHandler)]:
        root.removeHandler(handler)
    root.addHandler(log_handler(service, log_format, stream))
    root.setLevel(level.upper())
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    # one line per outgoing request would drown the services' own logs
    logging.getLogger("httpx").setLevel(logging.WARNING)
