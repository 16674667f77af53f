"""`seavl crawl ingest` and `seavl export`: hand an img2dataset output to the gateway, or ask
it for a dataset export, and with `--wait` show the progress (shards, images/s, ETA; records
written) until the work has ended.

The gateway and its workers read the source and write the export themselves (a folder they can
reach, or an S3 prefix on the object store's server): nothing is uploaded from here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, TextIO

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
POLL_SECONDS = 1.0


class ExitStatus(IntEnum):
    OK = 0
    FAILED = 1  # a shard failed, or the gateway could not be reached
    USAGE = 2  # the gateway refused the request as given (4xx)


def add_crawl_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Exit status: 0 when the crawl was queued (with --wait: when every shard is done); 1 "
        "when a shard failed or the gateway cannot be reached; 2 when the gateway refused the "
        "request (a missing source, an unknown reference set, a key without the validator role)."
    )
    parser.add_argument(
        "source",
        help="img2dataset output: a folder (webdataset or files format, or plain images) or "
        "s3://bucket/prefix on the object store's server",
    )
    parser.add_argument("--wait", action="store_true", help="show progress until it ends")
    parser.add_argument("--reference-set", help="scored against this set (the pipeline's)")
    parser.add_argument(
        "--keep",
        choices=["accepted", "all"],
        default="accepted",
        help="store only accepted images (the rest keep a small row), or all",
    )
    parser.add_argument("--rho", type=float, help="acceptance threshold instead of the set's")
    parser.add_argument("--namespace", help="dedup namespace (the pipeline's)")
    parser.add_argument("--caption-language", help="queue a caption per kept image")
    _add_gateway_arguments(parser)


def _add_gateway_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"the gateway (default: SEAVL_URL or {DEFAULT_URL})")
    parser.add_argument("--api-key", help="a validator key (default: SEAVL_API_KEY)")


def _source(text: str) -> str:
    """An S3 source as given; a folder made absolute (the gateway resolves nothing relative to
    where this command runs)."""
    return text if text.startswith("s3://") else str(Path(text).resolve())


def _body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"source": _source(args.source), "policy": {"keep": args.keep}}
    if args.rho is not None:
        body["policy"]["rho"] = args.rho
    for name in ("reference_set", "namespace", "caption_language"):
        if getattr(args, name):
            body[name] = getattr(args, name)
    return body


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(crawl: dict[str, Any]) -> str:
    """One line of a crawl's progress."""
    shards, images = crawl["shards"], crawl["images"]
    ended = shards["done"] + shards["failed"]
    rate = crawl["images_per_second"]
    return (
        f"shards {ended}/{shards['total']}"
        + (f" ({shards['failed']} failed)" if shards["failed"] else "")
        + f" | images {images['seen']}: {images['accepted']} accepted, "
        f"{images['duplicates']} duplicates, {images['failed']} failed"
        + (f" | {rate:.1f} images/s" if rate is not None else "")
        + f" | ETA {_duration(crawl['eta_seconds'])}"
    )


def summary(crawl: dict[str, Any]) -> str:
    """The crawl's end: counts and the paper's tier table."""
    lines = [f"crawl {crawl['id']}: {crawl['status']}", progress_line(crawl)]
    lines += [f"  {t['tier']:<9} {t['count']:>8}  {t['share']:6.1%}" for t in crawl["tiers"]]
    lines += [f"  failed: {count} x {reason}" for reason, count in crawl["failures"].items()]
    return "\n".join(lines)


def _error(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Exit status: 0 when the export was queued (with --wait: when it is written); 1 when it "
        "failed or the gateway cannot be reached; 2 when the gateway refused the request (a "
        "destination that is not empty, outside SEAVL_GATEWAY_CRAWL__ROOTS, or a key without "
        "the validator role)."
    )
    parser.add_argument(
        "destination",
        help="a new or empty folder the gateway can write, or s3://bucket/prefix on the object "
        "store's server",
    )
    parser.add_argument("--wait", action="store_true", help="show progress until it ends")
    parser.add_argument(
        "--source", action="append", choices=["crowd", "crawl"], help="only these (repeatable)"
    )
    parser.add_argument("--min-tier", help="this tier and up (Bronze ... Diamond)")
    parser.add_argument("--accepted-only", action="store_true", help="only accepted images")
    parser.add_argument("--country", action="append", help="tagged with or scored best for it")
    parser.add_argument(
        "--duplicates", action="store_true", help="include duplicates (else one per group)"
    )
    parser.add_argument("--caption-language", action="append", help="captions in it only")
    parser.add_argument("--records-per-shard", type=int, default=1000)
    _add_gateway_arguments(parser)


def _export_body(args: argparse.Namespace) -> dict[str, Any]:
    filters: dict[str, Any] = {"accepted_only": args.accepted_only, "duplicates": args.duplicates}
    for name, value in (
        ("sources", args.source),
        ("min_tier", args.min_tier),
        ("countries", args.country),
        ("caption_languages", args.caption_language),
    ):
        if value:
            filters[name] = value
    return {
        "destination": _source(args.destination),
        "filters": filters,
        "records_per_shard": args.records_per_shard,
    }


def export_line(export: dict[str, Any]) -> str:
    return f"records {export['written']}/{export['total']} in {export['shards']} shards"


def export_summary(export: dict[str, Any]) -> str:
    lines = [f"export {export['id']}: {export['status']} to {export['destination']}"]
    lines.append(export_line(export) + f", {export['size_bytes'] / 1e6:.1f} MB")
    if export["error"]:
        lines.append(f"  {export['error']}")
    return "\n".join(lines)


@dataclass(frozen=True)
class _Command:
    """What `seavl crawl ingest` and `seavl export` each send and show."""

    name: str
    path: str
    started: Callable[[dict[str, Any]], str]
    progress: Callable[[dict[str, Any]], str]
    summary: Callable[[dict[str, Any]], str]


CRAWL = _Command(
    "seavl crawl ingest",
    "/v1/crawls",
    lambda crawl: f"crawl {crawl['id']}: {crawl['shards']['total']} shards queued",
    progress_line,
    summary,
)
EXPORT = _Command(
    "seavl export",
    "/v1/exports",
    lambda export: f"export {export['id']}: queued",
    export_line,
    export_summary,
)


def run_crawl(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    return _run(CRAWL, _body(args), args, out)


def run_export(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    return _run(EXPORT, _export_body(args), args, out)


def _run(command: _Command, body: dict[str, Any], args: argparse.Namespace, out: TextIO) -> int:
    url = args.url or os.environ.get("SEAVL_URL") or DEFAULT_URL
    key = args.api_key or os.environ.get("SEAVL_API_KEY")
    if not key:
        print(f"{command.name}: give --api-key or SEAVL_API_KEY (a validator key)", file=out)
        return ExitStatus.USAGE
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            response = client.post(command.path, json=body)
            if not response.is_success:
                print(f"{command.name}: {_error(response)}", file=out)
                return ExitStatus.USAGE if response.status_code < 500 else ExitStatus.FAILED
            made = response.json()
            print(command.started(made), file=out)
            if not args.wait:
                return ExitStatus.OK
            return _follow(client, command, f"{command.path}/{made['id']}", out)
    except httpx.TransportError as exc:
        print(f"{command.name}: the gateway at {url} cannot be reached: {exc}", file=out)
        return ExitStatus.FAILED


def _follow(client: httpx.Client, command: _Command, path: str, out: TextIO) -> int:
    """Progress on one line that is rewritten (a terminal), or a line every few seconds (a log),
    until the work ends."""
    live = out.isatty()
    last_printed = 0.0
    while True:
        response = client.get(path)
        response.raise_for_status()
        found = response.json()
        ended = found["status"] in ("done", "failed")
        now = time.monotonic()
        if live:
            print("\r" + command.progress(found), end="", file=out, flush=True)
        elif ended or now - last_printed >= 10:
            print(command.progress(found), file=out, flush=True)
            last_printed = now
        if ended:
            if live:
                print(file=out)
            print(command.summary(found), file=out)
            return ExitStatus.OK if found["status"] == "done" else ExitStatus.FAILED
        time.sleep(POLL_SECONDS)
