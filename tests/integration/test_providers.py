"""Execution providers on a machine without CUDA (this one): CPU fallback, or a loud failure."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import pytest

from services.embedder.app import create_app
from services.embedder.config import EmbedderSettings, RuntimeSettings
from services.embedder.models import discover_models
from services.embedder.sessions import GPU_PROVIDERS, LoadedModel, ModelLoadError

SettingsFactory = Callable[..., EmbedderSettings]


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


def test_the_gpu_build_lists_cuda_even_without_a_device() -> None:
    """Why the provider in use is read back from the session rather than trusted from this list."""
    available = set(ort.get_available_providers())
    assert "CPUExecutionProvider" in available
    assert available & GPU_PROVIDERS, "onnxruntime-gpu is the declared dependency"
