"""`seavl upload DIR`: the bulk uploader, a client of the gateway.

For each image it computes the pHash locally, asks the gateway (`POST /v1/dedup`) whether a
near-duplicate is stored, and sends it (`POST /v1/images`) only if not. Transient failures are
retried with backoff; a resume file records what is settled (sent, duplicate, rejected) so a
rerun skips it. A summary lists what was skipped and what was rejected, with the reason.
"""

from __future__ import annotations

import argparse
import csv
import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.common.captions import caption_language
from services.common.errors import ServiceError
from services.common.images import ImageLimits, decode_image
from services.common.settings import service_settings_config

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}
CAPTION_COLUMNS = ("caption_en", "caption_native", "location", "native_language")


class UploaderSettings(BaseSettings):
    """`SEAVL_UPLOADER_URL` and `SEAVL_UPLOADER_API_KEY`, unless given on the command line."""

    model_config = service_settings_config("uploader")

    url: str = "http://127.0.0.1:8000"
    api_key: SecretStr | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)


class _Transient(Exception):
    """Worth another try: the gateway was unreachable, overloaded or failing."""


@dataclass(frozen=True)
class Outcome:
    path: str
    status: str  # sent, duplicate, rejected, failed
    detail: str = ""


def add_upload_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--countries", default="", help="comma-separated ISO codes, e.g. TH,VN")
    parser.add_argument(
        "--caption-file",
        type=Path,
        help="CSV with a 'file' column (path relative to DIR) and any of "
        + ", ".join(CAPTION_COLUMNS),
    )
    parser.add_argument(
        "--caption-language",
        metavar="LANGUAGE",
        help="queue a caption by the captioner for each image, in en, th, ms, tl, id or vi",
    )
    parser.add_argument("--url", help="the gateway (default: SEAVL_UPLOADER_URL or 127.0.0.1:8000)")
    parser.add_argument("--api-key", help="a contributor key (default: SEAVL_UPLOADER_API_KEY)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--retries", type=int, default=5, help="tries per request while transient")
    parser.add_argument("--resume-file", type=Path, help="default: DIR/.seavl-upload.jsonl")


def _read_captions(path: Path | None) -> dict[str, dict[str, str]]:
    if path is None:
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "file" not in rows[0]:
        raise SystemExit(f"{path}: the caption file needs a 'file' column")
    return {
        row["file"]: {k: v for k, v in row.items() if k in CAPTION_COLUMNS and v} for row in rows
    }


class _ResumeLog:
    """One JSON line per settled file; read at start, appended as files settle."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.settled: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.settled[entry["path"]] = entry

    def record(self, outcome: Outcome) -> None:
        entry = {"path": outcome.path, "status": outcome.status, "detail": outcome.detail}
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            self.settled[outcome.path] = entry


class Uploader:
    def __init__(
        self,
        client: httpx.Client,
        countries: list[str],
        captions: dict[str, dict[str, str]],
        retries: int,
        caption_language: str | None = None,
    ) -> None:
        self.client = client
        self.countries = countries
        self.captions = captions
        self.retries = retries
        self.caption_language = caption_language

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        def once() -> httpx.Response:
            try:
                response = self.client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise _Transient(str(exc)) from exc
            if response.status_code == 429 or response.status_code >= 500:
                raise _Transient(f"{path} answered {response.status_code}")
            return response

        retrying = Retrying(
            stop=stop_after_attempt(self.retries),
            wait=wait_exponential(multiplier=0.5, max=10),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        return retrying(once)

    def upload(self, root: Path, file: Path) -> Outcome:
        relative = file.relative_to(root).as_posix()
        data = file.read_bytes()
        try:
            decoded = decode_image(data, ImageLimits())
        except ServiceError as exc:
            return Outcome(relative, "rejected", f"{exc.code}: {exc.message}")
        try:
            found = self.send("POST", "/v1/dedup", json={"phash": decoded.phash})
            if found.status_code != 200:
                return Outcome(relative, "failed", f"dedup check: {_error_text(found)}")
            matches = found.json()
            if matches["is_duplicate"]:
                return Outcome(relative, "duplicate", matches["by_phash"][0]["id"])
            fields: dict[str, str] = dict(self.captions.get(relative, {}))
            if self.countries:
                fields["countries"] = ",".join(self.countries)
            if self.caption_language:
                fields["caption_language"] = self.caption_language
            sent = self.send("POST", "/v1/images", files={"image": (file.name, data)}, data=fields)
        except _Transient as exc:
            return Outcome(relative, "failed", f"gave up after {self.retries} tries: {exc}")
        if sent.status_code in (200, 202):
            return Outcome(relative, "sent", sent.json()["id"])
        return Outcome(relative, "rejected", _error_text(sent))


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:200]}"


def _summary(console: Console, outcomes: list[Outcome], skipped_before: int) -> None:
    counts = Counter(o.status for o in outcomes)
    console.print(
        f"sent {counts['sent']}, skipped as duplicate {counts['duplicate']}, rejected "
        f"{counts['rejected']}, failed {counts['failed']}; "
        f"settled in an earlier run {skipped_before}",
        soft_wrap=True,
    )
    for status, title in (
        ("duplicate", "Skipped as duplicates"),
        ("rejected", "Rejected"),
        ("failed", "Failed (retried on the next run)"),
    ):
        rows = [o for o in outcomes if o.status == status]
        if rows:
            table = Table(title=title)
            table.add_column("file")
            table.add_column("duplicate of" if status == "duplicate" else "reason")
            for outcome in rows:
                table.add_row(outcome.path, outcome.detail)
            console.print(table)


def run_upload(args: argparse.Namespace) -> int:
    """Exit status 0 when nothing failed (rejections are the files' fault, not a failure)."""
    settings = UploaderSettings()
    key = args.api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    if not key:
        raise SystemExit("an API key is needed: --api-key or SEAVL_UPLOADER_API_KEY")
    root: Path = args.directory
    if not root.is_dir():
        raise SystemExit(f"{root} is not a folder")
    countries = [c.strip().upper() for c in args.countries.split(",") if c.strip()]
    captions = _read_captions(args.caption_file)
    if args.caption_language is not None:
        try:
            caption_language(args.caption_language)
        except ServiceError as exc:  # before anything is sent, not once per image
            raise SystemExit(exc.message) from exc
    resume = _ResumeLog(args.resume_file or root / ".seavl-upload.jsonl")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    pending = [p for p in files if p.relative_to(root).as_posix() not in resume.settled]
    console = Console(stderr=True)
    outcomes: list[Outcome] = []
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(
        base_url=args.url or settings.url, headers=headers, timeout=settings.timeout_seconds
    ) as client:
        uploader = Uploader(client, countries, captions, args.retries, args.caption_language)
        try:
            probe = uploader.send("POST", "/v1/dedup", json={"phash": "0" * 16})
        except _Transient as exc:
            raise SystemExit(f"the gateway at {client.base_url} cannot be reached: {exc}") from exc
        if probe.status_code in (401, 403):
            raise SystemExit(f"the gateway refused the key: {_error_text(probe)}")
        columns = (
            TextColumn("uploading"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with (
            Progress(*columns, console=console) as progress,
            ThreadPoolExecutor(args.concurrency) as pool,
        ):
            task = progress.add_task("upload", total=len(pending))
            for outcome in pool.map(lambda f: uploader.upload(root, f), pending):
                if outcome.status != "failed":
                    resume.record(outcome)
                outcomes.append(outcome)
                progress.advance(task)
    _summary(console, outcomes, len(files) - len(pending))
    return 1 if any(o.status == "failed" for o in outcomes) else 0
