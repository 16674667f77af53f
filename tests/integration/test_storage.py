"""The object store on a real S3-protocol server (moto) and on a local folder: missing objects,
a server that is down or hidden behind a failing proxy, and the embedder reading keys from it."""

from __future__ import annotations

import base64
import errno
import hashlib
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Response
from moto.server import ThreadedMotoServer

from services.common.errors import UnavailableError
from services.common.storage import (
    LocalFolderStore,
    ObjectNotFoundError,
    ObjectStore,
    S3Settings,
    S3Store,
    StorageSettings,
    make_store,
)
from services.embedder.app import create_app as create_embedder
from services.embedder.config import EmbedderSettings
from tests import helpers
from tests.helpers import free_port, live_server, photo_bytes

SettingsFactory = Callable[..., EmbedderSettings]
PHOTO = photo_bytes("rocket.jpg")
PHOTO_KEY = hashlib.sha256(PHOTO).hexdigest()
MISSING_KEY = "0" * 64
ROOT = Path(__file__).resolve().parents[2]


def s3_settings(endpoint: str) -> S3Settings:
    return helpers.s3_settings(endpoint, timeout_seconds=2)


@pytest.fixture(params=["folder", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[S3Settings | None, Path]:
    """Where a service keeps objects, as its settings say: S3 when configured, else a folder."""
    if request.param == "s3":
        return s3_settings(request.getfixturevalue("s3_endpoint")), tmp_path / "objects"
    return None, tmp_path / "objects"


@contextmanager
def moto_server(port: int) -> Iterator[None]:
    """An S3 server on `port`. Stopped, it refuses connections; what it stored stays in this
    process, as MinIO keeps its disk, for the next server on the port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield
    finally:
        server.stop()


def embed_request(*images: dict[str, str]) -> dict[str, object]:
    return {"images": list(images)}


def inline(data: bytes) -> dict[str, str]:
    return {"data": base64.b64encode(data).decode()}


def test_a_missing_object_is_object_not_found(where: tuple[S3Settings | None, Path]) -> None:
    store = make_store(*where)
    assert not store.exists(PHOTO_KEY)
    with pytest.raises(ObjectNotFoundError) as raised:
        store.get(PHOTO_KEY)
    assert (raised.value.status_code, raised.value.code) == (404, "object_not_found")
    store.put(PHOTO_KEY, PHOTO)
    store.put(PHOTO_KEY, PHOTO)  # the same bytes again: nothing changes
    assert store.exists(PHOTO_KEY) and store.get(PHOTO_KEY) == PHOTO


def test_a_folder_write_that_fails_leaves_no_file_behind(tmp_path: Path) -> None:
    """A disk that fills up half-way through a write (here: a file-size limit, in a process of
    its own) leaves neither the object nor a piece of it; the next put writes it whole."""
    script = textwrap.dedent(
        f"""
        import resource, signal
        from pathlib import Path
        from services.common.storage import LocalFolderStore
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        try:
            LocalFolderStore(Path({str(tmp_path / "objects")!r})).put({PHOTO_KEY!r}, {PHOTO!r})
        except OSError as exc:
            print(exc.errno)
        """
    )
    failed = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert failed.stdout.strip() == str(errno.EFBIG), failed.stderr
    assert [p for p in (tmp_path / "objects").rglob("*") if p.is_file()] == []
    store = LocalFolderStore(tmp_path / "objects")
    assert not store.exists(PHOTO_KEY)
    store.put(PHOTO_KEY, PHOTO)
    assert store.get(PHOTO_KEY) == PHOTO


def test_writers_of_the_same_object_at_once_all_succeed(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "objects")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: store.put(PHOTO_KEY, PHOTO), range(32)))
    assert store.get(PHOTO_KEY) == PHOTO
    assert [p.name for p in (tmp_path / "objects").rglob("*") if p.is_file()] == [PHOTO_KEY]


def test_the_bucket_is_made_when_the_first_object_is_put(s3_endpoint: str) -> None:
    settings = s3_settings(s3_endpoint)
    writer = S3Store(settings)
    assert writer.count() == 0  # no bucket yet
    writer.put(PHOTO_KEY, PHOTO)
    reader = S3Store(settings)  # another service on the same bucket
    assert reader.get(PHOTO_KEY) == PHOTO
    reader.put(PHOTO_KEY, PHOTO)  # the bucket exists already: fine
    other = hashlib.sha256(b"other").hexdigest()
    reader.put(other, b"other")
    assert writer.get(other) == b"other" and writer.count() == 2


def assert_unavailable(store: ObjectStore) -> None:
    """Every operation is a 503 with Retry-After, so the caller's work is retried later."""
    operations: dict[str, Callable[[], object]] = {
        "get": lambda: store.get(PHOTO_KEY),
        "put": lambda: store.put(PHOTO_KEY, PHOTO),
        "exists": lambda: store.exists(PHOTO_KEY),
    }
    for name, operation in operations.items():
        with pytest.raises(UnavailableError) as raised:
            operation()
        error = raised.value
        outcome = (error.status_code, error.code, error.retry_after_seconds)
        assert outcome == (503, "unavailable", 5), name


def test_s3_refusing_connections_is_unavailable(tmp_path: Path) -> None:
    assert_unavailable(make_store(s3_settings(f"127.0.0.1:{free_port()}"), tmp_path))


def test_s3_behind_a_failing_proxy_is_unavailable(tmp_path: Path) -> None:
    """A load balancer in front of MinIO answers with its own HTML page while MinIO is away."""
    proxy = FastAPI()

    @proxy.api_route("/{path:path}", methods=["GET", "HEAD", "PUT", "POST", "DELETE"])
    async def bad_gateway() -> Response:
        page = b"<html><head><title>502 Bad Gateway</title></head></html>"
        return Response(page, status_code=502, media_type="text/html")

    with live_server(proxy) as url:
        assert_unavailable(make_store(s3_settings(url.removeprefix("http://")), tmp_path))


def test_the_embedder_embeds_keys_from_its_store(
    where: tuple[S3Settings | None, Path], embedder_settings: SettingsFactory
) -> None:
    s3, folder = where
    make_store(s3, folder).put(PHOTO_KEY, PHOTO)
    settings = embedder_settings(storage=StorageSettings(s3=s3, dir=folder))
    with (
        live_server(create_embedder(settings)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        by_key = client.post("/v1/embed", json=embed_request({"key": PHOTO_KEY}))
        assert by_key.status_code == 200, by_key.text
        by_data = client.post("/v1/embed", json=embed_request(inline(PHOTO)))
        from_key, from_data = by_key.json()["results"][0], by_data.json()["results"][0]
        assert from_key["sha256"] == PHOTO_KEY
        np.testing.assert_allclose(from_key["embedding"], from_data["embedding"], atol=1e-6)
        missing = client.post("/v1/embed", json=embed_request({"key": MISSING_KEY}))
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "object_not_found")


def test_an_embedder_whose_s3_is_down_answers_503_until_it_is_back(
    embedder_settings: SettingsFactory, tmp_path: Path
) -> None:
    port = free_port()
    s3 = s3_settings(f"127.0.0.1:{port}")
    with moto_server(port):
        make_store(s3, tmp_path).put(PHOTO_KEY, PHOTO)
    requests = [
        embed_request({"key": PHOTO_KEY}),
        embed_request({"key": PHOTO_KEY}, inline(photo_bytes("coffee.png"))),
    ]
    with (
        live_server(create_embedder(embedder_settings(storage=StorageSettings(s3=s3)))) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        for body in requests:
            down = client.post("/v1/embed", json=body)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "unavailable"
            assert int(down.headers["retry-after"]) > 0
        with moto_server(port):
            for body in requests:  # the caller's retry, once S3 is back: nothing was lost
                back = client.post("/v1/embed", json=body)
                assert back.status_code == 200, back.text
                assert back.json()["results"][0]["sha256"] == PHOTO_KEY
