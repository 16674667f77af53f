"""Execution providers on a machine without CUDA (this one): CPU fallback, or a loud failure."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import onnxruntime as ort
import pytest
from packaging.requirements import Requirement

from services.embedder.app import create_app
from services.embedder.config import EmbedderSettings, RuntimeSettings
from services.embedder.models import discover_models
from services.embedder.sessions import GPU_PROVIDERS, LoadedModel, ModelLoadError

SettingsFactory = Callable[..., EmbedderSettings]
ROOT = Path(__file__).resolve().parents[2]


def test_without_a_gpu_the_cpu_provider_serves(models_dir: Path) -> None:
    model = LoadedModel(discover_models(models_dir)["efficientnet-lite0"], RuntimeSettings())
    assert model.provider == "CPUExecutionProvider"
    assert "CUDAExecutionProvider" in RuntimeSettings().providers  # it was asked for first


def test_require_gpu_fails_start_up_loudly(embedder_settings: SettingsFactory) -> None:
    app = create_app(embedder_settings(runtime={"require_gpu": True}))

    async def start_up() -> None:
        async with app.router.lifespan_context(app):
            raise AssertionError("start-up should have failed")

    with pytest.raises(ModelLoadError, match="a GPU is required"):
        asyncio.run(start_up())


def test_require_gpu_with_only_cpu_providers_configured(models_dir: Path) -> None:
    runtime = RuntimeSettings(providers=["CPUExecutionProvider"], require_gpu=True)
    with pytest.raises(ModelLoadError, match="has none of"):
        LoadedModel(discover_models(models_dir)["efficientnet-lite0"], runtime)


def test_the_build_installed_is_the_one_declared_for_this_platform() -> None:
    """pyproject asks for onnxruntime-gpu where it has wheels and onnxruntime elsewhere; the GPU
    build lists CUDA even without a device, which is why the provider in use is read back from
    the session rather than trusted from this list."""
    declared = [
        Requirement(line)
        for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]["embedder"]
    ]
    [runtime] = [
        r.name
        for r in declared
        if r.name in ("onnxruntime", "onnxruntime-gpu")
        and (r.marker is None or r.marker.evaluate())
    ]
    assert metadata.distribution(runtime)  # installed, whatever its import name
    available = set(ort.get_available_providers())
    assert "CPUExecutionProvider" in available
    assert bool(available & GPU_PROVIDERS) == (runtime == "onnxruntime-gpu"), available
