"""The upload pipeline end to end against the embedder alone, in one run.

    .venv/bin/python bench/pipeline.py [--images 600]

(a) the embedder service alone: the same crawl-size JPEGs, one per request, concurrency 8;
(b) the whole system on embedded defaults (gateway with in-process jobs, SQLite, a local folder,
    Qdrant local mode): POST /v1/images for each image, then poll until every one is done.
Each service runs as its own process on 127.0.0.1. Prints images/s and the ratio (b)/(a).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._images import crawl_size_jpegs  # noqa: E402
from bench._service import PIDS, ROOT, cpu_seconds, running_service  # noqa: E402
from services.common.database import create_tables, make_engine  # noqa: E402
from services.gateway.auth import Role, create_key  # noqa: E402
from services.gateway.tables import GATEWAY_TABLES  # noqa: E402

CONCURRENCY = 8


async def embed_all(url: str, images: list[bytes]) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for data in images:
        queue.put_nowait(data)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def worker() -> None:
            while not queue.empty():
                data = queue.get_nowait()
                response = await client.post("/v1/embed", files={"images": ("a.jpg", data)})
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return len(images) / (time.perf_counter() - started)


async def upload_all(url: str, key: str, viewer_key: str, images: list[bytes]) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for data in images:
        queue.put_nowait(data)
    ids: list[str] = []
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as client:

        async def worker() -> None:
            while not queue.empty():
                data = queue.get_nowait()
                response = await client.post("/v1/images", files={"image": ("a.jpg", data)})
                response.raise_for_status()
                ids.append(response.json()["id"])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        viewer = {"Authorization": f"Bearer {viewer_key}"}
        while True:  # one listing request per poll, not one per image
            done = await client.get(
                "/v1/images", params={"status": "done", "limit": 1}, headers=viewer
            )
            if done.json()["total"] >= len(set(ids)):
                break
            failed = await client.get(
                "/v1/images", params={"status": "failed", "limit": 1}, headers=viewer
            )
            if failed.json()["total"]:
                raise RuntimeError(f"uploads failed: {failed.json()['items']}")
            await asyncio.sleep(0.05)
        return len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--images", type=int, default=600)
    args = parser.parse_args()
    images = crawl_size_jpegs(args.images, seed=7)
    with tempfile.TemporaryDirectory() as folder:
        database = f"sqlite:///{folder}/seavl.db"
        engine = make_engine(database)
        create_tables(engine, GATEWAY_TABLES)
        key = create_key(engine, Role.CONTRIBUTOR)
        viewer_key = create_key(engine, Role.VALIDATOR)
        engine.dispose()
        env = {
            "DATABASE_URL": database,
            "SEAVL_DEDUP_QDRANT_PATH": f"{folder}/qdrant",
            "SEAVL_GATEWAY_STORAGE_DIR": f"{folder}/objects",
            "SEAVL_EMBEDDER_MODELS_DIR": str(ROOT / "var" / "models"),
        }
        with running_service("embedder", env) as embedder:
            env["SEAVL_FILTER_EMBEDDER__URL"] = env["SEAVL_GATEWAY_EMBEDDER__URL"] = embedder
            with (
                running_service("filter", env) as filter_url,
                running_service("dedup", env) as dedup,
            ):
                reference = base64.b64encode(images[0]).decode()
                httpx.post(
                    f"{filter_url}/v1/reference-sets",
                    json={"name": "default", "model": "efficientnet-lite0"},
                )
                httpx.post(
                    f"{filter_url}/v1/reference-sets/default/references",
                    json={"references": [{"image": reference}]},
                    timeout=60,
                ).raise_for_status()
                env["SEAVL_GATEWAY_FILTER__URL"], env["SEAVL_GATEWAY_DEDUP__URL"] = (
                    filter_url,
                    dedup,
                )
                with running_service("gateway", env) as gateway:
                    asyncio.run(embed_all(embedder, images[:16]))  # warm-up
                    alone = asyncio.run(embed_all(embedder, images))
                    services = {
                        "embedder": embedder,
                        "filter": filter_url,
                        "dedup": dedup,
                        "gateway": gateway,
                    }
                    before = {n: cpu_seconds(PIDS[u]) for n, u in services.items()}
                    through = asyncio.run(upload_all(gateway, key, viewer_key, images))
                    cpu = {
                        n: (cpu_seconds(PIDS[u]) - before[n]) * 1000 / len(images)
                        for n, u in services.items()
                    }
    print(
        f"{args.images} crawl-size JPEGs, concurrency {CONCURRENCY}, every service its own process"
    )
    print(f"  (a) embedder alone:                 {alone:6.1f} images/s")
    print(
        f"  (b) POST /v1/images until all done: {through:6.1f} images/s  ratio (b)/(a) = "
        f"{through / alone:.2f}"
    )
    print("  CPU per image in (b): " + ", ".join(f"{n} {ms:.1f} ms" for n, ms in cpu.items()))


if __name__ == "__main__":
    main()
