"""Images move between services by key: the bytes are stored once, by the gateway, and every
service that needs them reads them from the same store (issue 10: the pipeline read each image
back from S3 and sent it base64 to the embedder; captions went base64 to the captioner, which
base64'd them again to the embedder)."""

from __future__ import annotations

from pathlib import Path

from services.captioner.app import create_app as create_captioner
from services.captioner.config import CaptionerSettings
from services.common.clients import ServiceClientSettings
from tests.helpers import live_server, photo_bytes, recording, wait_for
from tests.integration.gateway_stack import running_stack


def test_the_pipeline_and_the_captions_send_keys_never_bytes(
    database_url: str, tmp_path: Path, live_embedder: str
) -> None:
    """The privacy pass sends the upload's bytes (nothing is stored before it) and asks for
    their embedding too: an image kept as sent is never embedded again, even by another
    replica, so the pipeline embeds only an image that was blurred, by its key; the captioner
    asks for the labels by key."""
    with recording(live_embedder) as (embedder, embedder_url):
        captioner_settings = CaptionerSettings(embedder=ServiceClientSettings(url=embedder_url))
        with (
            live_server(create_captioner(captioner_settings)) as captioner_target,
            recording(captioner_target) as (captioner, captioner_url),
            running_stack(
                database_url,
                tmp_path,
                embedder_url,
                with_references=False,  # references are images sent by admins, as bytes
                captioner=ServiceClientSettings(url=captioner_url, timeout_seconds=30),
            ) as stack,
        ):
            image_id = stack.upload(photo_bytes("coffee.png"), caption="true").json()["id"]
            face = stack.upload(photo_bytes("astronaut.png")).json()["id"]  # blurred, then stored
            assert stack.wait_done(image_id)["status"] == "done"
            blurred = stack.wait_done(face)
            assert blurred["status"] == "done" and blurred["privacy"]["blurred"] is True
            wait_for(lambda: stack.image(image_id)["captions"][0]["status"] == "done", 60)
            kept_as_sent = stack.image(image_id)
    assert [body.get("embed") for body in embedder.bodies["v1/detect"]] == [True, True]
    # the blurred image's pipeline batch and the offline captioner's labels: keys of the
    # stored images; the coffee's embedding came with its privacy answer
    embedded = [item for body in embedder.bodies["v1/embed"] for item in body["images"]]
    assert sorted(embedded, key=str) == sorted([{"key": face}, {"key": image_id}], key=str)
    assert kept_as_sent["model"] == blurred["model"] == "efficientnet-lite0"
    assert kept_as_sent["phash"] and kept_as_sent["duplicate_of"] is None
    [caption] = captioner.bodies["v1/captions"]
    assert caption["key"] == image_id and "data" not in caption
