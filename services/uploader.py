"""`seavl upload DIR`: the bulk uploader, a client of the gateway.

Each distinct file is sent once: paths that lead to one file (symlinks) or hold the same bytes
are grouped, and symlinked folders are not followed (they lead out of the folder, or back into it
without end). For each image it asks the gateway (`POST /v1/dedup`, with a small preview of the
image) whether it, or a near-duplicate, is stored, and sends it (`POST /v1/images`) only if not:
the answer is the decision the upload pipeline would make (embedding, then near candidates checked
on their pixels), so the check and the server agree.
Transient failures are retried with backoff; a resume file records what is settled (new, already
stored, duplicate, same file, rejected) so a rerun skips it. A summary on stdout counts each of
these and lists the duplicates, the files sent once for several paths and the rejected ones with
the reason; the exit status (`ExitStatus`) tells a script whether every file is in.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field, SecretStr, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from tenacity.wait import wait_base

from services.common.captions import caption_language
from services.common.errors import ServiceError
from services.common.images import ImageLimits, preview_jpeg
from services.common.location import strip_location
from services.common.settings import service_settings_config

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}
CAPTION_COLUMNS = ("caption_en", "caption_native", "location", "native_language")
# What the dedup check is sent of each image: enough for the embedder (a 256 px short side for
# most shapes) and the pixel check (256 px), a fraction of a photo's bytes.
PREVIEW_LONG_SIDE = 640


class UploaderSettings(BaseSettings):
    """`SEAVL_UPLOADER_URL` and `SEAVL_UPLOADER_API_KEY`, unless given on the command line."""

    model_config = service_settings_config("uploader")

    url: str = "http://127.0.0.1:8000"
    api_key: SecretStr | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)
    # the wait before a request's second try; it doubles with each further try, up to the max
    retry_wait_seconds: float = Field(default=0.5, gt=0)
    retry_wait_max_seconds: float = Field(default=10.0, gt=0)


class ExitStatus(IntEnum):
    """What `seavl upload` exits with, so that a script can tell whether every file is in."""

    DONE = 0  # every file new, already stored, a duplicate, or settled by an earlier run
    INCOMPLETE = 1  # a file failed (tried again on the next run) or was rejected, or no gateway
    USAGE = 2  # as argparse's own errors: the command cannot work as given, nothing is sent


class UploadStatus(StrEnum):
    SENT = "sent"  # new: the gateway took an image it did not have
    STORED = "stored"  # the gateway had these bytes already
    DUPLICATE = "duplicate"  # a near-duplicate of another stored image
    SAME_FILE = "same_file"  # a link to, or a copy of, another file of the folder: sent once
    REJECTED = "rejected"
    FAILED = "failed"  # the only status not settled: the next run tries the file again


SUMMARY_COUNTS = (
    (UploadStatus.SENT, "new"),
    (UploadStatus.STORED, "already stored"),
    (UploadStatus.DUPLICATE, "duplicates"),
    (UploadStatus.SAME_FILE, "same file"),
    (UploadStatus.REJECTED, "rejected"),
    (UploadStatus.FAILED, "failed"),
)
SUMMARY_TABLES = (
    (UploadStatus.DUPLICATE, "Duplicates of stored images (not sent)", "duplicate of"),
    (UploadStatus.SAME_FILE, "Same file as another here (sent once)", "same as"),
    (UploadStatus.REJECTED, "Rejected", "reason"),
    (UploadStatus.FAILED, "Failed (retried on the next run)", "reason"),
)


class _Transient(Exception):
    """Worth another try: the gateway was unreachable, overloaded or failing."""


class _Stopped(Exception):
    """The run cannot start, so nothing is sent; `status` is what the command exits with."""

    def __init__(self, message: str, status: ExitStatus) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Outcome:
    path: str
    status: UploadStatus
    detail: str = ""


def _positive_int(text: str) -> int:
    """A count for argparse: no workers, or no tries, would upload nothing."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def add_upload_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Exit status: 0 when every file is in (new, already stored, a duplicate, or settled by "
        "an earlier run); "
        "1 when a file failed (the next run tries it again) or was rejected in this run, or the "
        "gateway cannot be reached; 2 when the command cannot work as given (as for argparse's "
        "errors) or the gateway refuses the key."
    )
    parser.add_argument(
        "directory",
        type=Path,
        help="folder of images (searched recursively; symlinked folders are not followed)",
    )
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
    parser.add_argument("--concurrency", type=_positive_int, default=4, help="files at a time")
    parser.add_argument(
        "--retries",
        type=_positive_int,
        default=5,
        help="tries of each request (a file's dedup check, its upload) while failures are "
        "transient (unreachable, 429, 5xx), with a wait between them that doubles from "
        "SEAVL_UPLOADER_RETRY_WAIT_SECONDS (0.5 s) up to "
        "SEAVL_UPLOADER_RETRY_WAIT_MAX_SECONDS (10 s)",
    )
    parser.add_argument(
        "--resume-file",
        type=Path,
        help="what is settled, one JSON line per file (default: DIR/.seavl-upload.jsonl)",
    )


def _read_captions(path: Path | None) -> dict[str, dict[str, str]]:
    if path is None:
        return {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _Stopped(f"cannot read the caption file {path}: {exc}", ExitStatus.USAGE) from exc
    if rows and "file" not in rows[0]:
        raise _Stopped(f"{path}: the caption file needs a 'file' column", ExitStatus.USAGE)
    return {
        row["file"]: {k: v for k, v in row.items() if k in CAPTION_COLUMNS and v} for row in rows
    }


_RESUME_RECORD = TypeAdapter(Outcome)


class _ResumeLog:
    """One JSON line per settled file; read at start, appended (one write a line) as files
    settle, so that a run killed mid-write can tear only the last line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.settled: dict[str, Outcome] = {}
        self.problems: list[str] = []
        if path.is_file():
            self._read()

    def _read(self) -> None:
        """Skips, and reports, lines that are not records; an unfinished last line (no newline)
        is cut off, so that the next record starts a line of its own."""
        content = self.path.read_bytes()
        *lines, unfinished = content.split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                outcome = _RESUME_RECORD.validate_json(line)
            except ValidationError:
                self.problems.append(
                    f"{self.path} line {number} is not a record of a settled file: ignored"
                )
                continue
            self.settled[outcome.path] = outcome
        if unfinished:
            os.truncate(self.path, len(content) - len(unfinished))
            self.problems.append(
                f"{self.path} line {len(lines) + 1} is cut short (a run stopped while writing "
                "it): removed, and its file is sent again"
            )

    def record(self, outcome: Outcome) -> None:
        line = _RESUME_RECORD.dump_json(outcome) + b"\n"
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            while line:  # one write, unless the disk fills up
                line = line[os.write(descriptor, line) :]
        finally:
            os.close(descriptor)
        self.settled[outcome.path] = outcome


class Uploader:
    def __init__(
        self,
        client: httpx.Client,
        countries: list[str],
        captions: dict[str, dict[str, str]],
        retries: int,
        retry_wait: wait_base,
        caption_language: str | None = None,
    ) -> None:
        self.client = client
        self.countries = countries
        self.captions = captions
        self.retries = retries
        self.retry_wait = retry_wait
        self.caption_language = caption_language

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.send_counting_tries(method, path, **kwargs)[0]

    def send_counting_tries(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[httpx.Response, int]:
        """The answer, after retrying transient failures, and how many tries it took."""
        tries = 0

        def once() -> httpx.Response:
            nonlocal tries
            tries += 1
            try:
                response = self.client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise _Transient(str(exc)) from exc
            if response.status_code == 429 or response.status_code >= 500:
                raise _Transient(f"{path} answered {response.status_code}")
            return response

        retrying = Retrying(
            stop=stop_after_attempt(self.retries),
            wait=self.retry_wait,
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        response = retrying(once)
        return response, tries

    def upload(self, root: Path, file: Path) -> Outcome:
        relative = _relative(root, file)
        try:
            data = file.read_bytes()
        except OSError as exc:
            return Outcome(relative, UploadStatus.FAILED, f"cannot read it: {exc}")
        try:
            sample = preview_jpeg(data, ImageLimits(), PREVIEW_LONG_SIDE)
            # the id the gateway gives these bytes: it stores them without location data
            image_id = hashlib.sha256(strip_location(data)).hexdigest()
        except ServiceError as exc:
            return Outcome(relative, UploadStatus.REJECTED, f"{exc.code}: {exc.message}")
        try:
            found = self.send("POST", "/v1/dedup", files={"image": ("preview.jpg", sample)})
            if found.status_code != 200:
                return Outcome(relative, UploadStatus.FAILED, f"dedup check: {_error_text(found)}")
            matches = found.json()
            if matches["is_duplicate"]:
                listed = [m["id"] for m in matches["by_embedding"] + matches["by_phash"]]
                original = (matches.get("duplicate_of") or {"id": listed[0]})["id"]
                if image_id == original or image_id in listed:
                    return Outcome(relative, UploadStatus.STORED, image_id)
                return Outcome(relative, UploadStatus.DUPLICATE, original)
            fields: dict[str, str] = dict(self.captions.get(relative, {}))
            if self.countries:
                fields["countries"] = ",".join(self.countries)
            if self.caption_language:
                fields["caption_language"] = self.caption_language
            sent, tries = self.send_counting_tries(
                "POST", "/v1/images", files={"image": (file.name, data)}, data=fields
            )
        except _Transient as exc:
            gave_up = f"gave up after {self.retries} tries: {exc}"
            return Outcome(relative, UploadStatus.FAILED, gave_up)
        # A 200 says the bytes were stored before; after a failed try, most likely by that try
        # (taken, then the answer lost), so the image is new to this run.
        if sent.status_code == 202 or (sent.status_code == 200 and tries > 1):
            return Outcome(relative, UploadStatus.SENT, sent.json()["id"])
        if sent.status_code == 200:
            return Outcome(relative, UploadStatus.STORED, sent.json()["id"])
        return Outcome(relative, UploadStatus.REJECTED, _error_text(sent))


def _relative(root: Path, file: Path) -> str:
    """The file's name in the resume file and the summary: its path under the folder."""
    return file.relative_to(root).as_posix()


def find_images(root: Path) -> tuple[list[Path], list[str]]:
    """The image files under `root`, sorted, and the symlinked folders not followed: they lead
    out of the folder, or back into it (a link to a parent repeats the tree without end).
    Symlinked files are kept; `group_same_files` sends each file once."""
    files: list[Path] = []
    not_followed: list[str] = []
    for folder, subfolders, names in os.walk(root):  # does not descend into symlinked folders
        here = Path(folder)
        not_followed += [_relative(root, here / s) for s in subfolders if (here / s).is_symlink()]
        files += [
            here / name
            for name in names
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and (here / name).is_file()
        ]
    return sorted(files, key=lambda file: _relative(root, file)), sorted(not_followed)


def _content_sha256(file: Path) -> str | None:
    """The file's sha256, or None when it cannot be read (its upload says why)."""
    digest = hashlib.sha256()
    try:
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def group_same_files(
    files: list[Path], pool: ThreadPoolExecutor
) -> tuple[list[Path], dict[Path, list[Path]]]:
    """The first path of each distinct file, and for each the later paths to the same file (by
    resolved path) or to the same bytes (by sha256): those are not sent again."""
    firsts: list[Path] = []
    same_as: dict[Path, list[Path]] = {}
    first_by_key: dict[str, Path] = {}
    digests = pool.map(_content_sha256, files)
    for file, digest in zip(files, digests, strict=True):
        keys = [f"path:{file.resolve()}"] + ([f"sha256:{digest}"] if digest else [])
        first = next((first_by_key[key] for key in keys if key in first_by_key), None)
        if first is None:
            firsts.append(file)
            same_as[file] = []
            first = file
        else:
            same_as[first].append(file)
        for key in keys:
            first_by_key.setdefault(key, first)
    return firsts, same_as


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:200]}"


def _summary(console: Console, outcomes: list[Outcome], skipped_before: int) -> None:
    counts = Counter(o.status for o in outcomes)
    counted = ", ".join(f"{label} {counts[status]}" for status, label in SUMMARY_COUNTS)
    console.print(
        f"{counted}; settled in an earlier run {skipped_before}",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )
    for status, title, detail in SUMMARY_TABLES:
        rows = [o for o in outcomes if o.status == status]
        if rows:
            table = Table(title=title)
            table.add_column("file", overflow="fold")
            table.add_column(detail, overflow="fold")  # whole ids, not cut with …
            for outcome in rows:
                table.add_row(outcome.path, outcome.detail)
            console.print(table)


def run_upload(args: argparse.Namespace) -> int:
    """Uploads the folder; the exit status says whether every file is in (see `ExitStatus`)."""
    console = Console(stderr=True)
    try:
        return _upload_folder(args, console)
    except _Stopped as stopped:
        console.print(f"seavl upload: {stopped}", soft_wrap=True, markup=False, highlight=False)
        return stopped.status


def _upload_folder(args: argparse.Namespace, console: Console) -> ExitStatus:
    settings = UploaderSettings()
    key = args.api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    if not key:
        raise _Stopped(
            "an API key is needed: --api-key or SEAVL_UPLOADER_API_KEY", ExitStatus.USAGE
        )
    root: Path = args.directory
    if not root.is_dir():
        raise _Stopped(f"{root} is not a folder", ExitStatus.USAGE)
    countries = [c.strip().upper() for c in args.countries.split(",") if c.strip()]
    captions = _read_captions(args.caption_file)
    if args.caption_language is not None:
        try:
            caption_language(args.caption_language)
        except ServiceError as exc:  # before anything is sent, not once per image
            raise _Stopped(exc.message, ExitStatus.USAGE) from exc
    resume = _ResumeLog(args.resume_file or root / ".seavl-upload.jsonl")
    for problem in resume.problems:
        console.print(f"warning: {problem}", soft_wrap=True, markup=False, highlight=False)
    files, not_followed = find_images(root)
    if not_followed:
        console.print(
            f"warning: symlinked folders not followed (they lead out of {root} or back into "
            f"it): {', '.join(not_followed)}",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
    pending = [p for p in files if _relative(root, p) not in resume.settled]
    outcomes: list[Outcome] = []
    headers = {"Authorization": f"Bearer {key}"}
    retry_wait = wait_exponential(
        multiplier=settings.retry_wait_seconds, max=settings.retry_wait_max_seconds
    )
    with httpx.Client(
        base_url=args.url or settings.url, headers=headers, timeout=settings.timeout_seconds
    ) as client:
        uploader = Uploader(
            client, countries, captions, args.retries, retry_wait, args.caption_language
        )
        try:
            probe = uploader.send("POST", "/v1/dedup", json={"phash": "0" * 16})
        except _Transient as exc:
            unreachable = f"the gateway at {client.base_url} cannot be reached: {exc}"
            raise _Stopped(unreachable, ExitStatus.INCOMPLETE) from exc
        if probe.status_code in (401, 403):
            raise _Stopped(f"the gateway refused the key: {_error_text(probe)}", ExitStatus.USAGE)
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
            firsts, same_as = group_same_files(pending, pool)
            for first, outcome in zip(
                firsts, pool.map(lambda f: uploader.upload(root, f), firsts), strict=True
            ):
                copies = [
                    Outcome(_relative(root, copy), UploadStatus.SAME_FILE, outcome.path)
                    for copy in same_as[first]
                ]
                for settled in [outcome, *copies]:
                    if outcome.status is not UploadStatus.FAILED:  # copies settle with it
                        resume.record(settled)
                    outcomes.append(settled)
                progress.advance(task, 1 + len(copies))
    _summary(Console(), outcomes, len(files) - len(pending))
    missing = {UploadStatus.FAILED, UploadStatus.REJECTED}
    return ExitStatus.INCOMPLETE if any(o.status in missing for o in outcomes) else ExitStatus.DONE
