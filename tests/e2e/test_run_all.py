"""`seavl run` (what `make run` calls): every service as a process, used as the README shows."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from services.common.database import make_engine
from services.gateway.auth import Role, create_key
from tests.e2e.conftest import ROOT, upload_until_captioned
from tests.helpers import free_port, photo_bytes


def wait_ready(urls: list[str], process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    pending = list(urls)
    while pending:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"not ready: {pending}\n{log.read_text()}"
        try:
            if httpx.get(f"{pending[0]}/readyz", timeout=2).status_code == 200:
                pending.pop(0)
                continue
        except httpx.TransportError:
            pass
        time.sleep(0.3)


def test_the_readme_session_on_embedded_defaults(models_dir: Path, tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("embedder", "filter", "dedup", "captioner", "gateway")}
    embedder = f"http://127.0.0.1:{ports['embedder']}"
    env = {
        **os.environ,
        "SEAVL_EMBEDDER_SERVER__PORT": str(ports["embedder"]),
        "SEAVL_FILTER_SERVER__PORT": str(ports["filter"]),
        "SEAVL_DEDUP_SERVER__PORT": str(ports["dedup"]),
        "SEAVL_GATEWAY_SERVER__PORT": str(ports["gateway"]),
        "SEAVL_CAPTIONER_SERVER__PORT": str(ports["captioner"]),
        "SEAVL_CAPTIONER_EMBEDDER__URL": embedder,
        "SEAVL_GATEWAY_CAPTIONER__URL": f"http://127.0.0.1:{ports['captioner']}",
        "SEAVL_STORAGE_DIR": str(tmp_path / "objects"),
        "SEAVL_GATEWAY_EMBEDDER__URL": embedder,
        "SEAVL_GATEWAY_FILTER__URL": f"http://127.0.0.1:{ports['filter']}",
        "SEAVL_GATEWAY_DEDUP__URL": f"http://127.0.0.1:{ports['dedup']}",
        "SEAVL_EMBEDDER_MODELS_DIR": str(models_dir),
        "SEAVL_FILTER_EMBEDDER__URL": embedder,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'seavl.db'}",
        "SEAVL_DEDUP_QDRANT_PATH": str(tmp_path / "qdrant"),
    }
    env.pop("QDRANT_URL", None)
    env.pop("REDIS_URL", None)
    env.pop("SEAVL_SERVICE_TOKEN", None)
    log = tmp_path / "run.log"
    token_file = tmp_path / "var" / "service-token"
    # as `make run` does: the schema first, once, then the services
    upgraded = subprocess.run(
        [sys.executable, "-m", "services.cli", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert "gateway: at gateway_" in upgraded.stdout
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", "--token-file", str(token_file)],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=output,
        )
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        wait_ready(list(urls.values()), process, log)
        assert token_file.stat().st_mode & 0o777 == 0o600  # made by the run, its owner's only
        trusted = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        cat = photo_bytes("chelsea.png")
        for name in ("embedder", "filter", "dedup", "captioner"):
            refused = httpx.get(f"{urls[name]}/openapi.json")
            assert refused.status_code == 401, name
            assert refused.json()["error"]["code"] == "service_token_required"
        embedded = httpx.post(
            f"{urls['embedder']}/v1/embed",
            files={"images": ("cat.jpg", cat)},
            data={"encoding": "base64"},
            headers=trusted,
        ).json()["results"][0]
        engine = make_engine(env["DATABASE_URL"])
        key = create_key(engine, Role.CONTRIBUTOR)
        admin = {"Authorization": f"Bearer {create_key(engine, Role.ADMIN)}"}
        engine.dispose()
        with httpx.Client(base_url=urls["gateway"], timeout=60, headers=admin) as gateway:
            created = gateway.post(
                "/v1/reference-sets", json={"name": "cats", "model": "efficientnet-lite0"}
            )
            assert created.status_code == 201, created.text
            added = gateway.post(
                "/v1/reference-sets/cats/references",
                json={"references": [{"image": base64.b64encode(cat).decode(), "country": "TH"}]},
            )
            assert added.status_code == 201, added.text
        with httpx.Client(base_url=urls["filter"], timeout=60, headers=trusted) as filter_service:
            score = filter_service.post(
                "/v1/score", json={"set": "cats", "vectors": [embedded["embedding"]]}
            ).json()["results"][0]
        assert abs(score["score"] - 1.0) < 1e-4
        assert (score["tier"], score["accepted"], score["best_country"]) == ("Diamond", True, "TH")
        with httpx.Client(base_url=urls["dedup"], headers=trusted) as dedup:
            first = {
                "id": hashlib.sha256(cat).hexdigest(),
                "model": "efficientnet-lite0",
                "vector": embedded["embedding"],
                "phash": embedded["phash"],
            }
            assert dedup.post("/v1/dedup/insert", json=first).json()["status"] == "inserted"
            copy = {**first, "id": hashlib.sha256(b"copy").hexdigest()}
            outcome = dedup.post("/v1/dedup/insert", json=copy).json()
            assert outcome["status"] == "duplicate"
            assert outcome["duplicate_of"]["id"] == first["id"]
        thai = httpx.post(
            f"{urls['captioner']}/v1/captions",
            json={"data": base64.b64encode(cat).decode(), "language": "th", "countries": ["TH"]},
            headers=trusted,
            timeout=60,
        ).json()
        assert thai["backend"] == "offline-labels" and thai["language_ok"] is True
        assert "ประเทศไทย" in thai["caption"]
        done = upload_until_captioned(
            urls["gateway"],
            key,
            photo_bytes("coffee.png"),
            {"countries": "VN", "location": "Hanoi, Vietnam", "caption": "true"},
        )
        assert done["status"] == "done" and done["phash"] is not None  # no "default" set: unscored
        assert done["captions"][0]["status"] == "done"
        assert "Hanoi, Vietnam" in done["captions"][0]["caption"]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, log.read_text()
    for url in urls.values():
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            raise AssertionError(f"{url} still answers after Ctrl-C")
        except httpx.TransportError:
            pass
