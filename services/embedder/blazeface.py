"""MediaPipe's BlazeFace face detectors (Apache-2.0), as ONNX, for the privacy pass.

Two single-shot detectors from the `mediapipe` wheel on PyPI, rewritten as ONNX by `seavl
models prepare` (services/embedder/tflite_onnx.py): the full-range one (192 px input, faces
from a few pixels to most of the frame, trained for faces up to 5 m from the camera) and the
short-range one (128 px, faces close to the camera, where the full-range one is weakest). Both
look at the whole image once, letterboxed, so a face costs the same to find wherever it is and
however many there are: about a third of MTCNN's image pyramid on a CPU (bench/privacy_quality.py).
Decoded as MediaPipe decodes them: SSD anchors, sigmoid scores, weighted non-maximum
suppression (overlapping boxes averaged by score instead of dropped).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from services.embedder.tflite_onnx import TfliteToOnnx

FloatArray = npt.NDArray[np.float32]
INPUT_NAME = "pixels"
REGRESSORS = "regressors"
SCORES = "scores"
SCORE_CLIP = 100.0  # MediaPipe's score_clipping_thresh, before the sigmoid
NMS_OVERLAP = 0.3  # MediaPipe's min_suppression_threshold for faces


@dataclass(frozen=True)
class BlazeFaceModel:
    """One of the two detectors: its file in the wheel, the input size it was trained at and
    its anchor layout (MediaPipe's SsdAnchorsCalculator options: strides, and anchors per cell
    at each stride)."""

    name: str
    wheel_path: str
    size: int
    anchors_per_stride: tuple[tuple[int, int], ...]

    @property
    def onnx_file(self) -> str:
        return f"{self.name}.onnx"

    @property
    def multiple(self) -> int:
        """What an input's sides are rounded up to: the full-range graph's largest stride (32;
        the short-range one would take 16), one rule for both."""
        return 32

    def anchors(self, height: int, width: int) -> FloatArray:
        """(N, 2) anchor centres in pixels of a height x width input, in the outputs' order
        (per head, row by row, the head's anchors of a cell together); each anchor is 1 x 1.
        Made once per input size (read-only)."""
        return _anchors(self, height, width)


@functools.lru_cache(maxsize=64)
def _anchors(model: BlazeFaceModel, height: int, width: int) -> FloatArray:
    centres = []
    for stride, per_cell in model.anchors_per_stride:
        ys = (np.arange(height // stride, dtype=np.float32) + 0.5) * stride
        xs = (np.arange(width // stride, dtype=np.float32) + 0.5) * stride
        grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
        cell_centres = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
        centres.append(np.repeat(cell_centres, per_cell, axis=0))
    anchors = np.concatenate(centres)
    anchors.flags.writeable = False  # shared by every call at this size
    return anchors


FULL_RANGE = BlazeFaceModel(
    "full-range",
    "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    192,
    ((4, 1),),
)
SHORT_RANGE = BlazeFaceModel(
    "short-range",
    "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    128,
    ((8, 2), (16, 6)),
)
MODELS = (FULL_RANGE, SHORT_RANGE)


def convert_blazeface(tflite_bytes: bytes, model: BlazeFaceModel) -> onnx.ModelProto:
    """One detector's .tflite as an ONNX graph: `pixels` (N, 3, S, S) in [-1, 1] to `regressors`
    (N, anchors, 16) and `scores` (N, anchors, 1) logits."""
    converted = TfliteToOnnx(tflite_bytes).convert(
        lambda last_dims: [REGRESSORS if n == 16 else SCORES for n in last_dims],
        f"blazeface-{model.name}",
    )
    values = {o.name: o.type.tensor_type.shape.dim[-1].dim_value for o in converted.graph.output}
    if values != {REGRESSORS: 16, SCORES: 1}:
        raise ValueError(f"{model.name}: unexpected outputs {values}")
    return converted


def weighted_suppression(detections: FloatArray, overlap: float) -> FloatArray:
    """MediaPipe's weighted NMS over (N, 5) rows of x0, y0, x1, y1, score: each best remaining
    box takes the score-weighted mean of the boxes overlapping it by IoU > `overlap` (itself
    included) and keeps its own score."""
    remaining = detections[np.argsort(-detections[:, 4], kind="stable")]
    kept = []
    while len(remaining):
        top = remaining[0]
        width = np.minimum(remaining[:, 2], top[2]) - np.maximum(remaining[:, 0], top[0])
        height = np.minimum(remaining[:, 3], top[3]) - np.maximum(remaining[:, 1], top[1])
        inter = np.clip(width, 0, None) * np.clip(height, 0, None)
        areas = (remaining[:, 2] - remaining[:, 0]) * (remaining[:, 3] - remaining[:, 1])
        union = areas + areas[0] - inter
        merge = inter / np.maximum(union, 1e-9) > overlap
        merge[0] = True
        weights = remaining[merge, 4:5]
        blended = top.copy()
        blended[:4] = (remaining[merge, :4] * weights).sum(axis=0) / weights.sum()
        kept.append(blended)
        remaining = remaining[~merge]
    return np.array(kept, dtype=np.float32).reshape(-1, 5)


class BlazeFaceDetector:
    """Both detectors over onnxruntime sessions; no state between calls, safe from any thread.

    Each looks at the whole image once, scaled to `long_sides[name]` on its long side (the
    short side rounded up to the graph's multiple, padded black): the full-range detector at
    more than its trained 192 px (the embedder's `full_range_side`: the bigger, the smaller
    the faces it finds, at the square of the cost), and the short-range one at its own 128 px,
    for faces close up."""

    def __init__(self, sessions: dict[str, Any], long_sides: dict[str, int], min_score: float):
        self._sessions = sessions
        self._long_sides = long_sides
        self.min_score = min_score

    @classmethod
    def from_folder(
        cls,
        folder: Path,
        providers: list[str],
        intra_op_threads: int,
        min_score: float,
        full_range_side: int = FULL_RANGE.size,
    ) -> BlazeFaceDetector:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        sessions = {
            model.name: ort.InferenceSession(
                str(folder / model.onnx_file), sess_options=options, providers=providers
            )
            for model in MODELS
        }
        long_sides = {FULL_RANGE.name: full_range_side, SHORT_RANGE.name: SHORT_RANGE.size}
        return cls(sessions, long_sides, min_score)

    def _run(self, model: BlazeFaceModel, image: npt.NDArray[np.uint8]) -> FloatArray:
        """(N, 5) detections above `min_score` in the image's pixels, before suppression."""
        height, width = image.shape[:2]
        scale = self._long_sides[model.name] / max(height, width)
        new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
        step = model.multiple
        input_height, input_width = (-(-side // step) * step for side in (new_height, new_width))
        resized = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_AREA)
        canvas = np.full((input_height, input_width, 3), -1.0, dtype=np.float32)  # black
        canvas[:new_height, :new_width] = resized / 127.5 - 1.0
        regressors, logits = self._sessions[model.name].run(
            [REGRESSORS, SCORES], {INPUT_NAME: canvas.transpose(2, 0, 1)[None].copy()}
        )
        anchors = model.anchors(input_height, input_width)
        if len(anchors) != regressors.shape[1]:
            raise ValueError(f"{model.name}: {regressors.shape[1]} outputs, {len(anchors)} anchors")
        clipped = np.clip(logits[0, :, 0], -SCORE_CLIP, SCORE_CLIP)
        scores = 0.5 * (1.0 + np.tanh(0.5 * clipped))  # the sigmoid, without overflow
        hits = scores >= self.min_score
        # centre offsets and sizes in the input's pixels, as MediaPipe decodes them
        centre = regressors[0, hits, :2] + anchors[hits]
        half = regressors[0, hits, 2:4] / 2
        found = np.concatenate(
            [(centre - half) / scale, (centre + half) / scale, scores[hits, None]], axis=1
        )
        return found.astype(np.float32)

    def detect(self, image: npt.NDArray[np.uint8]) -> FloatArray:
        """(N, 5) faces in an (H, W, 3) RGB image: corners clipped to it, and a score."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        found = np.concatenate([self._run(model, image) for model in MODELS])
        faces = weighted_suppression(found, NMS_OVERLAP)
        height, width = image.shape[:2]
        faces[:, [0, 2]] = np.clip(faces[:, [0, 2]], 0, width)
        faces[:, [1, 3]] = np.clip(faces[:, [1, 3]], 0, height)
        return faces[(faces[:, 2] > faces[:, 0]) & (faces[:, 3] > faces[:, 1])]
