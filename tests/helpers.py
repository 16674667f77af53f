"""Small real inputs built in code: image files of every kind, and live servers on 127.0.0.1."""

from __future__ import annotations

import io
import socket
import struct
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import skimage
import uvicorn
from fastapi import FastAPI, Request, Response
from PIL import Image
from pydantic import SecretStr

from services.common.location import GPS_IFD
from services.common.storage import S3Settings
from services.databases import upgrade_all

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"


def photo(name: str) -> Image.Image:
    """A real photograph shipped by scikit-image (chelsea.png, coffee.png, rocket.jpg, ...)."""
    return Image.open(SKIMAGE_DATA / name).convert("RGB")


# The astronaut's face in scikit-image's astronaut.png (512 x 512), drawn by hand: hairline to
# chin, ear to ear (x0, y0, x1, y1).
ASTRONAUT_FACE = (180, 55, 276, 180)


def sample_photo(name: str) -> Image.Image:
    """One of scikit-learn's two sample photographs (china.jpg, flower.jpg): real photos that
    the tests of dedup's pixel check share with bench/dedup_quality.py's set."""
    data = resources.files("sklearn.datasets.images").joinpath(name).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def encode(image: Image.Image, image_format: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    return encode(image, "JPEG", quality=quality)


def photo_bytes(name: str, image_format: str = "JPEG") -> bytes:
    return encode(photo(name), image_format)


def photo_with_gps(name: str) -> bytes:
    """A real photograph as a JPEG whose EXIF says where it was taken (Bangkok)."""
    exif = Image.Exif()
    exif[GPS_IFD] = {1: "N", 2: (13.0, 45.0, 0.0), 3: "E", 4: (100.0, 30.0, 0.0)}
    return encode(photo(name), "JPEG", exif=exif)


def has_gps(data: bytes) -> bool:
    return GPS_IFD in Image.open(io.BytesIO(data)).getexif()


def solid(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.new("RGB", size, color)


def noise_image(size: tuple[int, int], seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header claims any size (zero, or billions of pixels), with one empty IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def migrated_sqlite(path: Path) -> str:
    """A SQLite database at `path` with every service's tables migrated, as after `seavl db
    upgrade` (services no longer make tables themselves)."""
    url = f"sqlite:///{path}"
    upgrade_all(url)
    return url


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def live_server(app: FastAPI, startup_timeout: float = 60.0) -> Iterator[str]:
    """Serves `app` with uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server stopped during start-up")
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not come true in time")
        time.sleep(interval)


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Until `url`/readyz answers 200; fails early if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the process exited with {process.returncode} during start-up")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} was not ready within {timeout} s")
        time.sleep(0.2)


async def forward(target: str, path: str, request: Request) -> Response:
    """`request` passed on to `target` (a fake peer standing in front of a real one)."""
    async with httpx.AsyncClient(base_url=target, timeout=60) as client:
        forwarded = await client.request(
            request.method,
            f"/{path}",
            content=await request.body(),
            headers={"content-type": request.headers.get("content-type", "")},
        )
    return Response(
        forwarded.content,
        status_code=forwarded.status_code,
        media_type=forwarded.headers.get("content-type"),
    )


@dataclass
class RecordingPeer:
    """In front of a real service: passes every call on, keeping each JSON body it saw."""

    target: str
    bodies: dict[str, list[Any]] = field(default_factory=dict)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def answer(path: str, request: Request) -> Response:
            if request.headers.get("content-type", "").startswith("application/json"):
                self.bodies.setdefault(path, []).append(orjson.loads(await request.body()))
            return await forward(self.target, path, request)

        return app


@contextmanager
def recording(target: str) -> Iterator[tuple[RecordingPeer, str]]:
    """A `RecordingPeer` of `target` served, with its URL."""
    peer = RecordingPeer(target)
    with live_server(peer.app()) as url:
        yield peer, url


def s3_settings(endpoint: str, **overrides: object) -> S3Settings:
    """A bucket of its own (that does not exist yet) on the S3-protocol server at `endpoint`."""
    fields: dict[str, object] = {
        "endpoint": endpoint,
        "access_key": "seavl",
        "secret_key": SecretStr("seavl-secret"),
        "bucket": f"seavl-{uuid.uuid4().hex[:8]}",
        "region": "us-east-1",
        **overrides,
    }
    return S3Settings.model_validate(fields)


@contextmanager
def sigkilled_after(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """SIGKILLs `process` when the block ends (as a crash would), and reaps it."""
    try:
        yield
    finally:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def serving(handler: Callable[..., BaseHTTPRequestHandler]) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def quiet_files_handler(folder: Path) -> Callable[..., BaseHTTPRequestHandler]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return partial(Quiet, directory=str(folder))
