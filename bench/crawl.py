"""Crawl ingest and dataset export against the embedder alone, in one run (issue 11).

    .venv/bin/python bench/crawl.py [--images 2000] [--shard-size 500] [--rounds 2]

(a) the embedder service alone (a process of its own, so that (b)'s embedder has not seen the
    images): the images as JSON (base64) in batches of BATCH, CONCURRENCY requests at a time,
    as the crawl path sends them, vectors answered in base64;
(b) the whole system on embedded defaults (gateway with in-process jobs, SQLite, a local folder,
    the embedded dedup store): POST /v1/crawls on a folder of img2dataset webdataset shards
    holding the same images, keep: all, then GET /v1/crawls/{id} every POLL_SECONDS until done;
(c) after the rounds, POST /v1/exports of every image ingested (duplicates included) to a new
    folder, followed until done.
Each round has new distinct scenes (bench/_images.py, another seed), so dedup sees new images;
(a) and (b) are warmed up first on other images. Each service runs as its own process on
127.0.0.1. (a) and (b) alternate for `--rounds` rounds, so a slow spell of a shared machine hits
both sides of a round's ratio; prints each round's images/s and (b)/(a), the CPU each service
spent per image and the system's peak RSS in (b), the crawl's counts, the median ratio, and the
export's records/s and MB/s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

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

BATCH = 64  # the gateway's crawl batch size (SEAVL_GATEWAY_CRAWL__BATCH_SIZE's default)
CONCURRENCY = 2  # shards the gateway ingests at once (SEAVL_GATEWAY_CRAWL__SHARDS_AT_ONCE)
WARM_UP_IMAGES = 64
POLL_SECONDS = 0.5  # how often (b) and (c) ask for progress: a light client, not a load
RSS_SAMPLE_SECONDS = 0.2
RECORDS_PER_SHARD = 1000
COUNTS = ("seen", "accepted", "rejected", "duplicates", "failed", "stored")


class JobFailed(RuntimeError):
    """A crawl or export the gateway reported as failed."""


def write_shards(folder: Path, images: list[bytes], shard_size: int) -> None:
    """`images` as img2dataset's webdataset output: `00000.tar` holding `{key}.jpg`,
    `{key}.json` and `{key}.txt` per sample, and `00000_stats.json` beside it."""
    folder.mkdir(parents=True)
    digits = max(4, len(str(shard_size - 1)))
    for number, start in enumerate(range(0, len(images), shard_size)):
        shard = images[start : start + shard_size]
        with tarfile.open(folder / f"{number:05d}.tar", "w") as tar:
            for index, data in enumerate(shard):
                key = f"{number:05d}{index:0{digits}d}"
                caption = f"a crawled scene, sample {key}"
                width, height = Image.open(io.BytesIO(data)).size
                meta = {
                    "key": key,
                    "url": f"http://127.0.0.1/crawl/{key}.jpg",
                    "caption": caption,
                    "status": "success",
                    "original_width": width,
                    "original_height": height,
                }
                _add_member(tar, f"{key}.jpg", data)
                _add_member(tar, f"{key}.json", json.dumps(meta).encode())
                _add_member(tar, f"{key}.txt", caption.encode())
        stats = {"count": len(shard), "successes": len(shard), "failed_to_download": 0}
        (folder / f"{number:05d}_stats.json").write_text(json.dumps(stats))


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def embed_batches(images: list[bytes]) -> list[bytes]:
    """The JSON bodies (a) posts, made before the clock starts: the embedder is timed, not the
    client's base64."""
    return [
        json.dumps(
            {
                "images": [{"data": base64.b64encode(data).decode()} for data in batch],
                "encoding": "base64",
            }
        ).encode()
        for batch in (images[i : i + BATCH] for i in range(0, len(images), BATCH))
    ]


async def embed_all(url: str, bodies: list[bytes], count: int) -> float:
    """(a): images/s of the embedder alone, CONCURRENCY batches in flight."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:

        async def sender() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                response = await client.post("/v1/embed", content=body, headers=headers)
                response.raise_for_status()
                failures = [r for r in response.json()["results"] if "error" in r]
                if failures:
                    raise RuntimeError(f"the embedder failed images: {failures[:3]}")

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
        return count / (time.perf_counter() - started)


def follow(client: httpx.Client, path: str) -> dict[str, Any]:
    """GET `path` every POLL_SECONDS until the job is done; its last state."""
    while True:
        response = client.get(path)
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        if state["status"] == "done":
            return state
        if state["status"] == "failed":
            raise JobFailed(f"{path} failed: {json.dumps(state)}")
        time.sleep(POLL_SECONDS)


def crawl(client: httpx.Client, source: Path) -> tuple[float, dict[str, Any]]:
    """(b): seconds from POST /v1/crawls until the crawl is done, and its last state."""
    started = time.perf_counter()
    response = client.post("/v1/crawls", json={"source": str(source), "policy": {"keep": "all"}})
    response.raise_for_status()
    state = follow(client, f"/v1/crawls/{response.json()['id']}")
    return time.perf_counter() - started, state


def export(client: httpx.Client, destination: Path) -> tuple[float, dict[str, Any]]:
    """(c): seconds from POST /v1/exports until the export is done, and its last state."""
    started = time.perf_counter()
    response = client.post(
        "/v1/exports",
        json={
            "destination": str(destination),
            "filters": {"duplicates": True},
            "records_per_shard": RECORDS_PER_SHARD,
        },
    )
    response.raise_for_status()
    state = follow(client, f"/v1/exports/{response.json()['id']}")
    return time.perf_counter() - started, state


def resident_bytes(pid: int) -> int:
    """VmRSS of a live process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class PeakRss:
    """The highest sum of the processes' RSS seen at one sample, and each one's highest."""

    total: int = 0
    each: dict[str, int] = field(default_factory=dict)


@contextmanager
def sampled_rss(pids: dict[str, int]) -> Iterator[PeakRss]:
    """RSS of `pids` (name → process id) every RSS_SAMPLE_SECONDS in a thread, while inside."""
    peak = PeakRss(each=dict.fromkeys(pids, 0))
    stop = threading.Event()

    def sample() -> None:
        while True:
            now = {name: resident_bytes(pid) for name, pid in pids.items()}
            peak.total = max(peak.total, sum(now.values()))
            for name, size in now.items():
                peak.each[name] = max(peak.each[name], size)
            if stop.wait(RSS_SAMPLE_SECONDS):
                return

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()


@dataclass
class Round:
    alone: float
    through: float
    cpu_ms: dict[str, float]
    rss: PeakRss
    counts: dict[str, int]


def run_round(
    embedder: str,
    services: dict[str, str],
    client: httpx.Client,
    images: list[bytes],
    source: Path,
) -> Round:
    """(a) on `images` with the embedder alone, then (b) on the shards in `source` that hold
    them."""
    alone = asyncio.run(embed_all(embedder, embed_batches(images), len(images)))
    pids = {name: PIDS[url] for name, url in services.items()}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    with sampled_rss(pids) as rss:
        seconds, state = crawl(client, source)
    cpu_ms = {
        name: (cpu_seconds(pid) - before[name]) * 1000 / len(images) for name, pid in pids.items()
    }
    counts = {name: int(state["images"][name]) for name in COUNTS}
    if counts["seen"] != len(images):
        raise RuntimeError(f"the crawl saw {counts['seen']} of {len(images)} images: {state}")
    return Round(alone, len(images) / seconds, cpu_ms, rss, counts)


def reconciled(counts: dict[str, int]) -> str:
    """The crawl's counts as the sum they should make: seen = accepted + rejected + duplicates
    + failed; stored is what keep: all kept (every image not failed)."""
    parts = ("accepted", "rejected", "duplicates", "failed")
    total = sum(counts[name] for name in parts)
    verdict = "adds up" if total == counts["seen"] else f"DOES NOT add up: the parts make {total}"
    return (
        f"seen {counts['seen']} = "
        + " + ".join(f"{name} {counts[name]}" for name in parts)
        + f" ({verdict}); stored {counts['stored']}"
    )


def megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


def validator_key(folder: Path) -> str:
    """A validator's key in the system's database (migrated here first)."""
    database = f"sqlite:///{folder}/seavl.db"
    upgrade_all(database)
    engine = make_engine(database)
    key = create_key(engine, Role.VALIDATOR)
    engine.dispose()
    return key


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    measured: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="seavl_bench_crawl_") as folder:
        root = Path(folder)
        warm_up = crawl_size_jpegs(WARM_UP_IMAGES, seed=40)
        write_shards(root / "warm-up", warm_up, args.shard_size)
        sources = [root / f"round-{number}" for number in range(1, args.rounds + 1)]
        rounds = [crawl_size_jpegs(args.images, seed=41 + r) for r in range(args.rounds)]
        for source, images in zip(sources, rounds, strict=True):
            write_shards(source, images, args.shard_size)
        headers = {"Authorization": f"Bearer {validator_key(root)}"}
        with (
            running_embedder_alone(root) as embedder,
            running_system(
                root, warm_up[0], {"SEAVL_GATEWAY_CRAWL__ROOTS": json.dumps([str(root)])}
            ) as services,
            httpx.Client(base_url=services["gateway"], timeout=120, headers=headers) as client,
        ):
            asyncio.run(embed_all(embedder, embed_batches(warm_up), len(warm_up)))
            _, warmed = crawl(client, root / "warm-up")
            for source, images in zip(sources, rounds, strict=True):
                measured.append(run_round(embedder, services, client, images, source))
            export_seconds, exported = export(client, root / "export")
    stored = int(warmed["images"]["stored"]) + sum(r.counts["stored"] for r in measured)
    print(
        f"{args.images} crawl-size JPEGs per round (distinct scenes) in shards of "
        f"{args.shard_size}, batches of {BATCH}, {CONCURRENCY} at once, keep: all, "
        "every service its own process"
    )
    for number, result in enumerate(measured, 1):
        print(
            f"  round {number}: (a) embedder alone {result.alone:6.1f} images/s, (b) crawl "
            f"ingest until done {result.through:6.1f} images/s, "
            f"ratio (b)/(a) = {result.through / result.alone:.2f}"
        )
        print(
            "    CPU per image in (b): "
            + ", ".join(f"{name} {ms:.1f} ms" for name, ms in result.cpu_ms.items())
        )
        print(
            f"    peak RSS in (b): {megabytes(result.rss.total)} all services ("
            + ", ".join(f"{name} {megabytes(size)}" for name, size in result.rss.each.items())
            + ")"
        )
        print(f"    crawl counts: {reconciled(result.counts)}")
    ratio = statistics.median(r.through / r.alone for r in measured)
    print(f"  median ratio (b)/(a) over {len(measured)} rounds = {ratio:.2f}")
    written, size = int(exported["written"]), int(exported["size_bytes"])
    print(
        f"  (c) export: {written} records in {export_seconds:.1f} s, "
        f"{written / export_seconds:.1f} records/s, {size / 1e6 / export_seconds:.1f} MB/s "
        f"({exported['shards']} shards, {megabytes(size)}; {stored} images stored by the crawls)"
    )


if __name__ == "__main__":
    main()
