"""Captions through the gateway: asked at upload or for stored images, run as queued jobs
(in-process and on arq workers), retried while the VLM is down, failures recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.captioner.app import create_app as create_captioner
from services.captioner.config import CaptionerSettings
from services.common.clients import ServiceClientSettings
from services.gateway.auth import Role
from services.gateway.config import PipelineSettings
from services.gateway.worker import WorkerKind
from tests.conftest import POSTGRES_URL, migrated_postgres
from tests.helpers import free_port, live_server, photo_bytes, wait_for
from tests.integration.gateway_stack import Stack, running_stack
from tests.integration.test_captioner_api import vlm_captioner
from tests.integration.test_gateway_distributed import run_worker_until_idle
from tests.integration.test_uploader import upload
from tests.stubs.chat_completions import Reply, StubVlm, create_stub_app
from tests.unit.test_captions import REAL_CAPTIONS

FAST_RETRIES = PipelineSettings(max_tries=3, retry_delay_seconds=0.05, retry_window_seconds=2)


def captioner_client(url: str) -> ServiceClientSettings:
    return ServiceClientSettings(url=url, attempts=1, timeout_seconds=30)


@pytest.fixture
def offline_captioner(live_embedder: str, tmp_path: Path) -> Iterator[str]:
    settings = CaptionerSettings(
        embedder=ServiceClientSettings(url=live_embedder),
    )
    with live_server(create_captioner(settings)) as url:
        yield url


@pytest.fixture
def stack(
    database_url: str, tmp_path: Path, live_embedder: str, offline_captioner: str
) -> Iterator[Stack]:
    with running_stack(
        database_url, tmp_path, live_embedder, captioner=captioner_client(offline_captioner)
    ) as running:
        yield running


@pytest.fixture
def stub_stack(tmp_path: Path, live_embedder: str) -> Iterator[tuple[Stack, StubVlm]]:
    """The gateway with a captioner whose VLM is the STUB chat-completions server."""
    stub = StubVlm()
    with (
        live_server(create_stub_app(stub)) as vlm_url,
        live_server(create_captioner(vlm_captioner(f"{vlm_url}/v1", tmp_path))) as captioner,
        running_stack(
            f"sqlite:///{tmp_path / 'seavl.db'}",
            tmp_path,
            live_embedder,
            captioner=captioner_client(captioner),
            pipeline=FAST_RETRIES,
        ) as running,
    ):
        yield running, stub


def wait_captioned(stack: Stack, image_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    def finished() -> bool:
        captions = stack.image(image_id)["captions"]
        return bool(captions) and all(c["status"] != "queued" for c in captions)

    wait_for(finished, timeout=timeout)
    return list(stack.image(image_id)["captions"])


def test_an_upload_asking_for_a_caption_gets_one_aware_of_its_place(stack: Stack) -> None:
    upload = stack.upload(
        photo_bytes("chelsea.png"), countries="TH", location="Chiang Mai, Thailand", caption="true"
    )
    assert upload.status_code == 202, upload.text
    assert [c["status"] for c in upload.json()["captions"]] == ["queued"]
    image_id = upload.json()["id"]
    [caption] = wait_captioned(stack, image_id)
    image = stack.image(image_id)
    assert image["status"] == "done" and image["tier"] is not None  # processed first
    assert caption["status"] == "done", caption
    assert caption["backend"] == "offline-labels" and caption["prompt_kind"] == "aware"
    assert caption["location"] == "Chiang Mai, Thailand"
    assert "Chiang Mai, Thailand" in caption["caption"] and "cat" in caption["caption"]
    assert caption["language"] == "en" and caption["language_ok"] is True


def test_captions_for_many_stored_images_in_one_language(stack: Stack) -> None:
    ids = [
        stack.upload(photo_bytes(name), countries="VN").json()["id"]
        for name in ("coffee.png", "rocket.jpg")
    ]
    for image_id in ids:
        assert stack.wait_done(image_id)["captions"] == []
    unknown = "f" * 64
    curator = stack.as_role(Role.VALIDATOR)
    asked = stack.gateway.post(
        "/v1/images/captions",
        json={"image_ids": [*ids, unknown], "language": "vi"},
        headers=curator,
    )
    assert asked.status_code == 202, asked.text
    assert asked.json() == {
        "language": "vi",
        "queued": ids,
        "already_done": [],
        "unknown": [unknown],
    }
    for image_id in ids:
        [caption] = wait_captioned(stack, image_id)
        assert caption["status"] == "done" and caption["language"] == "vi"
        assert "Việt Nam" in caption["caption"] and caption["detected_language"] == "vi"
    again = stack.gateway.post(
        "/v1/images/captions", json={"image_ids": ids, "language": "vie"}, headers=curator
    ).json()
    assert again["queued"] == [] and again["already_done"] == ids
    redo = stack.gateway.post(
        "/v1/images/captions",
        json={"image_ids": ids[:1], "language": "vi", "redo": True, "location_aware": False},
        headers=curator,
    ).json()
    assert redo["queued"] == ids[:1]
    [caption] = wait_captioned(stack, ids[0])
    assert caption["prompt_kind"] == "agnostic" and "Việt Nam" not in caption["caption"]


def test_caption_requests_that_cannot_be_met_are_refused(stack: Stack) -> None:
    curator = stack.as_role(Role.VALIDATOR)
    unsupported = stack.gateway.post(
        "/v1/images/captions", json={"image_ids": ["a" * 64], "language": "km"}, headers=curator
    )
    assert unsupported.status_code == 422
    assert unsupported.json()["error"]["code"] == "unsupported_language"
    assert "en, th, ms, tl, id, vi" in unsupported.json()["error"]["message"]
    contributor = stack.gateway.post(
        "/v1/images/captions",
        json={"image_ids": ["a" * 64]},
        headers=stack.as_role(Role.CONTRIBUTOR),
    )
    assert contributor.status_code == 403
    upload = stack.upload(photo_bytes("coffee.png"), caption_language="km")
    assert upload.status_code == 422
    assert upload.json()["error"]["code"] == "unsupported_language"
    listing = stack.gateway.get("/v1/images", headers=stack.as_role(Role.VALIDATOR)).json()
    assert listing["total"] == 0  # nothing recorded


def test_without_a_captioner_uploads_asking_for_captions_are_refused(
    tmp_path: Path, live_embedder: str
) -> None:
    with running_stack(
        f"sqlite:///{tmp_path / 'seavl.db'}", tmp_path, live_embedder, captioner=None
    ) as stack:
        refused = stack.upload(photo_bytes("coffee.png"), caption="true")
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "captions_unavailable"
        assert caption_now(stack, photo_bytes("coffee.png")).status_code == 422
        assert stack.upload(photo_bytes("coffee.png")).status_code == 202


def test_a_vlm_that_is_down_is_retried_and_a_bad_answer_recorded(
    stub_stack: tuple[Stack, StubVlm],
) -> None:
    stack, stub = stub_stack
    stub.queue(Reply(status=503), Reply(status=503), Reply(caption=REAL_CAPTIONS["th"]))
    first = stack.upload(photo_bytes("coffee.png"), countries="TH", caption_language="tha")
    [caption] = wait_captioned(stack, first.json()["id"])
    assert caption["status"] == "done" and caption["attempts"] == 1  # a VLM down: not counted
    assert caption["backend"] == "openai-compatible" and caption["language_ok"] is True
    assert caption["caption"] == REAL_CAPTIONS["th"]
    assert stub.requests[-1].messages[0].content[0].text.startswith("นี่คือภาพจากประเทศไทย")

    stub.queue(Reply(raw_body='{"choices": [{"message": {}}]}'))
    second = stack.upload(photo_bytes("rocket.jpg"), caption="true")
    [broken] = wait_captioned(stack, second.json()["id"])
    assert broken["status"] == "failed" and broken["attempts"] == 1
    assert broken["error"].startswith("bad_vlm_answer:")
    assert stack.image(second.json()["id"])["status"] == "done"  # the image is unaffected

    stub.default = Reply(status=503)  # down for longer than the retry window
    third = stack.upload(photo_bytes("chelsea.png"), caption="true")
    [given_up] = wait_captioned(stack, third.json()["id"])
    assert given_up["status"] == "failed"
    assert given_up["error"].startswith("gave up after retrying for 2 s")
    stub.default = Reply(caption="A stub caption.")
    # a failed caption can be asked again
    again = stack.gateway.post(
        "/v1/images/captions",
        json={"image_ids": [third.json()["id"]]},
        headers=stack.as_role(Role.VALIDATOR),
    )
    assert again.json()["queued"] == [third.json()["id"]]
    [redone] = wait_captioned(stack, third.json()["id"])
    assert redone["status"] == "done" and redone["caption"] == "A stub caption."


def test_captions_on_arq_workers(redis_url: str, tmp_path: Path, live_embedder: str) -> None:
    migrated_postgres()
    stub = StubVlm()
    stub.queue(Reply(status=503), Reply(caption=REAL_CAPTIONS["vi"]))
    pipeline = PipelineSettings(max_tries=3, retry_delay_seconds=0, retry_window_seconds=1)
    with (
        live_server(create_stub_app(stub)) as vlm_url,
        live_server(create_captioner(vlm_captioner(f"{vlm_url}/v1", tmp_path))) as captioner,
        running_stack(
            POSTGRES_URL,
            tmp_path,
            live_embedder,
            redis_url=redis_url,
            captioner=captioner_client(captioner),
            pipeline=pipeline,
        ) as stack,
    ):
        image_id = stack.upload(
            photo_bytes("coffee.png"), countries="VN", caption_language="vi"
        ).json()["id"]
        run_worker_until_idle(stack)  # processes the image, then queues its caption
        assert stack.image(image_id)["status"] == "done"
        assert stack.image(image_id)["captions"][0]["status"] == "queued"  # not on this queue
        run_worker_until_idle(stack, WorkerKind.CAPTIONS)  # the caption, retried once
        [caption] = stack.image(image_id)["captions"]
        assert caption["status"] == "done" and caption["attempts"] == 1
        assert caption["language"] == "vi" and caption["detected_language"] == "vi"
        stack.settings.captioner = captioner_client(f"http://127.0.0.1:{free_port()}")
        asked = stack.gateway.post(
            "/v1/images/captions",
            json={"image_ids": [image_id], "language": "en"},
            headers=stack.as_role(Role.VALIDATOR),
        )
        assert asked.json()["queued"] == [image_id]
        run_worker_until_idle(stack, WorkerKind.CAPTIONS)  # its captioner is unreachable: recorded
        english = next(c for c in stack.image(image_id)["captions"] if c["language"] == "en")
        assert (
            english["status"] == "failed" and "gave up after retrying for 1 s" in english["error"]
        )
        assert httpx.get(f"{captioner}/readyz").status_code == 200


def caption_now(stack: Stack, data: bytes, **fields: str) -> httpx.Response:
    return stack.gateway.post(
        "/v1/captions",
        files={"image": ("photo.jpg", data)},
        data=fields,
        headers=stack.as_role(Role.CONTRIBUTOR),
    )


def test_a_caption_now_through_the_gateway(stack: Stack) -> None:
    thai = caption_now(stack, photo_bytes("chelsea.png"), language="tha", countries="TH")
    assert thai.status_code == 200, thai.text
    body = thai.json()
    assert body["language_requested"] == "th" and body["language_ok"] is True
    assert body["prompt_kind"] == "aware" and body["location"] == "ประเทศไทย"
    agnostic = caption_now(stack, photo_bytes("coffee.png"), location_aware="false")
    assert agnostic.json()["prompt_kind"] == "agnostic"
    for fields, code in (
        ({"language": "km"}, "unsupported_language"),
        ({"language": "en", "colour": "red"}, "invalid_request"),
        ({"countries": "XX"}, "invalid_request"),
        ({"location_aware": "true"}, "location_needed"),
    ):
        refused = caption_now(stack, photo_bytes("coffee.png"), **fields)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == code
    assert caption_now(stack, b"not an image").status_code == 415
    listing = stack.gateway.get("/v1/images", headers=stack.as_role(Role.VALIDATOR)).json()
    assert listing["total"] == 0  # nothing is stored


def test_a_caption_now_says_when_the_vlm_fails(stub_stack: tuple[Stack, StubVlm]) -> None:
    stack, stub = stub_stack
    stub.queue(Reply(status=503), Reply(raw_body="not json"))
    down = caption_now(stack, photo_bytes("coffee.png"))
    assert down.status_code == 503 and int(down.headers["retry-after"]) > 0
    assert down.json()["error"]["code"] == "unavailable"
    broken = caption_now(stack, photo_bytes("coffee.png"))
    assert broken.status_code == 502 and broken.json()["error"]["code"] == "bad_vlm_answer"
    fine = caption_now(stack, photo_bytes("coffee.png"))
    assert fine.status_code == 200 and fine.json()["caption"] == "A stub caption."


def test_the_bulk_uploader_can_ask_for_captions(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "coffee.jpg").write_bytes(photo_bytes("coffee.png"))
    done = upload(stack, folder, "--caption-language", "vi")
    assert done.returncode == 0, done.stderr
    image_id = json.loads((folder / ".seavl-upload.jsonl").read_text().splitlines()[0])["detail"]
    [caption] = wait_captioned(stack, image_id)
    assert caption["language"] == "vi" and caption["status"] == "done"
    assert "Thái Lan" in caption["caption"]  # the uploader's --countries TH
    refused = upload(
        stack,
        tmp_path / "photos",
        "--caption-language",
        "km",
        "--resume-file",
        str(tmp_path / "r.jsonl"),
    )
    assert refused.returncode != 0 and "supported: en, th, ms, tl, id, vi" in refused.stderr


def test_in_process_captions_left_queued_start_again_on_restart(
    tmp_path: Path, live_embedder: str, offline_captioner: str
) -> None:
    database = f"sqlite:///{tmp_path / 'seavl.db'}"
    patient = PipelineSettings(max_tries=5, retry_delay_seconds=30)  # still waiting at the stop
    down = captioner_client(f"http://127.0.0.1:{free_port()}")
    with running_stack(
        database, tmp_path, live_embedder, captioner=down, pipeline=patient
    ) as first:
        image_id = first.upload(photo_bytes("coffee.png"), caption="true").json()["id"]
        first.wait_done(image_id)
        wait_for(lambda: first.image(image_id)["captions"][0]["error"] is not None)
        assert first.image(image_id)["captions"][0]["status"] == "queued"  # retrying
    with running_stack(
        database, tmp_path, live_embedder, captioner=captioner_client(offline_captioner)
    ) as second:
        [caption] = wait_captioned(second, image_id)
        assert caption["status"] == "done" and caption["backend"] == "offline-labels"
