"""The embedder as a separate process: what a client and an operator see."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.e2e.conftest import RunningService
from tests.helpers import encode, noise_image, photo_bytes


def test_a_client_embeds_an_image_and_reads_metrics(embedder_process: RunningService) -> None:
    with httpx.Client(base_url=embedder_process.url, timeout=60) as client:
        data = photo_bytes("chelsea.png")
        response = client.post("/v1/embed", files={"images": ("cat.jpg", data, "image/jpeg")})
        assert response.status_code == 200
        assert response.json()["results"][0]["sha256"] == hashlib.sha256(data).hexdigest()
        refused = client.post("/v1/embed", files={"images": ("x.txt", b"plain text")})
        assert (refused.status_code, refused.json()["error"]["code"]) == (
            415,
            "unsupported_image_type",
        )
        metrics = client.get("/metrics").text
        assert 'seavl_embedder_images_total{model="efficientnet-lite0",outcome="ok"} 1.0' in metrics
        assert (
            'seavl_http_requests_total{method="POST",route="/v1/embed",service="embedder",'
            'status="415"} 1.0' in metrics
        )
        assert "seavl_embedder_queue_depth 0.0" in metrics
        assert "process_resident_memory_bytes " in metrics  # the embedder's own process


def test_32_concurrent_10mb_uploads_keep_memory_bounded(embedder_process: RunningService) -> None:
    """Uploads are spooled, and only the decode pool's few images are held decoded at once."""
    big = encode(noise_image((1810, 1810), seed=7), "PNG")  # random pixels do not compress
    assert 9_500_000 < len(big) <= 10 * 1024 * 1024
    with httpx.Client(base_url=embedder_process.url, timeout=120) as client:
        client.post("/v1/embed", files={"images": ("warm.png", big)}).raise_for_status()
        before = embedder_process.peak_rss_bytes()
        with ThreadPoolExecutor(32) as threads:
            responses = list(
                threads.map(
                    lambda _: client.post("/v1/embed", files={"images": ("big.png", big)}),
                    range(32),
                )
            )
        after = embedder_process.peak_rss_bytes()
    assert [r.status_code for r in responses] == [200] * 32
    growth = after - before
    # 32 uploads held in memory would be 320 MB of bytes plus 32 decoded images; we allow
    # a fraction of that.
    assert growth < 200 * 1024 * 1024, f"peak RSS grew by {growth / 2**20:.0f} MB"
