"""Model manifests, the presets for the paper's encoders, and the registry of the models folder.

A model is a folder `<models_dir>/<name>/` holding an ONNX file and `manifest.json`. A manifest
may name a preset (`{"preset": "clip-vit-b-32"}`) and override any of its fields, so that
dropping an export of CLIP, SigLIP or Nomic Embed Vision into the folder takes two lines of JSON.
"""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


class Pooling(StrEnum):
    """How the embedding is read from the output tensor."""

    NONE = "none"  # the output is already (batch, dim)
    CLS = "cls"  # (batch, tokens, dim): the first token, as Nomic Embed Vision does
    MEAN = "mean"  # (batch, tokens, dim) or (batch, dim, h, w): the mean over tokens / positions


class ResizeMode(StrEnum):
    SHORT_SIDE_THEN_CENTER_CROP = "short_side_then_center_crop"
    SQUASH = "squash"  # straight to input_size x input_size, as SigLIP's processor does


class Interpolation(StrEnum):
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


class ModelManifest(BaseModel):
    """Everything needed to turn pixels into this model's embedding."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    preset: str | None = None
    description: str = ""
    onnx_file: str = "model.onnx"
    input_name: str = "pixel_values"
    input_size: int = Field(gt=0, description="the square crop fed to the model")
    resize_short_side: int | None = Field(default=None, gt=0)
    resize_mode: ResizeMode = ResizeMode.SHORT_SIDE_THEN_CENTER_CROP
    interpolation: Interpolation = Interpolation.BICUBIC
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embedding_output: str
    pooling: Pooling = Pooling.NONE
    embedding_dim: int = Field(gt=0)
    normalize: bool = True
    logits_output: str | None = None
    labels_file: str | None = None

    @model_validator(mode="after")
    def _std_is_positive(self) -> ModelManifest:
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self

    @property
    def resize_target(self) -> int:
        return self.resize_short_side or self.input_size


PRESETS: dict[str, dict[str, Any]] = {
    "clip-vit-b-32": {
        "description": "OpenAI CLIP ViT-B/32 image tower with projection (paper: dedup eps 0.95)",
        "input_size": 224,
        "resize_short_side": 224,
        "interpolation": "bicubic",
        "mean": OPENAI_CLIP_MEAN,
        "std": OPENAI_CLIP_STD,
        "embedding_output": "image_embeds",
        "pooling": "none",
        "embedding_dim": 512,
    },
    "siglip-base-224": {
        "description": "SigLIP base patch16 224 vision tower (paper: dedup eps 0.85)",
        "input_size": 224,
        "resize_mode": "squash",
        "interpolation": "bicubic",
        "mean": HALF,
        "std": HALF,
        "embedding_output": "pooler_output",
        "pooling": "none",
        "embedding_dim": 768,
    },
    "nomic-embed-vision-v1.5": {
        "description": "Nomic Embed Vision v1.5, CLS token of the last hidden state (eps 0.95)",
        "input_size": 224,
        "resize_short_side": 224,
        "interpolation": "bicubic",
        "mean": OPENAI_CLIP_MEAN,
        "std": OPENAI_CLIP_STD,
        "embedding_output": "last_hidden_state",
        "pooling": "cls",
        "embedding_dim": 768,
    },
    "efficientnet-lite0": {
        "description": "EfficientNet-Lite0 (ImageNet), pooled 1280-d features; the offline default",
        "input_size": 224,
        "resize_short_side": 256,
        "interpolation": "bilinear",
        "mean": HALF,
        "std": HALF,
        "embedding_output": "features",
        "pooling": "none",
        "embedding_dim": 1280,
        "logits_output": "logits",
        "labels_file": "labels.json",
    },
}

PRESETS["siglip-base-384"] = {
    **PRESETS["siglip-base-224"],
    "description": "SigLIP base patch16 384 vision tower (paper: dedup eps 0.85)",
    "input_size": 384,
}


class ManifestError(ValueError):
    """A manifest that cannot be used, with the reason."""


def resolve_manifest(raw: dict[str, Any], default_name: str) -> ModelManifest:
    """Applies the named preset (if any) under the manifest's own fields."""
    preset_name = raw.get("preset")
    fields: dict[str, Any] = {}
    if preset_name is not None:
        if preset_name not in PRESETS:
            raise ManifestError(f"unknown preset {preset_name!r}; known: {sorted(PRESETS)}")
        fields.update(PRESETS[preset_name])
    fields.update(raw)
    fields.setdefault("name", default_name)
    try:
        return ModelManifest.model_validate(fields)
    except ValidationError as exc:
        raise ManifestError(f"invalid manifest for {default_name!r}: {exc}") from exc


def write_manifest(folder: Path, manifest: ModelManifest) -> Path:
    path = folder / MANIFEST_FILE
    path.write_text(manifest.model_dump_json(indent=2, exclude_none=True) + "\n", encoding="utf-8")
    return path


class RegisteredModel(BaseModel):
    manifest: ModelManifest
    folder: Path

    @property
    def onnx_path(self) -> Path:
        return self.folder / self.manifest.onnx_file

    @property
    def labels_path(self) -> Path | None:
        if self.manifest.labels_file is None:
            return None
        return self.folder / self.manifest.labels_file


def discover_models(models_dir: Path) -> dict[str, RegisteredModel]:
    """Every `<models_dir>/*/manifest.json` whose ONNX file exists; bad folders are logged."""
    found: dict[str, RegisteredModel] = {}
    if not models_dir.is_dir():
        return found
    for manifest_path in sorted(models_dir.glob(f"*/{MANIFEST_FILE}")):
        folder = manifest_path.parent
        try:
            raw = json.loads(manifest_path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ManifestError("the manifest must be a JSON object")
            manifest = resolve_manifest(raw, default_name=folder.name)
        except (json.JSONDecodeError, ManifestError) as exc:
            logger.error("skipping model folder %s: %s", folder, exc)
            continue
        model = RegisteredModel(manifest=manifest, folder=folder)
        if not model.onnx_path.is_file():
            logger.error("skipping model %s: %s does not exist", manifest.name, model.onnx_path)
            continue
        if manifest.name in found:
            logger.error("skipping %s: model name %s is taken", folder, manifest.name)
            continue
        found[manifest.name] = model
    return found
