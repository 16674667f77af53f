"""The `seavl` command: prepare models and serve the services."""

from __future__ import annotations

import argparse
import getpass
import importlib
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from services.common.countries import SeaCountry
from services.common.logging import configure_logging
from services.common.settings import (
    DEFAULT_DATA_DIR,
    MIN_SERVICE_TOKEN_LENGTH,
    SERVICE_TOKEN_VARIABLE,
)
from services.crawl_client import (
    add_crawl_arguments,
    add_export_arguments,
    run_crawl,
    run_export,
)
from services.uploader import add_upload_arguments, run_upload

if TYPE_CHECKING:
    from rich.progress import ProgressColumn
    from sqlalchemy.engine import Engine

    from services.common.reference_sets import TierHistory
    from services.common.tiers import TierShares

SERVICES = ("embedder", "filter", "dedup", "captioner", "gateway")


def _serve(name: str) -> None:
    """Runs the service's own entry (as `python -m services.NAME` does), imported only now: the
    other commands carry no service's code."""
    importlib.import_module(f"services.{name}.__main__").main()


def _worker(check: bool, kind: str) -> int:
    from arq.worker import check_health, run_worker

    from services.gateway import worker

    settings = {
        "images": worker.WorkerSettings,
        "captions": worker.CaptionWorkerSettings,
        "crawls": worker.CrawlWorkerSettings,
        "exports": worker.ExportWorkerSettings,
    }[kind]
    if check:
        return int(check_health(settings))
    run_worker(settings)
    return 0


def _gateway_engine(command: str) -> Engine:
    """The gateway's database, its schema up to date (else the command stops and says why)."""
    from services.common.database import make_engine
    from services.common.migrations import SchemaError, wait_for_schema
    from services.gateway.config import GatewaySettings
    from services.gateway.tables import GATEWAY_SCHEMA

    engine = make_engine(GatewaySettings().database_url)
    try:
        wait_for_schema(GATEWAY_SCHEMA, engine, wait_seconds=0)
    except SchemaError as exc:
        raise SystemExit(f"{command}: {exc}") from None
    return engine


def _create_key(role: str, name: str) -> None:
    from services.gateway.auth import Role, create_key

    print(create_key(_gateway_engine("seavl keys create"), Role(role), name))


def _create_user(email: str, name: str, country: str, role: str, password_stdin: bool) -> None:
    """An account made from the command line: the first admin, before anyone can sign in."""
    from services.common.errors import ServiceError
    from services.gateway.accounts import Role, create_account
    from services.gateway.config import GatewaySettings

    password = sys.stdin.readline().rstrip("\n") if password_stdin else getpass.getpass()
    minimum = GatewaySettings().people.password_min_length
    if len(password) < minimum:
        raise SystemExit(f"seavl users create: the password needs {minimum} characters or more")
    engine = _gateway_engine("seavl users create")
    try:
        row = create_account(
            engine, name=name, email=email, password=password, country=country, role=Role(role)
        )
    except ServiceError as exc:
        raise SystemExit(f"seavl users create: {exc.message}") from None
    print(f"account {row.id}: {row.email} ({row.role})")


def _database(command: str, services: list[str], revision: str, message: str) -> None:
    from services.common.migrations import SchemaError, new_revision
    from services.databases import describe_all, downgrade_all, owned_schemas, upgrade_all

    try:
        if command == "upgrade":
            lines = upgrade_all(services=services)
        elif command == "current":
            lines = describe_all(services)
        elif command == "downgrade":
            lines = downgrade_all(revision, services)
        else:
            if len(services) != 1:
                raise SchemaError("a revision belongs to one service: give --service once")
            (owned,) = owned_schemas(services)
            number = sum(1 for _ in owned.schema.scripts.walk_revisions()) + 1
            revision_id = f"{owned.schema.service}_{number:04d}"
            lines = [f"wrote {new_revision(owned.schema, message, revision_id)}: review it"]
    except SchemaError as exc:
        raise SystemExit(f"seavl db {command}: {exc}") from None
    print("\n".join(lines))


def _progress_columns(label: str) -> tuple[ProgressColumn, ...]:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    return (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


def _shares(text: str) -> TierShares:
    """`--shares 0.40,0.23,0.13,0.07,0.05`: per cent of the crawl, Bronze to Diamond."""
    from pydantic import ValidationError

    from services.common.tiers import TIER_FIELDS, TierShares

    try:
        values = [float(part) / 100 for part in text.split(",")]
        if len(values) != len(TIER_FIELDS):
            raise ValueError
        return TierShares(**dict(zip(TIER_FIELDS, values, strict=True)))
    except (ValueError, ValidationError) as exc:
        raise argparse.ArgumentTypeError(
            "five per cents, Bronze to Diamond, e.g. 0.40,0.23,0.13,0.07,0.05, adding up to "
            f"less than 100 ({exc})"
        ) from None


def _tiers_table(history: TierHistory) -> str:
    lines = [f"set {history.set!r}: tier boundaries, the last in force"]
    for tiers in history.versions:
        bounds = "  ".join(
            f"{name} {'-' if value is None else f'{value:.4f}'}"
            for name, value in zip(
                ("Bronze", "Silver", "Gold", "Platinum", "Diamond"),
                tiers.boundaries.ranked(),
                strict=True,
            )
        )
        stale = " (stale: the references changed since)" if tiers.stale else ""
        lines.append(
            f"v{tiers.version} {tiers.source.value} ({tiers.basis.value}){stale}: {bounds}\n"
            f"    {tiers.description}"
        )
    return "\n".join(lines)


def _tiers(args: argparse.Namespace) -> int:
    """`seavl tiers show|fit|retier`: see services/gateway/tier_fit.py and retier.py."""
    import asyncio

    from rich.progress import Progress

    from services.common.clients import FilterClient
    from services.common.errors import ServiceError
    from services.common.reference_sets import TierHistory
    from services.gateway.config import GatewaySettings

    settings = GatewaySettings()
    command = f"seavl tiers {args.tiers_command}"

    async def show() -> str:
        filter_client = FilterClient(settings.filter)
        try:
            return _tiers_table(await filter_client.tier_history(args.set))
        finally:
            await filter_client.close()

    async def fit() -> str:
        from services.gateway.tier_fit import TierFit, background

        engine = _gateway_engine(command)
        job = TierFit.create(settings, args.batch_size)
        try:
            sample = background(args.source, settings, engine, args.shards, args.limit)
            with Progress(*_progress_columns("scoring the sample")) as progress:
                task = progress.add_task("fit", total=sample.total)
                fitted = await job.run(
                    args.set, sample, args.shares, lambda n: progress.advance(task, n)
                )
        finally:
            await job.close()
            engine.dispose()
        for line in fitted.unreadable:
            print(f"unreadable: {line}", file=sys.stderr)
        history = TierHistory(set=args.set, versions=[fitted.tiers])
        return f"{fitted.scored} images scored\n{_tiers_table(history)}"

    async def retier() -> str:
        from services.gateway import records
        from services.gateway.retier import in_force, retier

        engine = _gateway_engine(command)
        filter_client = FilterClient(settings.filter)
        try:
            info = await filter_client.get_set(args.set)
            version = in_force(info).version
            total = records.count_tiered_by_an_older_version(engine, args.set, version)
            with Progress(*_progress_columns("re-tiering")) as progress:
                task = progress.add_task("retier", total=total)
                done = await asyncio.to_thread(
                    retier, engine, info, args.batch_size, lambda n: progress.advance(task, n)
                )
        finally:
            await filter_client.close()
            engine.dispose()
        return (
            f"set {done.set!r}: {done.examined} images re-tiered by boundaries v{done.version} "
            f"({done.tier_changed} changed tier, {done.accepted_changed} changed verdict); "
            "scores unchanged"
        )

    run = {"show": show, "fit": fit, "retier": retier}[args.tiers_command]
    try:
        print(asyncio.run(run()))
    except ServiceError as exc:
        raise SystemExit(f"{command}: {exc.message}") from None
    return 0


def _reindex(namespace: str | None, batch_size: int) -> int:
    """`seavl dedup reindex`: see services/gateway/reindex.py."""
    import asyncio

    from rich.progress import Progress

    from services.common.errors import ServiceError
    from services.gateway.config import GatewaySettings
    from services.gateway.reindex import Rebuilt, Reindex

    engine = _gateway_engine("seavl dedup reindex")
    reindex = Reindex.create(GatewaySettings(), engine, namespace, batch_size)
    columns = _progress_columns("reindexing")

    async def run() -> Rebuilt:
        try:
            with Progress(*columns) as progress:
                task = progress.add_task("reindex", total=reindex.total())
                return await reindex.run(lambda n: progress.advance(task, n))
        finally:
            await reindex.close()

    try:
        rebuilt = asyncio.run(run())
    except ServiceError as exc:
        raise SystemExit(
            f"seavl dedup reindex: {exc.message}; the collection is partly rebuilt, run the "
            "command again"
        ) from None
    finally:
        engine.dispose()
    print(
        f"namespace {rebuilt.namespace!r}, model {rebuilt.model!r}: "
        f"{rebuilt.kept + rebuilt.duplicates} images inserted again ({rebuilt.kept} kept, "
        f"{rebuilt.duplicates} duplicates, {rebuilt.changed} decided differently than before); "
        f"{rebuilt.dropped} points dropped first; {len(rebuilt.unreadable)} images unreadable"
    )
    return 1 if rebuilt.unreadable else 0


def _service_token(token_file: Path) -> str:
    """The token in `token_file`, made there (readable by its owner only) on the first run."""
    try:
        token_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = token_file.read_text().strip()
        if len(token) < MIN_SERVICE_TOKEN_LENGTH:
            raise SystemExit(
                f"{token_file} holds no service token of {MIN_SERVICE_TOKEN_LENGTH} characters "
                "or more: delete it and a new one is made"
            ) from None
        return token
    token = secrets.token_hex(32)
    with os.fdopen(descriptor, "w") as output:
        output.write(token + "\n")
    return token


def _run_all(names: list[str], token_file: Path) -> int:
    """Starts each service as its own process (as in production) and stops them all together,
    on Ctrl-C or SIGTERM, or as soon as one of them exits. Every process gets the service token
    of `token_file`, so the internal services answer the gateway and each other only."""
    environment = {**os.environ, SERVICE_TOKEN_VARIABLE: _service_token(token_file)}
    stop = threading.Event()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        # set explicitly: a shell starting us in the background would have SIGINT ignored
        signal.signal(stop_signal, lambda *_: stop.set())
    processes = {
        name: subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=environment)
        for name in names
    }
    print(
        f"started {', '.join(names)} on 127.0.0.1; calls to the internal services need the "
        f"token in {token_file}; Ctrl-C stops them",
        flush=True,
    )
    status = 0
    try:
        while not stop.wait(0.5):
            exited = [(n, p.returncode) for n, p in processes.items() if p.poll() is not None]
            if exited:
                name, code = exited[0]
                print(f"{name} exited with {code}; stopping the others", flush=True)
                status = code or 1
                break
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
    return status


def _prepare_models(models_dir: Path | None, force: bool, unsafe_model: bool) -> None:
    from services.embedder.config import EmbedderSettings
    from services.embedder.prepare import (
        prepare_blazeface,
        prepare_default_model,
        prepare_face_model,
        prepare_unsafe_model,
    )

    models_dir = models_dir or EmbedderSettings().models_dir
    folder = prepare_default_model(models_dir, force=force)
    print(f"default model ready in {folder}")
    print(f"face detector ready in {prepare_blazeface(models_dir, force=force)} (Apache-2.0)")
    print(f"face detector ready in {prepare_face_model(models_dir, force=force)} (MIT)")
    if unsafe_model:
        path = prepare_unsafe_model(models_dir, force=force)
        print(f"unsafe-content model ready in {path.parent} (NudeNet, AGPL-3.0: see LICENSE)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="seavl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=sorted(SERVICES))
    run = commands.add_parser("run", help="run several services, each in its own process")
    run.add_argument(
        "services", nargs="*", metavar="SERVICE", help=f"any of {sorted(SERVICES)}; all if none"
    )
    run.add_argument(
        "--token-file",
        type=Path,
        default=DEFAULT_DATA_DIR / "service-token",
        help="the service token every process gets; made (mode 0600) if absent",
    )
    models = commands.add_parser("models", help="manage the models folder")
    models_commands = models.add_subparsers(dest="models_command", required=True)
    prepare = models_commands.add_parser(
        "prepare",
        help="convert the default model (EfficientNet-Lite0) and the face detectors to ONNX",
    )
    prepare.add_argument("--models-dir", type=Path, default=None)
    prepare.add_argument("--force", action="store_true", help="convert again even if up to date")
    prepare.add_argument(
        "--unsafe-model",
        action="store_true",
        help="also fetch NudeNet's unsafe-content detector from PyPI (AGPL-3.0; opt-in)",
    )
    keys = commands.add_parser("keys", help="API keys of the gateway")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser(
        "create", help="make a key; it is printed once, only its hash is kept"
    )
    create.add_argument("--role", choices=["contributor", "validator", "admin"], required=True)
    create.add_argument("--name", default="", help="who or what the key is for")
    users = commands.add_parser("users", help="accounts of people (the pages' sign-in)")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    user = users_commands.add_parser("create", help="make an account, e.g. the first admin")
    user.add_argument("--email", required=True)
    user.add_argument("--name", required=True)
    user.add_argument("--country", required=True, choices=[c.value for c in SeaCountry])
    user.add_argument("--role", choices=["contributor", "validator", "admin"], default="admin")
    user.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    database = commands.add_parser("db", help="the services' database schemas (Alembic migrations)")
    database_commands = database.add_subparsers(dest="db_command", required=True)
    for name, help_text in [
        ("upgrade", "bring every service's tables to this version (run before the services)"),
        ("current", "show each service's revision and whether it is up to date"),
        ("downgrade", "revert a service's tables to REVISION (base: none)"),
        ("revision", "write a revision of what a service's models changed (developers)"),
    ]:
        database_command = database_commands.add_parser(name, help=help_text)
        database_command.add_argument(
            "--service",
            dest="db_services",
            action="append",
            choices=["gateway", "filter", "dedup"],
            required=name in ("downgrade", "revision"),
            help="only this service's tables (repeatable; all if none)",
        )
        if name == "downgrade":
            database_command.add_argument("revision")
        if name == "revision":
            database_command.add_argument("-m", "--message", required=True)
    worker = commands.add_parser(
        "worker", help="an arq worker of the upload pipeline (needs REDIS_URL)"
    )
    worker.add_argument(
        "--check", action="store_true", help="health check: exit 0 when a worker is healthy"
    )
    queue = worker.add_mutually_exclusive_group()
    queue.add_argument(
        "--captions", action="store_true", help="a worker of the caption queue (VLM captions)"
    )
    queue.add_argument(
        "--crawls", action="store_true", help="a worker of the crawl queue (shards of a crawl)"
    )
    queue.add_argument(
        "--exports", action="store_true", help="a worker of the export queue (dataset exports)"
    )
    crawl = commands.add_parser("crawl", help="crawls: ingest an img2dataset output")
    crawl_commands = crawl.add_subparsers(dest="crawl_command", required=True)
    add_crawl_arguments(
        crawl_commands.add_parser("ingest", help="queue a crawl (one job per shard)")
    )
    add_export_arguments(
        commands.add_parser("export", help="write the curated set as a dataset (a job)")
    )
    dedup = commands.add_parser("dedup", help="the near-duplicate store")
    dedup_commands = dedup.add_subparsers(dest="dedup_command", required=True)
    reindex = dedup_commands.add_parser(
        "reindex",
        help="rebuild a namespace's store from the stored images (after the vector changed)",
    )
    reindex.add_argument(
        "--namespace", default=None, help="the dedup namespace (default: the pipeline's)"
    )
    reindex.add_argument(
        "--batch-size", type=int, default=32, choices=range(1, 65), metavar="1..64"
    )
    tiers = commands.add_parser("tiers", help="a reference set's tier boundaries")
    tiers_commands = tiers.add_subparsers(dest="tiers_command", required=True)
    show = tiers_commands.add_parser("show", help="every version of a set's boundaries")
    fit = tiers_commands.add_parser(
        "fit", help="fit `shares` boundaries on a background sample (a new version)"
    )
    retier = tiers_commands.add_parser(
        "retier", help="tier stored images again by the boundaries in force (scores unchanged)"
    )
    for tiers_command in (show, fit, retier):
        tiers_command.add_argument("set", help="the reference set")
    fit.add_argument(
        "--from",
        dest="source",
        required=True,
        help="namespace:NS (its stored images), crawl:ID (its source) or a folder / s3:// "
        "prefix of images or img2dataset output",
    )
    fit.add_argument("--limit", type=int, default=20_000, help="images at most (default 20000)")
    fit.add_argument("--shards", type=int, default=None, help="only the first N shards")
    fit.add_argument(
        "--shares",
        type=_shares,
        default=None,
        help="per cent per tier, Bronze to Diamond (default: the paper's CC3M row, "
        "0.40,0.23,0.13,0.07,0.05)",
    )
    for batched in (fit, retier):
        batched.add_argument(
            "--batch-size", type=int, default=32, choices=range(1, 1025), metavar="1..1024"
        )
    upload = commands.add_parser("upload", help="send a folder of images to the gateway")
    add_upload_arguments(upload)
    args = parser.parse_args(argv)
    if args.command == "serve":
        _serve(args.service)  # configures logging with the service's own level
        return
    configure_logging()
    if args.command == "run":
        unknown = set(args.services) - set(SERVICES)
        if unknown:
            parser.error(f"unknown services {sorted(unknown)}; choose from {sorted(SERVICES)}")
        raise SystemExit(_run_all(args.services or list(SERVICES), args.token_file))
    elif args.command == "models":
        _prepare_models(args.models_dir, args.force, args.unsafe_model)
    elif args.command == "keys":
        _create_key(args.role, args.name)
    elif args.command == "users":
        _create_user(args.email, args.name, args.country, args.role, args.password_stdin)
    elif args.command == "db":
        _database(
            args.db_command,
            args.db_services or [],
            getattr(args, "revision", ""),
            getattr(args, "message", ""),
        )
    elif args.command == "worker":
        kind = next((k for k in ("captions", "crawls", "exports") if getattr(args, k)), "images")
        raise SystemExit(_worker(args.check, kind))
    elif args.command == "crawl":
        raise SystemExit(run_crawl(args))
    elif args.command == "export":
        raise SystemExit(run_export(args))
    elif args.command == "dedup":
        raise SystemExit(_reindex(args.namespace, args.batch_size))
    elif args.command == "tiers":
        raise SystemExit(_tiers(args))
    elif args.command == "upload":
        raise SystemExit(run_upload(args))


if __name__ == "__main__":
    main()
