"""MTCNN face detection: three ONNX graphs written with onnx.helper, and its pipeline in numpy.

The weights are those of the PyPI wheel `mtcnn==1.0.0` (MIT, ipazc/mtcnn): Keras weight lists
saved with joblib and lz4. They are read here with a restricted unpickler (no joblib, no
TensorFlow, no code run from the file) and laid into graphs that reproduce the package's Keras
networks layer for layer. The detector follows the package's stages code (`mtcnn/stages/*.py`,
`mtcnn/utils/*.py`) step for step, including its quirks, so its weights see what they were
trained on: images are not transposed, pixels are normalised as (x - 127.5) / 128 (inside the
graphs here), the pyramid is resized by area (OpenCV's, within 0.02 grey levels of the
TensorFlow area method the package uses, and 6 times faster), crops are taken with
`tf.image.crop_and_resize` semantics (bilinear, zeros of the normalised image outside it), and its
non-maximum suppression drops a box that overlaps any better box, suppressed or not.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import cv2
import lz4.frame  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from services.embedder.onnx_graph import GraphWriter, Shape
from services.embedder.sessions import (
    CPU_PROVIDER,
    CUDA_PROVIDERS,
    cuda_unavailable_reason,
    select_providers,
)

NETWORK_NAMES = ("pnet", "rnet", "onet")
WEIGHTS_FOLDER_IN_WHEEL = "mtcnn/assets/weights"
INPUT_NAME = "pixels"
BOX_REGRESSION_OUTPUT = "box_regression"
LANDMARKS_OUTPUT = "landmarks"
# Softmax over (not a face, a face), as the Keras networks give it.
PROBABILITIES_OUTPUT = "probabilities"
PIXEL_MEAN = 127.5
PIXEL_SCALE = 1.0 / 128.0

# PNet sees 12x12 windows at a stride of 2; its box regression is relative to that window.
PNET_CELL_SIZE = 12
PNET_STRIDE = 2
# The smallest pyramid level that gives PNet one output cell (its 'same' pooling pads the end).
PNET_MIN_INPUT = 11
RNET_INPUT_SIZE = 24
ONET_INPUT_SIZE = 48
# Crops reaching past the image get this raw value, which the graphs normalise to 0, as
# tf.image.crop_and_resize fills the package's normalised image with zeros.
CROP_FILL_VALUE = PIXEL_MEAN
# Rows of the suppression matrix computed at once: bounds memory on busy pictures.
NMS_BLOCK = 1024

OverlapMethod = Literal["union", "min"]
Weights = list[npt.NDArray[np.float32]]
FloatArray = npt.NDArray[np.float32]
BoxArray = npt.NDArray[np.float64]

# The Keras weight lists, in `model.set_weights` order: kernels HWIO, dense kernels (in, out),
# PReLU slopes (1, 1, C) when shared over height and width, (C,) after a dense layer.
EXPECTED_SHAPES: dict[str, tuple[tuple[int, ...], ...]] = {
    "pnet": (
        (3, 3, 3, 10), (10,), (1, 1, 10),
        (3, 3, 10, 16), (16,), (1, 1, 16),
        (3, 3, 16, 32), (32,), (1, 1, 32),
        (1, 1, 32, 4), (4,),
        (1, 1, 32, 2), (2,),
    ),
    "rnet": (
        (3, 3, 3, 28), (28,), (1, 1, 28),
        (3, 3, 28, 48), (48,), (1, 1, 48),
        (2, 2, 48, 64), (64,), (1, 1, 64),
        (576, 128), (128,), (128,),
        (128, 4), (4,),
        (128, 2), (2,),
    ),
    "onet": (
        (3, 3, 3, 32), (32,), (1, 1, 32),
        (3, 3, 32, 64), (64,), (1, 1, 64),
        (3, 3, 64, 64), (64,), (1, 1, 64),
        (2, 2, 64, 128), (128,), (1, 1, 128),
        (1152, 256), (256,), (256,),
        (256, 4), (4,),
        (256, 10), (10,),
        (256, 2), (2,),
    ),
}  # fmt: skip


class MtcnnWeightsError(ValueError):
    """The weight files are missing, or not the joblib arrays of mtcnn 1.0.0's networks."""


# ---------------------------------------------------------------------------------------------
# Reading the weights


class _JoblibArray:
    """Stands in for joblib's NumpyArrayWrapper: its pickled state describes the raw array bytes
    that follow it in the stream, which joblib reads there and so must we."""

    stream: IO[bytes]

    def __init__(self) -> None:
        self.array: npt.NDArray[Any] | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.array = _read_raw_array(self.stream, state)


def _read_raw_array(stream: IO[bytes], state: dict[str, Any]) -> npt.NDArray[Any]:
    dtype = state.get("dtype")
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise MtcnnWeightsError(f"unsupported array dtype {dtype!r}")
    shape = tuple(int(n) for n in state.get("shape", ()))
    if state.get("numpy_array_alignment_bytes") is not None:
        padding = stream.read(1)
        if len(padding) != 1:
            raise MtcnnWeightsError("file ends before an array")
        stream.read(padding[0])
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = stream.read(size)
    if len(raw) != size:
        raise MtcnnWeightsError("an array is truncated")
    order: Literal["C", "F"] = "F" if state.get("order") == "F" else "C"
    flat = np.frombuffer(raw, dtype=dtype)
    return np.array(flat.reshape(shape, order=order), dtype=dtype.newbyteorder("="), copy=True)


class _WeightsUnpickler(pickle.Unpickler):
    """Resolves only the names a joblib-saved list of numpy arrays uses, so a file cannot run
    code. The C unpickler reads exactly what it needs, so the stream is at an array's bytes when
    the array's placeholder gets its state."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(stream)
        self._array_type = type("_BoundJoblibArray", (_JoblibArray,), {"stream": stream})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("joblib.numpy_pickle", "NumpyArrayWrapper"):
            return self._array_type
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray  # named as the array's class, never called
        raise MtcnnWeightsError(f"refusing to load {module}.{name} from a weights file")


def _parse_weight_file(name: str, compressed: bytes) -> Weights:
    try:
        stream = io.BytesIO(lz4.frame.decompress(compressed))
    except RuntimeError as exc:
        raise MtcnnWeightsError(f"{name}.lz4 is not an lz4 frame") from exc
    try:
        loaded = _WeightsUnpickler(stream).load()
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError) as exc:
        raise MtcnnWeightsError(f"{name}.lz4 is not a joblib list of arrays: {exc}") from exc
    if not isinstance(loaded, list) or not all(isinstance(a, _JoblibArray) for a in loaded):
        raise MtcnnWeightsError(f"{name}.lz4 does not hold a list of arrays")
    arrays = [np.asarray(a.array, dtype=np.float32) for a in loaded]
    expected = EXPECTED_SHAPES[name]
    shapes = tuple(a.shape for a in arrays)
    if shapes != expected:
        raise MtcnnWeightsError(f"{name} weights have shapes {shapes}, expected {expected}")
    return arrays


def load_mtcnn_weights(wheel_or_dir: Path) -> dict[str, Weights]:
    """The three networks' Keras weight lists, from the mtcnn wheel or a folder holding
    `{pnet,rnet,onet}.lz4` (directly, or under `mtcnn/assets/weights/` as unpacked)."""
    compressed: dict[str, bytes] = {}
    if wheel_or_dir.is_file():
        if not zipfile.is_zipfile(wheel_or_dir):
            raise MtcnnWeightsError(f"{wheel_or_dir} is neither a folder nor a wheel")
        with zipfile.ZipFile(wheel_or_dir) as wheel:
            for name in NETWORK_NAMES:
                member = f"{WEIGHTS_FOLDER_IN_WHEEL}/{name}.lz4"
                try:
                    compressed[name] = wheel.read(member)
                except KeyError as exc:
                    raise MtcnnWeightsError(f"{wheel_or_dir} has no {member}") from exc
    elif wheel_or_dir.is_dir():
        for name in NETWORK_NAMES:
            candidates = [
                wheel_or_dir / f"{name}.lz4",
                wheel_or_dir / WEIGHTS_FOLDER_IN_WHEEL / f"{name}.lz4",
            ]
            found = next((path for path in candidates if path.is_file()), None)
            if found is None:
                raise MtcnnWeightsError(f"no {name}.lz4 in {wheel_or_dir}")
            compressed[name] = found.read_bytes()
    else:
        raise MtcnnWeightsError(f"{wheel_or_dir} does not exist")
    return {name: _parse_weight_file(name, data) for name, data in compressed.items()}


# ---------------------------------------------------------------------------------------------
# Writing the graphs


class _KerasWriter(GraphWriter):
    """Lays the Keras weight list into ONNX nodes in `set_weights` order; each layer returns the
    name of its output."""

    def __init__(self, network: str, weights: Weights) -> None:
        super().__init__()
        self.network = network
        self._weights = list(weights)
        self._next_weight = 0

    def _take(self, shape: tuple[int, ...]) -> FloatArray:
        if self._next_weight >= len(self._weights):
            raise MtcnnWeightsError(f"{self.network}: too few weight arrays")
        array = self._weights[self._next_weight]
        self._next_weight += 1
        if array.shape != shape:
            raise MtcnnWeightsError(f"{self.network}: weight of shape {array.shape}, want {shape}")
        return array

    def _named(self, prefix: str, array: npt.NDArray[Any]) -> str:
        return self._constant(self._name(prefix), array)

    def finished(self) -> None:
        if self._next_weight != len(self._weights):
            raise MtcnnWeightsError(f"{self.network}: weight arrays left over")

    def normalise(self, x: str) -> str:
        """(x - 127.5) / 128, as the package's `normalize_images`; 1/128 is exact in float32."""
        mean = self._named("pixel_mean", np.array(PIXEL_MEAN, dtype=np.float32))
        scale = self._named("pixel_scale", np.array(PIXEL_SCALE, dtype=np.float32))
        return self._node("Mul", [self._node("Sub", [x, mean]), scale])

    def conv(
        self, x: str, in_channels: int, out_channels: int, kernel: int, output: str | None = None
    ) -> str:
        """Keras Conv2D, padding 'valid', stride 1: its HWIO kernel becomes ONNX's OIHW."""
        hwio = self._take((kernel, kernel, in_channels, out_channels))
        bias = self._take((out_channels,))
        w = self._named("conv_weight", hwio.transpose(3, 2, 0, 1))
        b = self._named("conv_bias", bias)
        return self._node("Conv", [x, w, b], output, kernel_shape=[kernel, kernel], strides=[1, 1])

    def prelu(self, x: str, channels: int, spatial: bool) -> str:
        """Keras PReLU: one slope per channel, shared over height and width after a conv."""
        if spatial:
            slope = self._take((1, 1, channels)).reshape(channels, 1, 1)
        else:
            slope = self._take((channels,))
        return self._node("PRelu", [x, self._named("prelu_slope", slope)])

    def max_pool(self, x: str, size: int, stride: int, same: bool) -> str:
        """Keras MaxPooling2D; its 'same' puts the odd padding at the end, as SAME_UPPER does."""
        return self._node(
            "MaxPool",
            [x],
            kernel_shape=[size, size],
            strides=[stride, stride],
            auto_pad="SAME_UPPER" if same else "VALID",
        )

    def flatten_permuted(self, x: str) -> str:
        """Keras Permute((2, 1, 3)) then Flatten on NHWC: the features in (W, H, C) order."""
        return self._node("Flatten", [self._node("Transpose", [x], perm=[0, 3, 2, 1])], axis=1)

    def dense(self, x: str, in_features: int, out_features: int, output: str | None = None) -> str:
        kernel = self._take((in_features, out_features))
        bias = self._take((out_features,))
        w = self._named("dense_weight", kernel)
        b = self._named("dense_bias", bias)
        return self._node("Gemm", [x, w, b], output)

    def softmax(self, x: str, axis: int, output: str) -> str:
        return self._node("Softmax", [x], output, axis=axis)

    def model(self, input_shape: Shape, outputs: list[tuple[str, Shape]]) -> onnx.ModelProto:
        self.finished()
        return self._model(f"mtcnn_{self.network}", [(INPUT_NAME, input_shape)], outputs)


def build_pnet(weights: Weights) -> onnx.ModelProto:
    """Fully convolutional: (N, 3, H, W) raw RGB pixels to maps at about half the resolution,
    minus 5: box regression (N, 4, h, w) and probabilities (N, 2, h, w)."""
    writer = _KerasWriter("pnet", weights)
    x = writer.normalise(INPUT_NAME)
    x = writer.prelu(writer.conv(x, 3, 10, 3), 10, spatial=True)
    x = writer.max_pool(x, 2, 2, same=True)
    x = writer.prelu(writer.conv(x, 10, 16, 3), 16, spatial=True)
    x = writer.prelu(writer.conv(x, 16, 32, 3), 32, spatial=True)
    writer.conv(x, 32, 4, 1, output=BOX_REGRESSION_OUTPUT)
    writer.softmax(writer.conv(x, 32, 2, 1), axis=1, output=PROBABILITIES_OUTPUT)
    return writer.model(
        ["batch", 3, "height", "width"],
        [
            (BOX_REGRESSION_OUTPUT, ["batch", 4, "map_height", "map_width"]),
            (PROBABILITIES_OUTPUT, ["batch", 2, "map_height", "map_width"]),
        ],
    )


def build_rnet(weights: Weights) -> onnx.ModelProto:
    """(N, 3, 24, 24) raw RGB crops to box regression (N, 4) and probabilities (N, 2)."""
    writer = _KerasWriter("rnet", weights)
    x = writer.normalise(INPUT_NAME)
    x = writer.prelu(writer.conv(x, 3, 28, 3), 28, spatial=True)
    x = writer.max_pool(x, 3, 2, same=True)
    x = writer.prelu(writer.conv(x, 28, 48, 3), 48, spatial=True)
    x = writer.max_pool(x, 3, 2, same=False)
    x = writer.prelu(writer.conv(x, 48, 64, 2), 64, spatial=True)
    x = writer.prelu(writer.dense(writer.flatten_permuted(x), 576, 128), 128, spatial=False)
    writer.dense(x, 128, 4, output=BOX_REGRESSION_OUTPUT)
    writer.softmax(writer.dense(x, 128, 2), axis=1, output=PROBABILITIES_OUTPUT)
    return writer.model(
        ["batch", 3, RNET_INPUT_SIZE, RNET_INPUT_SIZE],
        [(BOX_REGRESSION_OUTPUT, ["batch", 4]), (PROBABILITIES_OUTPUT, ["batch", 2])],
    )


def build_onet(weights: Weights) -> onnx.ModelProto:
    """(N, 3, 48, 48) raw RGB crops to box regression (N, 4), landmarks (N, 10: five x then
    five y, relative to the crop) and probabilities (N, 2)."""
    writer = _KerasWriter("onet", weights)
    x = writer.normalise(INPUT_NAME)
    x = writer.prelu(writer.conv(x, 3, 32, 3), 32, spatial=True)
    x = writer.max_pool(x, 3, 2, same=True)
    x = writer.prelu(writer.conv(x, 32, 64, 3), 64, spatial=True)
    x = writer.max_pool(x, 3, 2, same=False)
    x = writer.prelu(writer.conv(x, 64, 64, 3), 64, spatial=True)
    x = writer.max_pool(x, 2, 2, same=True)
    x = writer.prelu(writer.conv(x, 64, 128, 2), 128, spatial=True)
    x = writer.prelu(writer.dense(writer.flatten_permuted(x), 1152, 256), 256, spatial=False)
    writer.dense(x, 256, 4, output=BOX_REGRESSION_OUTPUT)
    writer.dense(x, 256, 10, output=LANDMARKS_OUTPUT)
    writer.softmax(writer.dense(x, 256, 2), axis=1, output=PROBABILITIES_OUTPUT)
    return writer.model(
        ["batch", 3, ONET_INPUT_SIZE, ONET_INPUT_SIZE],
        [
            (BOX_REGRESSION_OUTPUT, ["batch", 4]),
            (LANDMARKS_OUTPUT, ["batch", 10]),
            (PROBABILITIES_OUTPUT, ["batch", 2]),
        ],
    )


def build_mtcnn(weights: Mapping[str, Weights]) -> dict[str, onnx.ModelProto]:
    """The three checked ONNX models, keyed pnet, rnet, onet."""
    missing = [name for name in NETWORK_NAMES if name not in weights]
    if missing:
        raise MtcnnWeightsError(f"no weights for {missing}")
    return {
        "pnet": build_pnet(weights["pnet"]),
        "rnet": build_rnet(weights["rnet"]),
        "onet": build_onet(weights["onet"]),
    }


def save_mtcnn(models: Mapping[str, onnx.ModelProto], folder: Path) -> None:
    """Writes pnet.onnx, rnet.onnx and onet.onnx; each appears whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in NETWORK_NAMES:
        temporary = folder / f"{name}.onnx.partial"
        onnx.save_model(models[name], temporary)
        temporary.replace(folder / f"{name}.onnx")


# ---------------------------------------------------------------------------------------------
# The detector's numpy side


@dataclass(frozen=True)
class FaceBox:
    """A face in the image's pixels (corners, clipped to the image) and ONet's confidence."""

    x0: float
    y0: float
    x1: float
    y1: float
    confidence: float


def pyramid_scales(
    height: int, width: int, min_face_size: float, scale_factor: float
) -> list[float]:
    """The package's `build_scale_pyramid`: the first level makes a min_face_size face 12 px."""
    min_dim = min(height, width)
    count = round(-(float(np.log(min_dim / PNET_CELL_SIZE) / np.log(scale_factor)) + 1))
    first = PNET_CELL_SIZE / min_face_size
    return [first * scale_factor**level for level in range(max(count, 0))]


def crop_and_resize(image: FloatArray, boxes: BoxArray, size: int, fill: float) -> FloatArray:
    """(N, size, size, C) crops of an (H, W, C) image, as tf.image.crop_and_resize takes them
    from boxes given as pixel corners divided by the image size: bilinear, sampling the box's
    corners at (coordinate / size) * (size - 1), `fill` where a sample falls outside."""
    height, width = image.shape[:2]
    # TensorFlow receives the normalised boxes as float32 and computes in float32.
    x0 = (boxes[:, 0] / width).astype(np.float32)[:, None]
    y0 = (boxes[:, 1] / height).astype(np.float32)[:, None]
    x1 = (boxes[:, 2] / width).astype(np.float32)[:, None]
    y1 = (boxes[:, 3] / height).astype(np.float32)[:, None]
    steps = np.arange(size, dtype=np.float32)[None, :]
    last = np.float32(size - 1)
    in_y = y0 * np.float32(height - 1) + steps * ((y1 - y0) * np.float32(height - 1) / last)
    in_x = x0 * np.float32(width - 1) + steps * ((x1 - x0) * np.float32(width - 1) / last)
    inside = ((in_y >= 0) & (in_y <= height - 1))[:, :, None] & ((in_x >= 0) & (in_x <= width - 1))[
        :, None, :
    ]
    top = np.clip(np.floor(in_y), 0, height - 1).astype(np.intp)
    bottom = np.clip(np.ceil(in_y), 0, height - 1).astype(np.intp)
    left = np.clip(np.floor(in_x), 0, width - 1).astype(np.intp)
    right = np.clip(np.ceil(in_x), 0, width - 1).astype(np.intp)
    y_lerp = (in_y - np.floor(in_y))[:, :, None, None]
    x_lerp = (in_x - np.floor(in_x))[:, None, :, None]
    top_left = image[top[:, :, None], left[:, None, :]]
    top_right = image[top[:, :, None], right[:, None, :]]
    bottom_left = image[bottom[:, :, None], left[:, None, :]]
    bottom_right = image[bottom[:, :, None], right[:, None, :]]
    upper = top_left + (top_right - top_left) * x_lerp
    lower = bottom_left + (bottom_right - bottom_left) * x_lerp
    crops = upper + (lower - upper) * y_lerp
    crops[~inside] = fill
    return np.asarray(crops, dtype=np.float32)


def sort_by_score(boxes: BoxArray) -> BoxArray:
    """Best first, ordered exactly as the package's `sort_by_scores` (a reversed argsort)."""
    return boxes[np.argsort(boxes[:, 4])[::-1]]


def suppress_overlaps(boxes: BoxArray, threshold: float, method: OverlapMethod) -> BoxArray:
    """The package's non-maximum suppression on (N, 5) boxes sorted best first: a box goes when
    its overlap with any better box exceeds the threshold, whether that box stays or not. Overlap
    is intersection over union, or over the smaller area ('min'); areas without the Caffe +1."""
    count = boxes.shape[0]
    if count == 0:
        return boxes
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x1 - x0) * (y1 - y0)
    keep = np.ones(count, dtype=bool)
    for start in range(0, count, NMS_BLOCK):
        stop = min(count, start + NMS_BLOCK)
        column = slice(start, stop)
        inter_w = np.maximum(
            0.0,
            np.minimum(x1[:stop, None], x1[None, column])
            - np.maximum(x0[:stop, None], x0[None, column]),
        )
        inter_h = np.maximum(
            0.0,
            np.minimum(y1[:stop, None], y1[None, column])
            - np.maximum(y0[:stop, None], y0[None, column]),
        )
        intersection = inter_w * inter_h
        if method == "union":
            denominator = areas[:stop, None] + areas[None, column] - intersection
        else:
            denominator = np.minimum(areas[:stop, None], areas[None, column])
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = intersection / denominator
        better = np.arange(stop)[:, None] < np.arange(start, stop)[None, :]
        keep[column] = ~np.any((overlap > threshold) & better, axis=0)
    return boxes[keep]


def square_boxes(boxes: BoxArray) -> BoxArray:
    """Each box grown to a square on its longer side, about the same centre (no rounding)."""
    squared = boxes.copy()
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(width, height)
    squared[:, 0] = boxes[:, 0] + width * 0.5 - side * 0.5
    squared[:, 1] = boxes[:, 1] + height * 0.5 - side * 0.5
    squared[:, 2] = squared[:, 0] + side
    squared[:, 3] = squared[:, 1] + side
    return squared


def calibrate(boxes: BoxArray, regression: FloatArray) -> BoxArray:
    """Moves the corners by the regression, in units of the box's size counted with +1."""
    calibrated = boxes.copy()
    width = boxes[:, 2] - boxes[:, 0] + 1
    height = boxes[:, 3] - boxes[:, 1] + 1
    sizes = np.stack([width, height, width, height], axis=1)
    calibrated[:, :4] = boxes[:, :4] + regression.astype(np.float64) * sizes
    return calibrated


def pnet_candidates(
    regression: FloatArray, probabilities: FloatArray, threshold: float, scale: float
) -> BoxArray:
    """(N, 5) boxes in the image's pixels where one PNet map (batch of one) sees a face, best
    first; each output cell is a 12x12 window at a stride of 2 in the scaled image."""
    face = probabilities[0, 1]
    rows, cols = np.nonzero(face > threshold)
    shift = regression[0][:, rows, cols].astype(np.float64) * (PNET_CELL_SIZE - 1)
    left = cols * PNET_STRIDE + 1
    top = rows * PNET_STRIDE + 1
    right = cols * PNET_STRIDE + PNET_CELL_SIZE
    bottom = rows * PNET_STRIDE + PNET_CELL_SIZE
    boxes = np.stack(
        [left + shift[0], top + shift[1], right + shift[2], bottom + shift[3], face[rows, cols]],
        axis=1,
    ).astype(np.float64)
    boxes = sort_by_score(boxes)
    boxes[:, :4] /= scale
    return boxes


def _to_batch(crops: FloatArray) -> FloatArray:
    """(N, H, W, C) to the graphs' contiguous (N, C, H, W)."""
    return np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)


def _session_options(intra_op_threads: int | None) -> Any:
    options = ort.SessionOptions()
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def default_providers() -> list[str]:
    """CUDA where this onnxruntime has it and the driver sees a device, the CPU otherwise."""
    providers = select_providers(
        ["CUDAExecutionProvider", CPU_PROVIDER], list(ort.get_available_providers())
    )
    if cuda_unavailable_reason() is not None:
        providers = [p for p in providers if p not in CUDA_PROVIDERS]
    return providers


class MtcnnFaceDetector:
    """The package's three-stage cascade over onnxruntime sessions of the graphs above.

    Defaults: faces from 20 px, pyramid factor 0.709, PNet 0.6 with NMS 0.5 per scale and 0.7
    across scales, RNet 0.7 / NMS 0.7, ONet 0.7 / NMS 0.7 over the smaller area (the package's
    own ONet threshold default is 0.8). It keeps no state between calls, and onnxruntime
    sessions may run concurrently, so one detector serves many threads. ONet's landmarks are
    in its graph's outputs but not read here."""

    def __init__(
        self,
        pnet: Any,
        rnet: Any,
        onet: Any,
        *,
        min_face_size: float = 20.0,
        scale_factor: float = 0.709,
        pnet_threshold: float = 0.6,
        pnet_scale_nms: float = 0.5,
        pnet_merge_nms: float = 0.7,
        rnet_threshold: float = 0.7,
        rnet_nms: float = 0.7,
        onet_threshold: float = 0.7,
        onet_nms: float = 0.7,
    ) -> None:
        if not 0.0 < scale_factor < 1.0:
            raise ValueError(f"scale_factor must be in (0, 1), got {scale_factor}")
        if min_face_size <= 0:
            raise ValueError(f"min_face_size must be positive, got {min_face_size}")
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.min_face_size = min_face_size
        self.scale_factor = scale_factor
        self.pnet_threshold = pnet_threshold
        self.pnet_scale_nms = pnet_scale_nms
        self.pnet_merge_nms = pnet_merge_nms
        self.rnet_threshold = rnet_threshold
        self.rnet_nms = rnet_nms
        self.onet_threshold = onet_threshold
        self.onet_nms = onet_nms

    @classmethod
    def from_models(
        cls,
        models: Mapping[str, onnx.ModelProto | Path],
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        **settings: float,
    ) -> MtcnnFaceDetector:
        """Opens the three models (ModelProtos or .onnx paths) on the given or best providers."""
        chosen = list(providers) if providers is not None else default_providers()
        sessions = []
        for name in NETWORK_NAMES:
            model = models[name]
            source = str(model) if isinstance(model, Path) else model.SerializeToString()
            sessions.append(
                ort.InferenceSession(
                    source, sess_options=_session_options(intra_op_threads), providers=chosen
                )
            )
        return cls(*sessions, **settings)

    @classmethod
    def from_folder(
        cls,
        folder: Path,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        **settings: float,
    ) -> MtcnnFaceDetector:
        """Opens pnet.onnx, rnet.onnx and onet.onnx as written by `save_mtcnn`."""
        paths: dict[str, onnx.ModelProto | Path] = {
            name: folder / f"{name}.onnx" for name in NETWORK_NAMES
        }
        return cls.from_models(
            paths, providers=providers, intra_op_threads=intra_op_threads, **settings
        )

    def detect(self, image: npt.NDArray[np.uint8]) -> list[FaceBox]:
        """The faces in an (H, W, 3) RGB image, best first."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        pixels = np.asarray(image, dtype=np.float32)
        boxes = self._propose(pixels)
        if boxes.shape[0]:
            boxes = self._refine(pixels, boxes)
        if boxes.shape[0]:
            boxes = self._output(pixels, boxes)
        height, width = image.shape[:2]
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width - 1)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height - 1)
        return [FaceBox(*(float(v) for v in row[:5])) for row in boxes]

    def _propose(self, pixels: FloatArray) -> BoxArray:
        """PNet over the image pyramid: candidates per scale, merged, squared."""
        height, width = pixels.shape[:2]
        per_scale = []
        for scale in pyramid_scales(height, width, self.min_face_size, self.scale_factor):
            # TensorFlow truncates the float size it is given.
            scaled_height, scaled_width = int(height * scale), int(width * scale)
            if min(scaled_height, scaled_width) < PNET_MIN_INPUT:
                # Only when min_face_size is well above 20; the package would hand TensorFlow a
                # level PNet cannot convolve and lose the whole image to the error.
                continue
            # OpenCV's area resize: TensorFlow's to within 0.02 grey levels, 6 times faster
            level: FloatArray = np.asarray(
                cv2.resize(pixels, (scaled_width, scaled_height), interpolation=cv2.INTER_AREA),
                dtype=np.float32,
            )
            regression, probabilities = self.pnet.run(
                [BOX_REGRESSION_OUTPUT, PROBABILITIES_OUTPUT],
                {INPUT_NAME: _to_batch(level[None])},
            )
            candidates = pnet_candidates(regression, probabilities, self.pnet_threshold, scale)
            per_scale.append(suppress_overlaps(candidates, self.pnet_scale_nms, "union"))
        if not per_scale:
            return np.empty((0, 5), dtype=np.float64)
        merged = sort_by_score(np.concatenate(per_scale, axis=0))
        return square_boxes(suppress_overlaps(merged, self.pnet_merge_nms, "union"))

    def _refine(self, pixels: FloatArray, boxes: BoxArray) -> BoxArray:
        """RNet on all candidates in one run: new scores, calibrated, filtered, squared."""
        kept = self._rescore(self.rnet, pixels, boxes, RNET_INPUT_SIZE, self.rnet_threshold)
        return square_boxes(suppress_overlaps(kept, self.rnet_nms, "union"))

    def _output(self, pixels: FloatArray, boxes: BoxArray) -> BoxArray:
        """ONet on all refined boxes in one run: final scores and boxes."""
        kept = self._rescore(self.onet, pixels, boxes, ONET_INPUT_SIZE, self.onet_threshold)
        return suppress_overlaps(kept, self.onet_nms, "min")

    @staticmethod
    def _rescore(
        network: Any, pixels: FloatArray, boxes: BoxArray, size: int, threshold: float
    ) -> BoxArray:
        """A later stage's scores and box regression for the boxes' crops, best first, those
        above `threshold` kept."""
        crops = crop_and_resize(pixels, boxes, size, CROP_FILL_VALUE)
        regression, probabilities = network.run(
            [BOX_REGRESSION_OUTPUT, PROBABILITIES_OUTPUT], {INPUT_NAME: _to_batch(crops)}
        )
        scored = boxes.copy()
        scored[:, 4] = probabilities[:, 1]
        calibrated = calibrate(scored, regression)
        return sort_by_score(calibrated[calibrated[:, 4] > threshold])
