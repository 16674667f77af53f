"""The `seavl` command: prepare models and serve the services."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from services.common.logging import configure_logging
from services.common.settings import ServerSettings


def _serve(app: FastAPI, server: ServerSettings) -> None:
    configure_logging(server.log_level)
    uvicorn.run(
        app,
        host=server.host,
        port=server.port,
        log_level=server.log_level,
        ws="none",
        timeout_graceful_shutdown=10,
    )


def _serve_embedder() -> None:
    from services.embedder.app import create_app
    from services.embedder.config import EmbedderSettings

    settings = EmbedderSettings()
    _serve(create_app(settings), settings.server)


def _serve_filter() -> None:
    from services.filter.app import create_app
    from services.filter.config import FilterSettings

    settings = FilterSettings()
    _serve(create_app(settings), settings.server)


def _serve_dedup() -> None:
    from services.dedup.app import create_app
    from services.dedup.config import DedupSettings

    settings = DedupSettings()
    _serve(create_app(settings), settings.server)


SERVICES: dict[str, Callable[[], None]] = {
    "embedder": _serve_embedder,
    "filter": _serve_filter,
    "dedup": _serve_dedup,
}


def _prepare_models(models_dir: Path | None, force: bool) -> None:
    from services.embedder.config import EmbedderSettings
    from services.embedder.prepare import prepare_default_model

    folder = prepare_default_model(models_dir or EmbedderSettings().models_dir, force=force)
    print(f"default model ready in {folder}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="seavl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=sorted(SERVICES))
    models = commands.add_parser("models", help="manage the models folder")
    models_commands = models.add_subparsers(dest="models_command", required=True)
    prepare = models_commands.add_parser(
        "prepare", help="convert the default model (EfficientNet-Lite0) to ONNX, offline"
    )
    prepare.add_argument("--models-dir", type=Path, default=None)
    prepare.add_argument("--force", action="store_true", help="convert again even if up to date")
    args = parser.parse_args(argv)
    configure_logging()
    if args.command == "serve":
        SERVICES[args.service]()
    elif args.command == "models":
        _prepare_models(args.models_dir, args.force)
