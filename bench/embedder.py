"""Embedder throughput: the raw in-process pipeline against the service over HTTP, in one run.

    .venv/bin/python bench/embedder.py            (or: make bench)

(a) raw: decode + preprocess + ONNX at its best batch size, in this process;
(b) service: the embedder as a separate process on 127.0.0.1, one image per request, at
concurrency 1 and 16. Prints images/s for each and the ratio (b)/(a); the machine is noisy, so
only ratios measured in the same run mean much.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._images import crawl_size_jpegs, phone_size_jpegs  # noqa: E402
from bench._service import running_service  # noqa: E402
from services.common.images import DEFAULT_DRAFT_SHORT_SIDE, ImageLimits, decode_image  # noqa: E402
from services.embedder.config import EmbedderSettings, RuntimeSettings  # noqa: E402
from services.embedder.models import discover_models  # noqa: E402
from services.embedder.preprocess import to_input_tensor  # noqa: E402
from services.embedder.sessions import LoadedModel  # noqa: E402


def raw_pipeline(images: list[bytes], model: LoadedModel, batch_size: int) -> float:
    """Images/s for decode + preprocess + ONNX, batch by batch, in this process."""
    limits = ImageLimits()
    draft = max(DEFAULT_DRAFT_SHORT_SIDE, model.manifest.resize_target)
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        tensors = [
            to_input_tensor(decode_image(data, limits, draft).pixels, model.manifest)
            for data in images[start : start + batch_size]
        ]
        model.forward(np.stack(tensors))
    return len(images) / (time.perf_counter() - started)


async def service_throughput(url: str, images: list[bytes], concurrency: int) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for data in images:
        queue.put_nowait(data)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                data = queue.get_nowait()
                response = await client.post(
                    "/v1/embed",
                    files={"images": ("image.jpg", data, "image/jpeg")},
                    data={"encoding": "base64"},
                )
                response.raise_for_status()

        await client.get("/readyz")
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--crawl-images", type=int, default=480)
    parser.add_argument("--phone-images", type=int, default=48)
    args = parser.parse_args()

    settings = EmbedderSettings()
    registered = discover_models(settings.models_dir)[settings.default_model]
    model = LoadedModel(registered, RuntimeSettings())
    sets = {
        "crawl-size ~512px": crawl_size_jpegs(args.crawl_images),
        "phone-size 12MP": phone_size_jpegs(args.phone_images),
    }
    with running_service("embedder", {}) as url:
        for label, images in sets.items():
            mean_kb = sum(map(len, images)) / len(images) / 1024
            raw_pipeline(images[:16], model, 16)  # warm-up
            raw_by_batch = {b: raw_pipeline(images, model, b) for b in (1, 8, 16, 32)}
            best_batch = max(raw_by_batch, key=lambda b: raw_by_batch[b])
            raw = raw_by_batch[best_batch]
            print(f"{label} JPEGs: {len(images)} images, mean {mean_kb:.0f} KB")
            print(
                f"  (a) raw pipeline, batch {best_batch}: {raw:7.1f} images/s  "
                f"(by batch: {', '.join(f'{b}: {v:.1f}' for b, v in raw_by_batch.items())})"
            )
            asyncio.run(service_throughput(url, images[:32], 16))  # warm-up
            for concurrency in (1, 16):
                served = asyncio.run(service_throughput(url, images, concurrency))
                print(
                    f"  (b) service, concurrency {concurrency:2d}:  {served:7.1f} images/s  "
                    f"ratio (b)/(a) = {served / raw:.2f}"
                )


if __name__ == "__main__":
    main()
