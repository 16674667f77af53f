"""Embedder throughput: the raw in-process pipeline against the service over HTTP, in one run.

    .venv/bin/python bench/embedder.py            (or: make bench)

(a) raw: the best in-process pipeline with the service's own threads: decoding + preprocessing
    on `decode_threads` threads (as many as the service decodes with), running ahead of ONNX
    inference on another thread, at its best batch size;
(b) service: the embedder as a separate process on 127.0.0.1, one image per request, at
    concurrency 1 and 16.
Everything is warmed up, then measured `--repeats` times: prints the median images/s with the
spread (min-max) and the ratio of medians (b)/(a). The machine is noisy, so only ratios measured
in the same run mean much.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._images import crawl_size_jpegs, phone_size_jpegs  # noqa: E402
from bench._service import running_service  # noqa: E402
from services.common.images import DEFAULT_DRAFT_SHORT_SIDE, ImageLimits, decode_image  # noqa: E402
from services.embedder.config import EmbedderSettings  # noqa: E402
from services.embedder.models import discover_models  # noqa: E402
from services.embedder.preprocess import to_input_tensor  # noqa: E402
from services.embedder.sessions import LoadedModel  # noqa: E402


def raw_pipeline(
    images: list[bytes], model: LoadedModel, batch_size: int, decode_threads: int
) -> float:
    """Images/s for decode + preprocess (on `decode_threads` threads, up to two batches ahead)
    and ONNX (on this thread), in this process."""
    limits = ImageLimits()
    draft = max(DEFAULT_DRAFT_SHORT_SIDE, model.manifest.resize_target)

    def prepare(data: bytes) -> np.ndarray:
        return to_input_tensor(decode_image(data, limits, draft).pixels, model.manifest)

    started = time.perf_counter()
    with ThreadPoolExecutor(decode_threads) as decoders:
        ahead = 2 * batch_size
        pending: list[Future[np.ndarray]] = [decoders.submit(prepare, d) for d in images[:ahead]]
        submitted = len(pending)
        while pending:
            batch, pending = pending[:batch_size], pending[batch_size:]
            tensors = [future.result() for future in batch]
            for data in images[submitted : submitted + len(batch)]:
                pending.append(decoders.submit(prepare, data))
            submitted += len(batch)
            model.forward(np.stack(tensors))
    return len(images) / (time.perf_counter() - started)


def served_rate(url: str, images: list[bytes], concurrency: int) -> float:
    return asyncio.run(service_throughput(url, images, concurrency))


def repeated(measure: Callable[[], float], repeats: int) -> list[float]:
    return [measure() for _ in range(repeats)]


def summary(rates: list[float]) -> str:
    return f"{statistics.median(rates):7.1f} images/s (min {min(rates):.1f}, max {max(rates):.1f})"


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
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    settings = EmbedderSettings()
    registered = discover_models(settings.models_dir)[settings.default_model]
    model = LoadedModel(registered, settings.runtime)
    threads = settings.runtime.decode_threads
    sets = {
        "crawl-size ~512px": crawl_size_jpegs(args.crawl_images),
        "phone-size 12MP": phone_size_jpegs(args.phone_images),
    }
    print(f"median of {args.repeats} after a warm-up; {threads} decode threads in (a) and (b)")
    with running_service("embedder", {}) as url:
        for label, images in sets.items():
            mean_kb = sum(map(len, images)) / len(images) / 1024
            raw_pipeline(images[:16], model, 16, threads)  # warm-up
            raw_by_batch = {
                b: repeated(partial(raw_pipeline, images, model, b, threads), args.repeats)
                for b in (1, 8, 16, 32)
            }
            best_batch = max(raw_by_batch, key=lambda b: statistics.median(raw_by_batch[b]))
            raw = statistics.median(raw_by_batch[best_batch])
            by_batch = ", ".join(
                f"{b}: {statistics.median(v):.1f}" for b, v in raw_by_batch.items()
            )
            print(f"{label} JPEGs: {len(images)} images, mean {mean_kb:.0f} KB")
            print(
                f"  (a) raw pipeline, batch {best_batch:2d}: {summary(raw_by_batch[best_batch])}"
                f"  (median by batch: {by_batch})"
            )
            asyncio.run(service_throughput(url, images[:32], 16))  # warm-up
            for concurrency in (1, 16):
                served = repeated(partial(served_rate, url, images, concurrency), args.repeats)
                print(
                    f"  (b) service, concurrency {concurrency:2d}: {summary(served)}  "
                    f"ratio (b)/(a) = {statistics.median(served) / raw:.2f}"
                )


if __name__ == "__main__":
    main()
