"""Trust between services: with the deployment's service token set, the embedder, filter, dedup
and captioner answer only calls that carry it (probes and metrics stay open), the gateway and
its jobs carry it, and no internal service listens beyond loopback without one."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.captioner.app import create_app as create_captioner
from services.captioner.config import CaptionerSettings
from services.common.clients import ServiceClientSettings
from services.common.database import make_engine
from services.common.service import UnguardedBindError
from services.common.settings import ServerSettings
from services.dedup.app import create_app as create_dedup
from services.dedup.config import DedupSettings
from services.embedder.app import create_app as create_embedder
from services.embedder.config import EmbedderSettings
from services.filter.app import create_app as create_filter
from services.filter.config import FilterSettings
from services.gateway.app import create_app as create_gateway
from services.gateway.auth import Role, create_key
from services.gateway.worker import WorkerKind
from tests.helpers import live_server, migrated_sqlite, photo_bytes, wait_for
from tests.integration.gateway_stack import running_stack, service_token_header, settings_for
from tests.integration.test_gateway_distributed import run_worker_until_idle

TOKEN = secrets.token_hex(32)
OTHER_TOKEN = secrets.token_hex(32)
CAT = photo_bytes("chelsea.png")
CAT_PHASH = "c3c3f0f03c3c0f0f"


@pytest.fixture(scope="module")
def guarded_embedder(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real embedder, with the deployment's service token."""
    settings = EmbedderSettings(
        models_dir=models_dir,
        service_token=TOKEN,
    )
    with live_server(create_embedder(settings)) as url:
        yield url


@dataclass
class Call:
    """A call an internal service serves to a caller with the token, and its success status."""

    method: str
    path: str
    body: Any
    served: int


def _embedder(tmp_path: Path, models_dir: Path, embedder_url: str) -> FastAPI:
    return create_embedder(
        EmbedderSettings(
            models_dir=models_dir,
            service_token=TOKEN,
        )
    )


def _filter(tmp_path: Path, models_dir: Path, embedder_url: str) -> FastAPI:
    return create_filter(
        FilterSettings(
            database_url=migrated_sqlite(tmp_path / "filter.db"),
            embedder=ServiceClientSettings(url=embedder_url),
            service_token=TOKEN,
        )
    )


def _dedup(tmp_path: Path, models_dir: Path, embedder_url: str) -> FastAPI:
    return create_dedup(
        DedupSettings(
            database_url=migrated_sqlite(tmp_path / "dedup.db"),
            qdrant_path=tmp_path / "qdrant",
            service_token=TOKEN,
        )
    )


def _captioner(tmp_path: Path, models_dir: Path, embedder_url: str) -> FastAPI:
    return create_captioner(
        CaptionerSettings(
            embedder=ServiceClientSettings(url=embedder_url),
            service_token=TOKEN,
        )
    )


AppFactory = Callable[[Path, Path, str], FastAPI]
GUARDED: dict[str, tuple[AppFactory, Call]] = {
    "embedder": (
        _embedder,
        Call("POST", "/v1/embed", {"images": [{"data": base64.b64encode(CAT).decode()}]}, 200),
    ),
    "filter": (
        _filter,
        Call("POST", "/v1/reference-sets", {"name": "cats", "model": "efficientnet-lite0"}, 201),
    ),
    "dedup": (
        _dedup,
        Call(
            "POST",
            "/v1/dedup/insert",
            {"id": hashlib.sha256(CAT).hexdigest(), "phash": CAT_PHASH},
            200,
        ),
    ),
    "captioner": (
        _captioner,
        Call(
            "POST", "/v1/captions", {"data": base64.b64encode(CAT).decode(), "language": "en"}, 200
        ),
    ),
}


@pytest.fixture(params=sorted(GUARDED))
def guarded(
    request: pytest.FixtureRequest, tmp_path: Path, models_dir: Path, guarded_embedder: str
) -> Iterator[tuple[httpx.Client, Call]]:
    factory, call = GUARDED[request.param]
    with (
        live_server(factory(tmp_path, models_dir, guarded_embedder)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client, call


def error_code(response: httpx.Response) -> tuple[int, str | None]:
    return response.status_code, response.json().get("error", {}).get("code")


def test_an_internal_service_serves_only_calls_with_the_token(
    guarded: tuple[httpx.Client, Call],
) -> None:
    client, call = guarded
    without = client.request(call.method, call.path, json=call.body)
    assert error_code(without) == (401, "service_token_required")
    assert without.headers["www-authenticate"].startswith("Bearer")
    for authorization in (f"Bearer {TOKEN[:-1]}", "Bearer", f"Basic {TOKEN}", TOKEN):
        refused = client.request(
            call.method, call.path, json=call.body, headers={"Authorization": authorization}
        )
        assert refused.status_code == 401, authorization
    wrong = client.request(
        call.method, call.path, json=call.body, headers=service_token_header(OTHER_TOKEN)
    )
    assert error_code(wrong) == (401, "service_token_invalid")
    for path in ("/docs", "/openapi.json"):
        assert error_code(client.get(path)) == (401, "service_token_required")
    served = client.request(
        call.method, call.path, json=call.body, headers=service_token_header(TOKEN)
    )
    assert served.status_code == call.served, served.text


def test_probes_and_metrics_stay_open(guarded: tuple[httpx.Client, Call]) -> None:
    client, call = guarded
    client.request(call.method, call.path, json=call.body)  # refused, and counted
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'status="401"' in metrics.text


def test_nothing_is_planted_without_the_token(tmp_path: Path, guarded_embedder: str) -> None:
    """The attack the token stops: a fake id inserted under a real image's pHash would make the
    next real upload of that image a duplicate of the fake."""
    fake = {"id": "f" * 64, "phash": CAT_PHASH}
    real = {"id": hashlib.sha256(CAT).hexdigest(), "phash": CAT_PHASH}
    with (
        live_server(_dedup(tmp_path, tmp_path, guarded_embedder)) as url,
        httpx.Client(base_url=url, timeout=60) as dedup,
    ):
        assert dedup.post("/v1/dedup/insert", json=fake).status_code == 401
        inserted = dedup.post("/v1/dedup/insert", json=real, headers=service_token_header(TOKEN))
        assert inserted.json()["status"] == "inserted", inserted.text


def test_reference_sets_are_not_deleted_without_the_token(
    tmp_path: Path, guarded_embedder: str
) -> None:
    with (
        live_server(_filter(tmp_path, tmp_path, guarded_embedder)) as url,
        httpx.Client(base_url=url, timeout=60, headers=service_token_header(TOKEN)) as trusted,
    ):
        created = trusted.post(
            "/v1/reference-sets", json={"name": "default", "model": "efficientnet-lite0"}
        )
        assert created.status_code == 201, created.text
        references = {"references": [{"image": base64.b64encode(CAT).decode()}]}
        # the filter embeds the image: its own call to the embedder carries the token
        assert (
            trusted.post("/v1/reference-sets/default/references", json=references).status_code
            == 201
        )
        assert httpx.delete(f"{url}/v1/reference-sets/default").status_code == 401
        assert (
            httpx.post(f"{url}/v1/reference-sets/default/references", json=references).status_code
            == 401
        )
        assert trusted.get("/v1/reference-sets/default").json()["references"] == 1


def test_the_pipeline_runs_with_a_token_on_every_service(
    database_url: str, tmp_path: Path, guarded_embedder: str
) -> None:
    """Every hop carries the token: gateway -> embedder, filter, dedup; filter -> embedder (the
    references); the caption job -> captioner -> embedder (offline labels)."""
    with (
        live_server(_captioner(tmp_path, tmp_path, guarded_embedder)) as captioner,
        running_stack(
            database_url,
            tmp_path,
            guarded_embedder,
            service_token=TOKEN,
            captioner=ServiceClientSettings(url=captioner, attempts=1),
        ) as stack,
    ):
        for peer in (stack.settings.filter, stack.settings.dedup, stack.settings.captioner):
            assert peer is not None
            assert httpx.get(f"{peer.url}/openapi.json").status_code == 401  # guarded
        first = stack.upload(CAT, countries="TH", caption="true")
        assert first.status_code == 202, first.text
        done = stack.wait_done(first.json()["id"])
        assert done["status"] == "done", done
        assert done["score"] is not None  # scored by the filter on references it embedded
        assert done["duplicate_of"] is None
        copy = stack.upload(photo_bytes("chelsea.png", "PNG"), countries="TH")
        assert stack.wait_done(copy.json()["id"])["duplicate_of"] == done["id"]
        relevance = stack.gateway.post(
            "/v1/relevance",
            files={"image": ("cat.jpg", CAT)},
            headers=stack.as_role(Role.CONTRIBUTOR),
        )
        assert relevance.status_code == 200, relevance.text
        wait_for(lambda: stack.image(done["id"])["captions"][0]["status"] != "queued")
        [caption] = stack.image(done["id"])["captions"]
        assert caption["status"] == "done", caption
        assert "cat" in caption["caption"]  # the embedder's labels, asked by the captioner


def test_arq_workers_carry_the_token(redis_url: str, tmp_path: Path, guarded_embedder: str) -> None:
    with (
        live_server(_captioner(tmp_path, tmp_path, guarded_embedder)) as captioner,
        running_stack(
            f"sqlite:///{tmp_path / 'seavl.db'}",
            tmp_path,
            guarded_embedder,
            service_token=TOKEN,
            redis_url=redis_url,
            captioner=ServiceClientSettings(url=captioner, attempts=1),
        ) as stack,
    ):
        assert httpx.get(f"{stack.settings.dedup.url}/openapi.json").status_code == 401
        image_id = stack.upload(CAT, countries="TH", caption="true").json()["id"]
        run_worker_until_idle(stack)
        done = stack.image(image_id)
        assert done["status"] == "done" and done["score"] is not None, done
        run_worker_until_idle(stack, WorkerKind.CAPTIONS)
        [caption] = stack.image(image_id)["captions"]
        assert caption["status"] == "done", caption


def test_a_peer_refusing_the_token_is_the_gateways_503(
    tmp_path: Path, guarded_embedder: str
) -> None:
    """A token that differs between services is the deployment's fault, not the caller's: the
    caller gets 503 with Retry-After, never the peer's 401."""
    database_url = migrated_sqlite(tmp_path / "seavl.db")
    settings = settings_for(
        database_url,
        tmp_path,
        guarded_embedder,
        guarded_embedder,
        guarded_embedder,
        service_token=OTHER_TOKEN,
    )
    with live_server(create_gateway(settings)) as url:
        engine = make_engine(database_url)
        key = create_key(engine, Role.CONTRIBUTOR)
        engine.dispose()
        response = httpx.post(
            f"{url}/v1/relevance",
            files={"image": ("cat.jpg", CAT)},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
    assert error_code(response) == (503, "unavailable")
    assert int(response.headers["retry-after"]) > 0
    assert "SEAVL_SERVICE_TOKEN" in response.json()["error"]["message"]


@pytest.mark.parametrize("service", sorted(GUARDED))
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "embedder"])
def test_an_internal_service_without_a_token_refuses_to_listen_beyond_loopback(
    service: str, host: str, tmp_path: Path
) -> None:
    settings: dict[str, Any] = {"server": ServerSettings(host=host, port=8000 + len(service))}
    builders: dict[str, Callable[[], Any]] = {
        "embedder": lambda: create_embedder(EmbedderSettings(**settings)),
        "filter": lambda: create_filter(
            FilterSettings(database_url=migrated_sqlite(tmp_path / "f.db"), **settings)
        ),
        "dedup": lambda: create_dedup(
            DedupSettings(database_url=migrated_sqlite(tmp_path / "d.db"), **settings)
        ),
        "captioner": lambda: create_captioner(CaptionerSettings(**settings)),
    }
    with pytest.raises(UnguardedBindError, match="SEAVL_SERVICE_TOKEN"):
        builders[service]()
    settings["service_token"] = TOKEN
    assert isinstance(builders[service](), FastAPI)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "localhost"])
def test_loopback_needs_no_token(host: str) -> None:
    assert isinstance(
        create_captioner(CaptionerSettings(server=ServerSettings(host=host, port=1))), FastAPI
    )


def test_the_public_gateway_needs_no_token_to_listen(tmp_path: Path) -> None:
    settings = settings_for(
        f"sqlite:///{tmp_path / 'seavl.db'}",
        tmp_path,
        "http://a",
        "http://b",
        "http://c",
        server=ServerSettings(host="192.0.2.10", port=8000),
    )
    assert isinstance(create_gateway(settings), FastAPI)


def test_a_short_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 32 characters") as refused:
        FilterSettings(service_token="CHANGE-ME")
    assert "CHANGE-ME" not in str(refused.value)
