"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.embedder.config import EmbedderSettings
from services.embedder.prepare import prepare_default_model


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with the real default model, converted by the project's own code."""
    folder = tmp_path_factory.mktemp("models")
    prepare_default_model(folder)
    return folder


@pytest.fixture
def embedder_settings(models_dir: Path, tmp_path: Path) -> Callable[..., EmbedderSettings]:
    """Settings for an embedder on the real default model; keyword arguments override fields."""

    def make(**overrides: Any) -> EmbedderSettings:
        fields: dict[str, Any] = {"models_dir": models_dir, "storage_dir": tmp_path / "objects"}
        fields.update(overrides)
        return EmbedderSettings(**fields)

    return make
