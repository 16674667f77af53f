"""How every service runs in the foreground, so `python -m services.NAME` needs nothing else of
seavl (not the CLI, not the other services) and the services start alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from services.common.logging import configure_logging
from services.common.service import UnguardedBindError
from services.common.settings import SeavlSettings

SettingsT = TypeVar("SettingsT", bound=SeavlSettings)

GRACEFUL_SHUTDOWN_SECONDS = 10


def serve(
    name: str, create_app: Callable[[SettingsT], FastAPI], settings_class: type[SettingsT]
) -> None:
    """Serves the app `create_app` builds from `settings_class` (read from the environment)
    with uvicorn until stopped; an unguarded bind beyond loopback exits with what to do."""
    settings = settings_class()
    server = settings.server
    configure_logging(server.log_level, service=name)
    try:
        app = create_app(settings)
    except UnguardedBindError as exc:
        raise SystemExit(f"seavl serve {name}: {exc}") from None
    uvicorn.run(
        app,
        host=server.host,
        port=server.port,
        log_level=server.log_level,
        log_config=None,  # uvicorn's lines go through ours (configure_logging), in our format
        ws="none",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
