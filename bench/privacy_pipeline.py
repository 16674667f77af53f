"""The upload pipeline with the privacy pass on and off, in one run.

    .venv/bin/python bench/privacy_pipeline.py [--images 300] [--rounds 3]

Two whole systems on embedded defaults, each service its own process: one with the privacy
pass (the embedder's face, plate and unsafe detectors on every upload before it is stored,
the gateway blurring what they find), one with it off (`SEAVL_GATEWAY_PRIVACY__DETECT=false`).
Each round POSTs the same new crawl-size JPEGs to both, one after the other (the order
alternates between rounds), and waits until every record is done; it prints each side's
images/s, their ratio (issue 14's target: on / off >= 0.6 on CPU) and the CPU each process
spent per image. The unsafe-content model takes part when `seavl models prepare
--unsafe-model` has put it in the models folder (said in the output).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._images import crawl_size_jpegs  # noqa: E402
from bench._service import PIDS, cpu_seconds, running_system  # noqa: E402
from bench.pipeline import WARM_UP_IMAGES, upload_all  # noqa: E402
from services.common.database import make_engine  # noqa: E402
from services.databases import upgrade_all  # noqa: E402
from services.embedder.config import EmbedderSettings, unsafe_model_path  # noqa: E402
from services.gateway.auth import Role, create_key  # noqa: E402

SIDES = {"on": {}, "off": {"SEAVL_GATEWAY_PRIVACY__DETECT": "false"}}


def keys(folder: Path) -> tuple[str, str]:
    """A contributor's key and a validator's (who reads every record) for a system's database."""
    database = f"sqlite:///{folder}/seavl.db"
    upgrade_all(database)
    engine = make_engine(database)
    contributor, viewer = create_key(engine, Role.CONTRIBUTOR), create_key(engine, Role.VALIDATOR)
    engine.dispose()
    return contributor, viewer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = [crawl_size_jpegs(args.images, seed=41 + 2 * r) for r in range(args.rounds)]
    warm_up = crawl_size_jpegs(WARM_UP_IMAGES, seed=42)
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    unsafe = unsafe_model_path(EmbedderSettings().models_dir).is_file()
    with tempfile.TemporaryDirectory() as scratch:
        folders = {side: Path(scratch) / side for side in SIDES}
        credentials = {}
        for side, folder in folders.items():
            folder.mkdir()
            credentials[side] = keys(folder)
        with (
            running_system(folders["on"], warm_up[0], SIDES["on"]) as on,
            running_system(folders["off"], warm_up[0], SIDES["off"]) as off,
        ):
            systems = {"on": on, "off": off}
            done = dict.fromkeys(SIDES, 0)
            for side, services in systems.items():
                key, viewer = credentials[side]
                asyncio.run(upload_all(services["gateway"], key, viewer, warm_up, 0))
                done[side] = len(warm_up)
            for number, images in enumerate(rounds):
                order = ["on", "off"] if number % 2 == 0 else ["off", "on"]
                for side in order:
                    services, (key, viewer) = systems[side], credentials[side]
                    before = {n: cpu_seconds(PIDS[u]) for n, u in services.items()}
                    started = time.perf_counter()
                    asyncio.run(upload_all(services["gateway"], key, viewer, images, done[side]))
                    rates[side].append(len(images) / (time.perf_counter() - started))
                    done[side] += len(images)
                    cpu[side].append(
                        {
                            n: (cpu_seconds(PIDS[u]) - before[n]) * 1000 / len(images)
                            for n, u in services.items()
                        }
                    )
    print(
        f"{args.images} crawl-size JPEGs per round, POST /v1/images until all done, "
        f"unsafe-content model {'on' if unsafe else 'not prepared'}"
    )
    for number in range(args.rounds):
        on_rate, off_rate = rates["on"][number], rates["off"][number]
        print(
            f"  round {number + 1}: privacy on {on_rate:6.1f} images/s, off {off_rate:6.1f} "
            f"images/s, ratio on/off = {on_rate / off_rate:.2f}"
        )
        for side in SIDES:
            used = cpu[side][number]
            print(
                f"    CPU per image, privacy {side}: "
                + ", ".join(f"{n} {ms:.1f} ms" for n, ms in used.items())
                + f"; all {sum(used.values()):.1f} ms"
            )
    ratio = statistics.median(on / off for on, off in zip(rates["on"], rates["off"], strict=True))
    print(f"  median ratio on/off over {args.rounds} rounds = {ratio:.2f} (target >= 0.6)")


if __name__ == "__main__":
    main()
