"""A slow VLM holds no thread of the gateway: uploads go on while captions wait (issue 10: sync
clients in `asyncio.to_thread` shared the default pool, six threads on two cores, so a few
slow caption calls stalled every upload)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from services.captioner.app import create_app as create_captioner
from services.captioner.config import BackendName, CaptionerSettings, VlmSettings
from services.common.clients import ServiceClientSettings
from services.gateway.auth import Role
from tests.helpers import live_server, photo_bytes
from tests.integration.gateway_stack import running_stack
from tests.stubs.chat_completions import STUB_API_KEY, Reply, StubVlm, create_stub_app

WAITING_CAPTIONS = 12  # twice the default thread pool of a 2-core machine
UPLOAD_SECONDS = 30.0  # far more than an upload takes on a loaded machine, far less than forever


def test_uploads_are_answered_while_captions_wait_on_a_slow_vlm(
    database_url: str, tmp_path: Path, live_embedder: str
) -> None:
    vlm = StubVlm(default=Reply(caption="A slow stub caption."))
    vlm.answering.clear()  # the VLM answers nothing until the upload has been answered
    with live_server(create_stub_app(vlm)) as vlm_url:
        captioner_settings = CaptionerSettings(
            backend=BackendName.OPENAI_COMPATIBLE,
            vlm=VlmSettings(
                base_url=f"{vlm_url}/v1",
                model="stub/qwen2-vl-7b-instruct",
                api_key=STUB_API_KEY,
                timeout_seconds=30,
            ),
        )
        with (
            live_server(create_captioner(captioner_settings)) as captioner_url,
            running_stack(
                database_url,
                tmp_path,
                live_embedder,
                captioner=ServiceClientSettings(url=captioner_url, timeout_seconds=30, attempts=1),
            ) as stack,
        ):
            headers = stack.as_role(Role.CONTRIBUTOR)

            async def uploads_beside_slow_captions() -> tuple[httpx.Response, int, list[int]]:
                """The upload while every caption waits on the VLM (which answers only after
                it): on a gateway whose threads the captions held, it would wait with them."""
                async with httpx.AsyncClient(
                    base_url=str(stack.gateway.base_url), headers=headers, timeout=60
                ) as client:
                    captions = [
                        asyncio.create_task(
                            client.post(
                                "/v1/captions",
                                files={"image": ("cat.jpg", photo_bytes("chelsea.png"))},
                            )
                        )
                        for _ in range(WAITING_CAPTIONS)
                    ]
                    async with asyncio.timeout(UPLOAD_SECONDS):
                        while len(vlm.requests) < WAITING_CAPTIONS:  # every caption waits now
                            await asyncio.sleep(0.05)
                    try:
                        upload = await asyncio.wait_for(
                            client.post(
                                "/v1/images",
                                files={"image": ("coffee.jpg", photo_bytes("coffee.png"))},
                            ),
                            UPLOAD_SECONDS,
                        )
                        answered_before = sum(task.done() for task in captions)
                    finally:
                        vlm.answering.set()
                    answered = await asyncio.gather(*captions)
                return upload, answered_before, [r.status_code for r in answered]

            upload, answered_before, statuses = asyncio.run(uploads_beside_slow_captions())
    assert upload.status_code == 202, upload.text
    assert answered_before == 0  # the upload was answered while every caption still waited
    assert statuses == [200] * WAITING_CAPTIONS
