"""MediaPipe's BlazeFace, rewritten as ONNX from the `mediapipe` wheel, on real photographs.

The models come from the tests' models folder (conftest: `prepare_blazeface`, its wheel kept in
var/packages). The full-range detector's weights are stored sparse and float16 in the .tflite
file, so a wrong densify or dequantize would show here as a face not found or found where there
is none.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from skimage import data

from services.embedder.blazeface import (
    FULL_RANGE,
    MODELS,
    SHORT_RANGE,
    BlazeFaceDetector,
    weighted_suppression,
)
from services.embedder.config import DetectionSettings, FaceModel, face_model_dir
from services.embedder.prepare import MEDIAPIPE_WHEEL, prepare_blazeface
from tests.helpers import ASTRONAUT_FACE

CPU = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def detector(models_dir: Path) -> BlazeFaceDetector:
    """As the embedder runs it by default."""
    return BlazeFaceDetector.from_folder(
        face_model_dir(models_dir, FaceModel.BLAZEFACE),
        CPU,
        1,
        min_score=0.6,
        full_range_side=DetectionSettings().full_range_side,
    )


def iou(box: npt.NDArray[np.float32], other: tuple[float, ...]) -> float:
    width = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    height = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    inter = width * height
    union = (box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1])
    return float(inter / (union - inter))


def test_the_graphs_take_any_batch_and_size(models_dir: Path) -> None:
    """Written for the trained size, the graphs run at others too (the full-range one at 320
    px by default), with one output row per anchor of that size."""
    folder = face_model_dir(models_dir, FaceModel.BLAZEFACE)
    for model in MODELS:
        graph = onnx.load(folder / model.onnx_file)
        onnx.checker.check_model(graph)
        (pixels,) = graph.graph.input
        dims = [d.dim_param or d.dim_value for d in pixels.type.tensor_type.shape.dim]
        assert dims == ["batch", 3, "height", "width"]
        session = ort.InferenceSession(str(folder / model.onnx_file), providers=CPU)
        for height, width in ((model.size, model.size), (2 * model.size, model.size + 32)):
            batch = np.zeros((2, 3, height, width), dtype=np.float32)
            regressors, scores = session.run(["regressors", "scores"], {"pixels": batch})
            anchors = len(model.anchors(height, width))
            assert regressors.shape == (2, anchors, 16) and scores.shape == (2, anchors, 1)
    assert "Apache License" in (folder / "LICENSE").read_text()


def test_anchor_layouts_are_mediapipes() -> None:
    """In pixels of the input: the full-range one a 48 x 48 grid at 192 px; the short-range one
    two anchors per cell of a 16 x 16 grid, then six per cell of an 8 x 8 one, at 128 px."""
    full, short = FULL_RANGE.anchors(192, 192), SHORT_RANGE.anchors(128, 128)
    assert full.shape == (48 * 48, 2) and short.shape == (16 * 16 * 2 + 8 * 8 * 6, 2)
    assert np.allclose(full[0], [2, 2]) and np.allclose(full[1], [6, 2])
    assert np.allclose(full[-1], [190, 190])
    assert np.allclose(short[0], short[1]) and not np.allclose(short[1], short[2])
    assert np.allclose(short[512:518], [4 * 2, 4 * 2])
    assert FULL_RANGE.anchors(96, 128).shape == (24 * 32, 2)


def test_finds_the_astronauts_face(detector: BlazeFaceDetector) -> None:
    image: npt.NDArray[np.uint8] = data.astronaut()
    faces = detector.detect(image)
    assert len(faces) == 1, faces
    assert iou(faces[0], ASTRONAUT_FACE) >= 0.4, faces
    assert faces[0][4] >= 0.6


def test_finds_a_small_face_anywhere_in_a_larger_picture(detector: BlazeFaceDetector) -> None:
    """The astronaut's face shrunk to about 5% of a 1280-px-wide grey picture, off centre."""
    face = data.astronaut()[40:200, 160:300]
    small = cv2.resize(face, (70, 80), interpolation=cv2.INTER_AREA)
    canvas = np.full((720, 1280, 3), 128, dtype=np.uint8)
    canvas[500 : 500 + small.shape[0], 1000 : 1000 + small.shape[1]] = small
    faces = detector.detect(canvas)
    assert len(faces) == 1, faces
    x0, y0, x1, y1 = faces[0][:4]
    assert 1000 <= (x0 + x1) / 2 <= 1000 + small.shape[1]
    assert 500 <= (y0 + y1) / 2 <= 500 + small.shape[0]


@pytest.mark.parametrize("photo", ["coffee", "chelsea", "rocket"])
def test_no_face_in_photos_without_people(detector: BlazeFaceDetector, photo: str) -> None:
    image: npt.NDArray[np.uint8] = getattr(data, photo)()
    assert len(detector.detect(image)) == 0


def test_tiny_and_wrong_images(detector: BlazeFaceDetector) -> None:
    assert len(detector.detect(np.zeros((8, 8, 3), dtype=np.uint8))) == 0
    assert len(detector.detect(np.full((30, 500, 3), 200, dtype=np.uint8))) == 0
    with pytest.raises(ValueError, match="RGB"):
        detector.detect(np.zeros((64, 64), dtype=np.uint8))


def test_weighted_suppression_averages_overlapping_boxes_by_score() -> None:
    boxes = np.array(
        [[0, 0, 10, 10, 0.9], [1, 1, 11, 11, 0.3], [50, 50, 60, 60, 0.7]], dtype=np.float32
    )
    kept = weighted_suppression(boxes, 0.3)
    assert kept.shape == (2, 5)
    assert np.allclose(kept[0], [0.25, 0.25, 10.25, 10.25, 0.9])
    assert np.allclose(kept[1], boxes[2])
    assert weighted_suppression(np.zeros((0, 5), dtype=np.float32), 0.3).shape == (0, 5)


def test_a_wheel_whose_detector_differs_is_refused(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with zipfile.ZipFile(downloads / MEDIAPIPE_WHEEL, "w") as wheel:
        for model in MODELS:
            wheel.writestr(model.wheel_path, b"not the model")
    models = tmp_path / "models"
    with pytest.raises(RuntimeError, match="not the one expected"):
        prepare_blazeface(models, downloads=downloads)
    folder = face_model_dir(models, FaceModel.BLAZEFACE)
    assert not folder.exists() or not any(folder.glob("*.onnx"))
