"""Is this process's worker alive? The per-pod check that Kubernetes and compose probes run.

Every worker writes a heartbeat file from its event loop (`services.gateway.worker`), so a
blocked or stuck loop stops writing it. arq's own check (`seavl worker --check`) reads a Redis
key that every worker of a queue shares, so one healthy pod hides a stuck one; and it loads the
whole gateway, which takes seconds. This module imports only the standard library, so a probe
runs it in a few tens of milliseconds:

    python -m services.common.worker_alive --queue crawls [--max-age 60] [--file PATH]

Exit 0 when the heartbeat is fresh; else exit 1 with one line on stderr saying why.
The default file is worked out here and nowhere else (the gateway's settings import it), from
the same variable the settings read, `SEAVL_GATEWAY_WORKER__HEARTBEAT_FILE`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

QUEUES = ("images", "captions", "crawls", "exports")
# what the gateway's settings read for `worker.heartbeat_file`
HEARTBEAT_FILE_VARIABLE = "SEAVL_GATEWAY_WORKER__HEARTBEAT_FILE"
QUEUE_PLACEHOLDER = "{queue}"
# one file per queue, so workers of several kinds on one machine do not share one
DEFAULT_HEARTBEAT_FILE = os.path.join(
    tempfile.gettempdir(), f"seavl-worker-{QUEUE_PLACEHOLDER}.alive"
)
DEFAULT_MAX_AGE_SECONDS = 60.0
DOTENV = ".env"  # pydantic-settings reads it too (from the working folder), below the variables


def _dotenv_value(name: str, path: Path) -> str | None:
    """`name`'s value in a dotenv file, as pydantic-settings would read it (or None)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    found: str | None = None
    for line in lines:
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, equals, value = line.partition("=")
        if not equals or line.startswith("#") or key.strip().lower() != name.lower():
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        found = value  # the last one wins
    return found


def configured_heartbeat_file(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = None
) -> str:
    """The heartbeat file setting as the gateway's settings see it: the variable (any case, as
    pydantic-settings reads it), else the `.env` file's line, else the default."""
    environ = os.environ if environ is None else environ
    for key, value in environ.items():
        if key.upper() == HEARTBEAT_FILE_VARIABLE and value:
            return value
    return _dotenv_value(HEARTBEAT_FILE_VARIABLE, dotenv or Path(DOTENV)) or DEFAULT_HEARTBEAT_FILE


def heartbeat_path(queue: str, setting: str | None = None) -> Path:
    """The heartbeat file of the worker of `queue`: `setting` (the configured one when None)
    with `{queue}` replaced by the queue's name."""
    template = configured_heartbeat_file() if setting is None else setting
    return Path(template.replace(QUEUE_PLACEHOLDER, queue))


def write_heartbeat(path: Path, queue: str) -> None:
    """Writes the heartbeat atomically (a temporary file renamed over it): a probe never reads
    half a file. Its time is the file's; the content says whose it is, for people."""
    path.parent.mkdir(parents=True, exist_ok=True)
    beat = json.dumps({"pid": os.getpid(), "queue": queue, "time": time.time()})
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(beat + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _seconds(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def problem(path: Path, max_age: float, now: float | None = None) -> str | None:
    """Why the worker writing `path` is not alive (None when its heartbeat is fresh)."""
    try:
        written = path.stat().st_mtime
    except FileNotFoundError:
        return f"no heartbeat at {path}: the worker has not started or wrote elsewhere"
    except OSError as exc:
        return f"cannot read the heartbeat at {path}: {exc.strerror or exc}"
    age = (time.time() if now is None else now) - written
    if age > max_age:
        return (
            f"last heartbeat {_seconds(age)} s ago (limit {_seconds(max_age)} s): "
            "the worker's loop is stuck"
        )
    return None


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.common.worker_alive",
        description="Exit 0 when this pod's worker wrote its heartbeat within --max-age seconds.",
    )
    parser.add_argument("--queue", choices=QUEUES, default="images", help="the worker's kind")
    parser.add_argument(
        "--file",
        help=f"the heartbeat file (default: ${HEARTBEAT_FILE_VARIABLE}, else "
        f"{DEFAULT_HEARTBEAT_FILE}; {QUEUE_PLACEHOLDER} becomes the queue)",
    )
    parser.add_argument(
        "--max-age",
        type=_positive,
        default=DEFAULT_MAX_AGE_SECONDS,
        help="seconds since the last heartbeat past which the worker counts as stuck",
    )
    args = parser.parse_args(argv)
    reason = problem(heartbeat_path(args.queue, args.file), args.max_age)
    if reason is not None:
        print(reason, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
