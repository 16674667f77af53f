"""What the gateway stores and serves carries no location, however a file hides it; files with
malformed EXIF are taken like any other (they once made every image endpoint answer 500)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from services.captioner.app import create_app as create_captioner
from services.captioner.config import CaptionerSettings
from services.common.clients import ServiceClientSettings
from services.common.location import GPS_IFD
from services.common.storage import LocalFolderStore
from services.gateway.auth import Role
from tests.helpers import live_server
from tests.integration.gateway_stack import Stack, running_stack
from tests.location_cases import LEAKS, LOCATION_MARKERS, MALFORMED_EXIF


@pytest.fixture
def stack(live_embedder: str, tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own per test: several cases clean to the same bytes, which one stack
    would take as the same image."""
    with running_stack(f"sqlite:///{tmp_path / 'seavl.db'}", tmp_path, live_embedder) as running:
        yield running


def served(stack: Stack, image_id: str) -> bytes:
    response = stack.gateway.get(
        f"/v1/images/{image_id}/content", headers=stack.as_role(Role.VALIDATOR)
    )
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    return response.content


@pytest.mark.parametrize("case", sorted(LEAKS))
def test_stored_and_served_bytes_hold_no_location(stack: Stack, case: str) -> None:
    upload = stack.upload(LEAKS[case]())
    assert upload.status_code == 202, upload.text
    image_id = upload.json()["id"]
    content = served(stack, image_id)
    stored = LocalFolderStore(stack.settings.storage.dir).get(image_id)
    assert content == stored
    assert not [marker for marker in LOCATION_MARKERS if marker in stored]
    assert not Image.open(io.BytesIO(stored)).getexif().get_ifd(GPS_IFD)
    assert stack.wait_done(image_id)["status"] == "done"


@pytest.mark.parametrize("image_format", sorted(MALFORMED_EXIF))
def test_malformed_exif_is_taken_by_every_image_endpoint(stack: Stack, image_format: str) -> None:
    data = MALFORMED_EXIF[image_format]()
    contributor = stack.as_role(Role.CONTRIBUTOR)
    upload = stack.upload(data)
    assert upload.status_code == 202, upload.text
    assert stack.wait_done(upload.json()["id"])["status"] == "done"
    for path in ("/v1/relevance", "/v1/dedup"):
        answer = stack.gateway.post(path, files={"image": ("a.img", data)}, headers=contributor)
        assert answer.status_code == 200, (path, answer.text)


@pytest.mark.parametrize("image_format", sorted(MALFORMED_EXIF))
def test_malformed_exif_is_captioned(live_embedder: str, tmp_path: Path, image_format: str) -> None:
    settings = CaptionerSettings(
        embedder=ServiceClientSettings(url=live_embedder),
    )
    data = base64.b64encode(MALFORMED_EXIF[image_format]()).decode()
    with live_server(create_captioner(settings)) as url:
        answer = httpx.post(f"{url}/v1/captions", json={"data": data, "language": "en"}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["caption"]
