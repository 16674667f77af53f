"""The whole system in one test process: real embedder, filter, dedup and gateway over HTTP."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from services.common.clients import ServiceClientSettings
from services.common.database import make_engine
from services.databases import upgrade_all
from services.dedup.app import create_app as create_dedup
from services.dedup.config import DedupSettings
from services.filter.app import create_app as create_filter
from services.filter.config import FilterSettings
from services.gateway.app import create_app as create_gateway
from services.gateway.auth import Role, create_key
from services.gateway.config import GatewaySettings
from tests.helpers import live_server, photo_bytes, wait_for

REFERENCE_PHOTOS = ("chelsea.png", "coffee.png")
# For tests of a job's wait on the embedder: the privacy pass off, so that each job asks the
# embedder for its image's embedding (with the pass on, an upload kept as sent carries the one
# the pass answered, and its job asks nothing of the embedder).
JOBS_ASK_THE_EMBEDDER: dict[str, Any] = {"privacy": {"detect": False}}


@dataclass
class Stack:
    gateway: httpx.Client
    settings: GatewaySettings
    engine: Engine
    keys: dict[Role, str]

    def as_role(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def upload(self, data: bytes, role: Role = Role.CONTRIBUTOR, **fields: Any) -> httpx.Response:
        return self.gateway.post(
            "/v1/images",
            files={"image": ("photo.jpg", data)},
            data={k: str(v) for k, v in fields.items()},
            headers=self.as_role(role),
        )

    def image(self, image_id: str) -> dict[str, Any]:
        """The record as a validator reads it (every record, whoever sent it)."""
        response = self.gateway.get(f"/v1/images/{image_id}", headers=self.as_role(Role.VALIDATOR))
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_done(self, image_id: str, timeout: float = 60) -> dict[str, Any]:
        wait_for(lambda: self.image(image_id)["status"] in ("done", "failed"), timeout=timeout)
        return self.image(image_id)


def settings_for(
    database_url: str,
    folder: Path,
    embedder_url: str,
    filter_url: str,
    dedup_url: str,
    **extra: Any,
) -> GatewaySettings:
    def client(url: str) -> ServiceClientSettings:
        return ServiceClientSettings(url=url, attempts=2, timeout_seconds=30)

    return GatewaySettings(
        database_url=database_url,
        embedder=client(embedder_url),
        filter=client(filter_url),
        dedup=client(dedup_url),
        **extra,
    )


def service_token_header(service_token: str | None) -> dict[str, str]:
    """What a call to an internal service carries when the deployment has a service token."""
    return {} if service_token is None else {"Authorization": f"Bearer {service_token}"}


@contextmanager
def running_stack(
    database_url: str,
    folder: Path,
    embedder_url: str,
    with_references: bool = True,
    service_token: str | None = None,
    **extra: Any,
) -> Iterator[Stack]:
    """The filter, dedup and gateway (with `extra` settings) around a running embedder; with
    `service_token`, every one of them has it (the embedder must have been given it too).
    The database is migrated first, as a deployment's `seavl db upgrade` does."""
    upgrade_all(database_url)
    with ExitStack() as stack:
        filter_url = stack.enter_context(
            live_server(
                create_filter(
                    FilterSettings(
                        database_url=database_url,
                        embedder=ServiceClientSettings(url=embedder_url),
                        service_token=service_token,
                    )
                )
            )
        )
        dedup_url = stack.enter_context(
            live_server(
                create_dedup(
                    DedupSettings(
                        database_url=database_url,
                        qdrant_path=folder / "qdrant",
                        service_token=service_token,
                    )
                )
            )
        )
        settings = settings_for(
            database_url,
            folder,
            embedder_url,
            filter_url,
            dedup_url,
            service_token=service_token,
            **extra,
        )
        gateway_url = stack.enter_context(live_server(create_gateway(settings)))
        if with_references:
            with httpx.Client(
                base_url=filter_url, timeout=60, headers=service_token_header(service_token)
            ) as filter_client:
                filter_client.post(
                    "/v1/reference-sets", json={"name": "default", "model": "efficientnet-lite0"}
                )
                references = [
                    {"image": base64.b64encode(photo_bytes(n)).decode(), "country": country}
                    for n, country in zip(REFERENCE_PHOTOS, ("TH", "VN"), strict=True)
                ]
                added = filter_client.post(
                    "/v1/reference-sets/default/references", json={"references": references}
                )
                assert added.status_code == 201, added.text
        engine = make_engine(database_url)
        keys = {role: create_key(engine, role) for role in Role}
        client = stack.enter_context(httpx.Client(base_url=gateway_url, timeout=60))
        yield Stack(client, settings, engine, keys)
        engine.dispose()
