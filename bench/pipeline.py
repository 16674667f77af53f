"""The upload pipeline end to end against the embedder alone, in one run.

    .venv/bin/python bench/pipeline.py [--images 600] [--rounds 5]

(a) the embedder service alone (a process of its own, so that (b)'s embedder has not seen the
    images): the images, one per multipart request, concurrency 8, vectors answered in base64
    as the pipeline asks for them;
(b) the whole system on embedded defaults (gateway with in-process jobs, SQLite, a local folder,
    Qdrant local mode, the privacy pass on): POST /v1/images for each image, the same way, then
    poll until every one is done. (b) ends when the last of its records was done, as that
    record's `updated_at` says: the poll that notices comes up to POLL_SECONDS later, a delay
    of the client's, not of the pipeline's (a round of 600 images takes ~7 s). `--privacy off`
    switches the pass off in (b) (`SEAVL_GATEWAY_PRIVACY__DETECT=false`): (a) and (b) then ask
    the same model work of the embedder, and the ratio is what the rest of the pipeline costs.
    `--pixel-check off` also switches off dedup's pixel check of near candidates
    (`SEAVL_DEDUP_VERIFICATION__ENABLED=false`): with both off, (b) does the work the pipeline
    did before either was added.
The images are distinct scenes (bench/_images.py), so nearly all of them take dedup's write path;
the share the pipeline found unique is printed. Both (a) and (b) are warmed up first on other
images. Each service runs as its own process on 127.0.0.1. (a) and (b) alternate for
`--rounds` rounds, each round on new images, so a slow spell of a shared machine hits both sides
of a round's ratio; prints each round's images/s and (b)/(a), and the median ratio (single
rounds of the same code spread over ±0.05 on a shared 2-core machine, hence 5 by default).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._images import crawl_size_jpegs  # noqa: E402
from bench._service import (  # noqa: E402
    PIDS,
    cpu_seconds,
    running_embedder_alone,
    running_system,
)
from services.common.database import make_engine  # noqa: E402
from services.databases import upgrade_all  # noqa: E402
from services.gateway.auth import Role, create_key  # noqa: E402

CONCURRENCY = 8
WARM_UP_IMAGES = 16
PRIVACY = {"on": {}, "off": {"SEAVL_GATEWAY_PRIVACY__DETECT": "false"}}
PIXEL_CHECK = {"on": {}, "off": {"SEAVL_DEDUP_VERIFICATION__ENABLED": "false"}}
POLL_SECONDS = 0.2  # how often (b) asks whether all are done: a light client, not a load


async def post_each(
    client: httpx.AsyncClient,
    path: str,
    field: str,
    images: list[bytes],
    form: dict[str, str] | None = None,
) -> list[httpx.Response]:
    """Every image in its own multipart request (a JPEG named by its index), CONCURRENCY at a
    time: how (a) and (b) both send."""
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for index, data in enumerate(images):
        queue.put_nowait((index, data))
    answers: list[httpx.Response] = []

    async def sender() -> None:
        while not queue.empty():
            index, data = queue.get_nowait()
            response = await client.post(
                path, files={field: (f"{index}.jpg", data, "image/jpeg")}, data=form
            )
            response.raise_for_status()
            answers.append(response)

    await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
    return answers


async def embed_all(url: str, images: list[bytes]) -> float:
    """(a): images/s of the embedder alone."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        started = time.perf_counter()
        await post_each(client, "/v1/embed", "images", images, {"encoding": "base64"})
        return len(images) / (time.perf_counter() - started)


async def count_images(client: httpx.AsyncClient, **filters: str) -> int:
    response = await client.get("/v1/images", params={**filters, "limit": 1})
    response.raise_for_status()
    return int(response.json()["total"])


async def upload_all(
    url: str, key: str, viewer_key: str, images: list[bytes], already_done: int
) -> tuple[datetime, set[str]]:
    """(b): uploads each image and waits until every record is done (`already_done` records
    were there before); when it began, and the records' ids."""
    headers = {"Authorization": f"Bearer {key}"}
    viewer = {"Authorization": f"Bearer {viewer_key}"}
    async with (
        httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as client,
        httpx.AsyncClient(base_url=url, timeout=120, headers=viewer) as reader,
    ):
        started = datetime.now(UTC)
        answers = await post_each(client, "/v1/images", "image", images)
        ids = {answer.json()["id"] for answer in answers}
        while await count_images(reader, status="done") < already_done + len(ids):  # two light
            if await count_images(reader, status="failed"):  # requests per poll
                raise RuntimeError("uploads failed: see GET /v1/images?status=failed")
            await asyncio.sleep(POLL_SECONDS)
        return started, ids


async def last_done(url: str, viewer_key: str, ids: set[str]) -> datetime:
    """When the last of these records was done (its last write), read once all are (after the
    CPU is counted: listing every record costs the gateway more than the polls did)."""
    viewer = {"Authorization": f"Bearer {viewer_key}"}
    times: list[datetime] = []
    listed = 0
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=viewer) as reader:
        while len(times) < len(ids):
            response = await reader.get(
                "/v1/images", params={"status": "done", "limit": 100, "offset": listed}
            )
            response.raise_for_status()
            page = response.json()["items"]
            if not page:
                raise RuntimeError(f"{len(ids) - len(times)} records are not listed as done")
            times += [datetime.fromisoformat(i["updated_at"]) for i in page if i["id"] in ids]
            listed += len(page)
    return max(times)


async def count_unique(url: str, viewer_key: str) -> int:
    """Records the pipeline kept as unique (done, no `duplicate_of`)."""
    viewer = {"Authorization": f"Bearer {viewer_key}"}
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=viewer) as reader:
        return await count_images(reader, duplicate="false")


def per_image(seconds: dict[str, float], images: list[bytes]) -> dict[str, float]:
    """CPU seconds by process as milliseconds per image."""
    return {name: used * 1000 / len(images) for name, used in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--privacy", choices=["on", "off"], default="on", help="the privacy pass in (b)"
    )
    parser.add_argument(
        "--pixel-check",
        choices=["on", "off"],
        default="on",
        help="dedup's pixel check of near candidates in (b)",
    )
    args = parser.parse_args()
    rounds = [crawl_size_jpegs(args.images, seed=7 + 2 * r) for r in range(args.rounds)]
    warm_up = crawl_size_jpegs(WARM_UP_IMAGES, seed=8)
    measured: list[tuple[float, float, float, dict[str, float], dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as folder:
        database = f"sqlite:///{folder}/seavl.db"
        upgrade_all(database)
        engine = make_engine(database)
        key = create_key(engine, Role.CONTRIBUTOR)
        viewer_key = create_key(engine, Role.VALIDATOR)
        engine.dispose()
        with (
            running_embedder_alone(Path(folder)) as embedder,
            running_system(
                Path(folder), warm_up[0], PRIVACY[args.privacy] | PIXEL_CHECK[args.pixel_check]
            ) as services,
        ):
            gateway = services["gateway"]
            asyncio.run(embed_all(embedder, warm_up))
            asyncio.run(upload_all(gateway, key, viewer_key, warm_up, 0))
            done = len(warm_up)
            for images in rounds:
                embedder_before, client_before = cpu_seconds(PIDS[embedder]), time.process_time()
                alone = asyncio.run(embed_all(embedder, images))
                cpu_alone = {
                    "embedder": cpu_seconds(PIDS[embedder]) - embedder_before,
                    "this client": time.process_time() - client_before,
                }
                client_before = time.process_time()
                unique_before = asyncio.run(count_unique(gateway, viewer_key))
                before = {n: cpu_seconds(PIDS[u]) for n, u in services.items()}
                started, ids = asyncio.run(upload_all(gateway, key, viewer_key, images, done))
                cpu = {n: cpu_seconds(PIDS[u]) - before[n] for n, u in services.items()}
                cpu["this client"] = time.process_time() - client_before
                ended = asyncio.run(last_done(gateway, viewer_key, ids))
                through = len(images) / (ended - started).total_seconds()
                done += len(images)
                unique_after = asyncio.run(count_unique(gateway, viewer_key))
                unique = (unique_after - unique_before) / len(images)
                measured.append(
                    (alone, through, unique, per_image(cpu_alone, images), per_image(cpu, images))
                )
    print(
        f"{args.images} crawl-size JPEGs per round (distinct scenes), concurrency {CONCURRENCY}, "
        f"every service its own process, privacy pass {args.privacy} and pixel check "
        f"{args.pixel_check} in (b)"
    )
    for number, (alone, through, unique, cpu_alone, cpu) in enumerate(measured, 1):
        print(
            f"  round {number}: (a) embedder alone {alone:6.1f} images/s, (b) POST /v1/images "
            f"until all done {through:6.1f} images/s ({unique:.0%} kept unique), "
            f"ratio (b)/(a) = {through / alone:.2f}"
        )
        for side, used in (("a", cpu_alone), ("b", cpu)):
            print(
                f"    CPU per image in ({side}): "
                + ", ".join(f"{n} {ms:.1f} ms" for n, ms in used.items())
                + f"; all {sum(used.values()):.1f} ms"
            )
    ratio = statistics.median(m[1] / m[0] for m in measured)
    print(f"  median ratio (b)/(a) over {len(measured)} rounds = {ratio:.2f}")


if __name__ == "__main__":
    main()
