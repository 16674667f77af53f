"""`seavl upload`, as a user runs it, against a running gateway (or a flaky hop in front of it)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image, ImageOps
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.gateway.auth import Role
from tests.e2e.conftest import ROOT
from tests.helpers import encode, live_server, photo, photo_bytes
from tests.integration.gateway_stack import Stack, running_stack

NO_GATEWAY = "http://127.0.0.1:9"  # nothing listens on the discard port


@pytest.fixture
def stack(tmp_path: Path, live_embedder: str) -> Iterator[Stack]:
    with running_stack(f"sqlite:///{tmp_path / 'seavl.db'}", tmp_path, live_embedder) as running:
        yield running


def seavl_upload(
    *arguments: str, key: str | None, settings: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`seavl upload …` as a user runs it, with the key (if any) in SEAVL_UPLOADER_API_KEY."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEAVL_UPLOADER_")}
    env.update(settings or {})
    if key is not None:
        env["SEAVL_UPLOADER_API_KEY"] = key
    command = [sys.executable, "-m", "services.cli", "upload", *arguments]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def upload(
    stack: Stack,
    folder: Path,
    *extra: str,
    key: str | None = None,
    url: str | None = None,
    settings: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`seavl upload FOLDER --countries TH …` against the stack's gateway (or `url`)."""
    return seavl_upload(
        str(folder),
        "--url",
        url or str(stack.gateway.base_url),
        "--countries",
        "TH",
        *extra,
        key=key or stack.keys[Role.CONTRIBUTOR],
        settings=settings,
    )


def resume_records(folder: Path) -> dict[str, dict[str, str]]:
    lines = (folder / ".seavl-upload.jsonl").read_text().splitlines()
    return {entry["path"]: entry for entry in map(json.loads, lines)}


def test_upload_skips_duplicates_and_resumes(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "day1").mkdir(parents=True)
    (folder / "day1" / "cat.png").write_bytes(photo_bytes("chelsea.png", "PNG"))
    (folder / "day1" / "coffee.jpg").write_bytes(photo_bytes("coffee.png"))
    (folder / "notes.txt").write_text("not an image, not even looked at")
    captions = tmp_path / "captions.csv"
    captions.write_text(
        'file,caption_en,location\nday1/cat.png,A tabby cat.,"Chiang Mai, Thailand"\n'
    )
    first = upload(stack, folder, "--caption-file", str(captions))
    assert first.returncode == 0, first.stderr
    assert (
        "new 2, already stored 0, duplicates 0, same file 0, rejected 0, failed 0" in first.stdout
    )
    sent = [json.loads(line) for line in (folder / ".seavl-upload.jsonl").read_text().splitlines()]
    assert sorted(e["path"] for e in sent) == ["day1/cat.png", "day1/coffee.jpg"]
    ids = {e["path"]: e["detail"] for e in sent}
    cat = stack.wait_done(ids["day1/cat.png"])
    stack.wait_done(ids["day1/coffee.jpg"])
    assert (cat["caption_en"], cat["location"], cat["countries"]) == (
        "A tabby cat.",
        "Chiang Mai, Thailand",
        ["TH"],
    )

    # a second day: the same cat re-encoded (a duplicate), a broken file, and the first day again
    (folder / "day2").mkdir()
    (folder / "day2" / "cat-again.jpg").write_bytes(
        encode(photo("chelsea.png"), "JPEG", quality=75)
    )
    (folder / "day2" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    second = upload(stack, folder)
    assert second.returncode == 1, second.stderr  # a rejected file is not in: the script is told
    assert (
        "new 0, already stored 0, duplicates 1, same file 0, rejected 1, failed 0" in second.stdout
    )
    assert "settled in an earlier run 2" in second.stdout
    assert "cat-again.jpg" in second.stdout and "corrupt_image" in second.stdout
    third = upload(stack, folder)
    assert third.returncode == 0, third.stderr
    assert (
        "new 0, already stored 0, duplicates 0, same file 0, rejected 0, failed 0; "
        "settled in an earlier run 4" in third.stdout
    )


def test_a_refused_key_stops_the_upload(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(photo_bytes("coffee.png"))
    result = upload(stack, folder, key="seavl_nope_nope")
    assert result.returncode == 2 and "refused the key" in result.stderr
    assert not (folder / ".seavl-upload.jsonl").exists()


def test_a_gateway_that_is_down_fails_without_settling(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(photo_bytes("coffee.png"))
    result = upload(stack, folder, "--retries", "2", url=NO_GATEWAY)
    assert result.returncode == 1 and "cannot be reached" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (folder / ".seavl-upload.jsonl").exists()


@pytest.mark.parametrize(
    ("arguments", "key", "message"),
    [
        (("{folder}/nowhere",), "a-key", "nowhere is not a folder"),
        (("{folder}",), None, "an API key is needed"),
        (("{folder}", "--caption-file", "{folder}/missing.csv"), "a-key", "missing.csv"),
        (("{folder}", "--caption-language", "xx"), "a-key", "xx"),
        (("{folder}", "--concurrency", "0"), "a-key", "--concurrency"),
    ],
    ids=["no folder", "no key", "no caption file", "unknown caption language", "no concurrency"],
)
def test_a_command_that_cannot_work_exits_2_before_sending(
    tmp_path: Path, arguments: tuple[str, ...], key: str | None, message: str
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(photo_bytes("coffee.png"))
    given = [argument.format(folder=folder) for argument in arguments]
    result = seavl_upload(*given, "--url", NO_GATEWAY, "--retries", "1", key=key)
    assert (result.returncode, "Traceback" in result.stderr) == (2, False), result.stderr
    assert message in result.stderr
    assert not (folder / ".seavl-upload.jsonl").exists()


def test_a_torn_or_malformed_resume_line_is_reported_and_skipped(
    stack: Stack, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, source in (
        ("a.jpg", "coffee.png"),
        ("b.jpg", "chelsea.png"),
        ("c.jpg", "rocket.jpg"),
    ):
        (folder / name).write_bytes(photo_bytes(source))
    resume = folder / ".seavl-upload.jsonl"
    a, c, b = (
        json.dumps({"path": name, "status": "sent", "detail": "0" * 64})
        for name in ("a.jpg", "c.jpg", "b.jpg")
    )
    # line 2: an editor's leftover; line 4: what a run killed while recording b.jpg leaves
    resume.write_text(f"{a}\n<<<<<<< mine\n{c}\n{b[:17]}")

    first = upload(stack, folder)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    warnings = [line for line in first.stderr.splitlines() if str(resume) in line]
    assert len(warnings) == 2, first.stderr  # one line each, however long the path
    assert "line 2 " in warnings[0] and "ignored" in warnings[0]
    assert "line 4 " in warnings[1] and "cut short" in warnings[1]
    assert (
        "new 1, already stored 0, duplicates 0, same file 0, rejected 0, failed 0; "
        "settled in an earlier run 2" in first.stdout
    )
    lines = resume.read_text().splitlines()
    assert lines[1] == "<<<<<<< mine"  # not ours to drop
    # b.jpg's new record starts on a line of its own, after the two earlier ones
    records = [json.loads(line) for number, line in enumerate(lines, 1) if number != 2]
    assert [r["path"] for r in records] == ["a.jpg", "c.jpg", "b.jpg"]
    assert records[-1]["status"] == "sent"
    assert stack.image(records[-1]["detail"])["id"] == records[-1]["detail"]

    second = upload(stack, folder)
    assert second.returncode == 0, second.stderr
    assert [line for line in second.stderr.splitlines() if str(resume) in line] == [
        warnings[0]
    ]  # the torn line is gone; the leftover is still there, still reported
    assert (
        "new 0, already stored 0, duplicates 0, same file 0, rejected 0, failed 0; "
        "settled in an earlier run 3" in second.stdout
    )


class Failure(Enum):
    UNAVAILABLE = "a 503 with Retry-After, as the gateway answers when a dependency is down"
    DROPPED = "the gateway takes the upload, then the connection drops before its answer"


@dataclass(frozen=True)
class Planned:
    failure: Failure
    times: int


class _CutShort(Response):
    """Headers and the start of a body, then the connection closes."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"id": "', "more_body": True})


UPLOADED_NAME = re.compile(rb'filename="([^"]+)"')


class FlakyHop:
    """A real HTTP hop in front of the gateway: fails the upload of chosen files as planned,
    forwards everything else, and notes when each file's upload arrived."""

    def __init__(self, gateway_url: str, plan: dict[str, Planned]) -> None:
        self.gateway_url = gateway_url
        self.plan = plan
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.app = FastAPI()
        self.app.add_api_route("/{path:path}", self.forward, methods=["GET", "POST"])

    def failure_now(self, request: Request, body: bytes) -> Failure | None:
        named = UPLOADED_NAME.search(body) if request.url.path == "/v1/images" else None
        if named is None:
            return None
        file = named.group(1).decode()
        self.arrivals[file].append(time.monotonic())
        planned = self.plan.get(file)
        if planned is None or len(self.arrivals[file]) > planned.times:
            return None
        return planned.failure

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        failure = self.failure_now(request, body)
        if failure is Failure.UNAVAILABLE:
            error = {"code": "unavailable", "message": "the embedder cannot be reached"}
            return JSONResponse({"error": error}, status_code=503, headers={"Retry-After": "1"})
        headers = {
            k: v for k, v in request.headers.items() if k in ("authorization", "content-type")
        }
        async with httpx.AsyncClient(base_url=self.gateway_url, timeout=60) as gateway:
            answer = await gateway.request(
                request.method, request.url.path, content=body, headers=headers
            )
        if failure is Failure.DROPPED:
            return _CutShort()
        return Response(answer.content, answer.status_code, media_type="application/json")


def test_transient_failures_are_retried_with_backoff_per_file(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, source in (
        ("steady.jpg", "coffee.png"),
        ("flaky.jpg", "chelsea.png"),
        ("dropped.jpg", "rocket.jpg"),
        ("doomed.jpg", "astronaut.png"),
    ):
        (folder / name).write_bytes(photo_bytes(source))
    hop = FlakyHop(
        str(stack.gateway.base_url),
        {
            "flaky.jpg": Planned(Failure.UNAVAILABLE, times=2),
            "dropped.jpg": Planned(Failure.DROPPED, times=1),
            "doomed.jpg": Planned(Failure.UNAVAILABLE, times=5),  # more than one run's 3 tries
        },
    )
    first_wait = 0.2
    settings = {"SEAVL_UPLOADER_RETRY_WAIT_SECONDS": str(first_wait)}
    with live_server(hop.app) as hop_url:
        first = upload(stack, folder, "--retries", "3", url=hop_url, settings=settings)
        assert first.returncode == 1, first.stderr
        assert "new 3, already stored 0, duplicates 0, same file 0, rejected 0, failed 1" in (
            first.stdout
        )
        assert "doomed.jpg" in first.stdout and "gave up after 3 tries" in first.stdout
        tries = {name: len(times) for name, times in hop.arrivals.items()}
        assert tries == {"steady.jpg": 1, "flaky.jpg": 3, "dropped.jpg": 2, "doomed.jpg": 3}
        doomed = hop.arrivals["doomed.jpg"]
        waits = [later - earlier for earlier, later in pairwise(doomed)]
        assert waits[0] >= first_wait and waits[1] >= 2 * first_wait  # backs off, doubling
        settled = resume_records(folder)
        assert {p: r["status"] for p, r in settled.items()} == {
            "steady.jpg": "sent",
            "flaky.jpg": "sent",
            "dropped.jpg": "sent",  # its retry was told the id of what the gateway had taken
        }
        for record in settled.values():
            assert stack.image(record["detail"])["id"] == record["detail"]

        second = upload(stack, folder, "--retries", "3", url=hop_url, settings=settings)
        assert second.returncode == 0, second.stderr
        assert (
            "new 1, already stored 0, duplicates 0, same file 0, rejected 0, failed 0; "
            "settled in an earlier run 3" in second.stdout
        )
        assert len(hop.arrivals["doomed.jpg"]) == 6
        assert resume_records(folder)["doomed.jpg"]["status"] == "sent"


def test_each_distinct_file_is_sent_once_and_counted_by_what_became_of_it(
    stack: Stack, tmp_path: Path
) -> None:
    stored_before = {
        name: stack.upload(data).json()["id"]
        for name, data in (
            ("cat", photo_bytes("chelsea.png", "PNG")),
            ("rocket", photo_bytes("rocket.jpg")),
        )
    }
    for image_id in stored_before.values():
        stack.wait_done(image_id)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "far.jpg").write_bytes(photo_bytes("astronaut.png"))
    folder = tmp_path / "photos"
    (folder / "copies").mkdir(parents=True)
    (folder / "coffee.jpg").write_bytes(photo_bytes("coffee.png"))  # new
    (folder / "copies" / "coffee.jpg").write_bytes(photo_bytes("coffee.png"))  # the same bytes
    (folder / "link-to-coffee.jpg").symlink_to(folder / "coffee.jpg")  # the same file
    (folder / "rocket.jpg").write_bytes(photo_bytes("rocket.jpg"))  # stored before
    (folder / "cat-again.jpg").write_bytes(encode(photo("chelsea.png"), "JPEG", quality=75))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # the tree again, forever
    (folder / "far").symlink_to(elsewhere, target_is_directory=True)  # out of the tree
    hop = FlakyHop(str(stack.gateway.base_url), {})  # forwards all, notes each upload
    with live_server(hop.app) as hop_url:
        first = upload(stack, folder, url=hop_url)
        assert first.returncode == 1, first.stderr  # broken.jpg is not in
        assert (
            "new 1, already stored 1, duplicates 1, same file 2, rejected 1, failed 0; "
            "settled in an earlier run 0" in first.stdout
        ), first.stdout
        assert {name: len(times) for name, times in hop.arrivals.items()} == {"coffee.jpg": 1}
        assert "not followed" in first.stderr and "loop" in first.stderr and "far" in first.stderr
        settled = resume_records(folder)
        assert {path: record["status"] for path, record in settled.items()} == {
            "broken.jpg": "rejected",
            "cat-again.jpg": "duplicate",
            "link-to-coffee.jpg": "same_file",
            "coffee.jpg": "sent",
            "copies/coffee.jpg": "same_file",
            "rocket.jpg": "stored",
        }
        assert settled["cat-again.jpg"]["detail"] == stored_before["cat"]
        assert settled["rocket.jpg"]["detail"] == stored_before["rocket"]
        assert settled["copies/coffee.jpg"]["detail"] == "coffee.jpg"
        assert stack.image(settled["coffee.jpg"]["detail"])["id"] == settled["coffee.jpg"]["detail"]

        second = upload(stack, folder, url=hop_url)
        assert second.returncode == 0, second.stderr
        assert (
            "new 0, already stored 0, duplicates 0, same file 0, rejected 0, failed 0; "
            "settled in an earlier run 6" in second.stdout
        ), second.stdout
        assert {name: len(times) for name, times in hop.arrivals.items()} == {"coffee.jpg": 1}


def test_an_image_the_gateway_already_has_is_counted_as_stored(
    stack: Stack, tmp_path: Path
) -> None:
    """Stored, but not known to the dedup check yet (its processing had not finished when the
    check was made): the gateway's 200 to the upload says so, and it is not counted as new."""
    data = photo_bytes("coffee.png")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "coffee.jpg").write_bytes(data)
    image_id = stack.upload(data).json()["id"]
    stack.wait_done(image_id)
    to_the_gateway = FlakyHop(str(stack.gateway.base_url), {})
    hop = FastAPI()  # the gateway, but for a dedup check that knows of nothing stored

    @hop.post("/v1/dedup")
    async def nothing_stored_yet() -> dict[str, object]:
        return {"by_embedding": [], "by_phash": [], "is_duplicate": False}

    hop.add_api_route("/{path:path}", to_the_gateway.forward, methods=["GET", "POST"])

    with live_server(hop) as hop_url:
        first = upload(stack, folder, url=hop_url)
    assert first.returncode == 0, first.stderr
    assert "new 0, already stored 1," in first.stdout, first.stdout
    assert resume_records(folder)["coffee.jpg"] == {
        "path": "coffee.jpg",
        "status": "stored",
        "detail": image_id,
    }


def test_the_check_before_sending_is_the_servers_decision(stack: Stack, tmp_path: Path) -> None:
    """Copies that a pHash misses (a flipped crop, a framed copy) are skipped as duplicates, and
    the file the gateway already has is counted as stored: the uploader asks the pipeline's
    decision with a preview of each file, it does not make one of its own."""
    cat = photo("chelsea.png")
    original = encode(cat, "JPEG", quality=95)
    stored = stack.wait_done(stack.upload(original).json()["id"])
    width, height = cat.size
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(original)
    flipped_crop = cat.crop((width // 8, 0, width, height - height // 8)).transpose(
        Image.Transpose.FLIP_LEFT_RIGHT
    )
    (folder / "flipped-crop.jpg").write_bytes(encode(flipped_crop, "JPEG"))
    (folder / "framed.png").write_bytes(encode(ImageOps.expand(cat, 60, fill="white"), "PNG"))
    done = upload(stack, folder)
    assert done.returncode == 0, done.stderr
    assert "new 0, already stored 1, duplicates 2," in done.stdout, done.stdout
    records = resume_records(folder)
    assert records["cat.jpg"]["status"] == "stored"
    assert {records[n]["detail"] for n in ("flipped-crop.jpg", "framed.png")} == {stored["id"]}
