"""A TensorFlow Lite graph of the few operators a small detector uses, rewritten as ONNX.

MediaPipe's BlazeFace detectors ship as .tflite files (in the `mediapipe` wheel on PyPI), and
the embedder runs ONNX on its providers, so `seavl models prepare` rewrites them here with
onnx.helper (no TensorFlow). Weights stored as float16, and sparse ones, are folded into float32
constants at conversion; the graph is laid out NCHW. An operator outside `SUPPORTED` is refused
by name rather than converted approximately.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import tflite
from tflite.BuiltinOperator import BuiltinOperator
from tflite.TensorType import TensorType

from services.embedder.onnx_graph import GraphWriter, Shape

FloatArray = npt.NDArray[np.float32]

_OPERATOR_NAMES = {
    value: name for name, value in vars(BuiltinOperator).items() if not name.startswith("_")
}
_DTYPES = {
    TensorType.FLOAT32: np.float32,
    TensorType.FLOAT16: np.float16,
    TensorType.INT32: np.int32,
}
_ACTIVATIONS = {0: None, 1: "Relu", 3: "Relu6"}  # tflite's ActivationFunctionType
_SAME, _VALID = 0, 1  # tflite's Padding
_DENSE, _SPARSE_CSR = 0, 1  # tflite's DimensionType
NHWC_TO_NCHW = [0, 3, 1, 2]
NCHW_TO_NHWC = [0, 2, 3, 1]


class TfliteConversionError(ValueError):
    """The .tflite file holds something this converter does not rewrite."""


def _index_vector(metadata: Any, kind: str) -> npt.NDArray[np.int64]:
    """A DimensionMetadata's array_segments or array_indices (a union of integer vectors)."""
    table = getattr(metadata, kind)()
    if table is None:
        return np.zeros(0, dtype=np.int64)
    kind_type = getattr(metadata, f"{kind}Type")()
    reader = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}.get(kind_type)
    if reader is None:
        raise TfliteConversionError(f"sparse index vector of unknown type {kind_type}")
    typed = reader()
    typed.Init(table.Bytes, table.Pos)
    return np.asarray(typed.ValuesAsNumpy(), dtype=np.int64)


def densify(values: npt.NDArray[Any], shape: list[int], sparsity: Any) -> npt.NDArray[Any]:
    """The dense tensor of a sparse one (TFLite's format: a traversal order over the dims and
    block dims, each dense or CSR), as TFLite's DENSIFY computes it."""
    order = [int(v) for v in sparsity.TraversalOrderAsNumpy()]
    block_map = [int(v) for v in sparsity.BlockMapAsNumpy()] if sparsity.BlockMapLength() else []
    levels = [sparsity.DimMetadata(i) for i in range(sparsity.DimMetadataLength())]
    rank = len(shape)
    # walk the levels breadth first: each row is one stored value's coordinates so far
    coordinates = np.zeros((1, 0), dtype=np.int64)
    positions = np.zeros(1, dtype=np.int64)
    block_sizes = {}
    for level, metadata in zip(order, levels, strict=True):
        if metadata.Format() == _DENSE:
            size = metadata.DenseSize()
            if level >= rank:
                block_sizes[block_map[level - rank]] = size
            coordinates = np.repeat(coordinates, size, axis=0)
            column = np.tile(np.arange(size), len(positions))
            positions = (np.repeat(positions, size) * size) + column
        elif metadata.Format() == _SPARSE_CSR:
            segments = _index_vector(metadata, "ArraySegments")
            indices = _index_vector(metadata, "ArrayIndices")
            starts, stops = segments[positions], segments[positions + 1]
            counts = stops - starts
            coordinates = np.repeat(coordinates, counts, axis=0)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            positions = np.repeat(starts, counts) + offsets
            column = indices[positions]
        else:
            raise TfliteConversionError(f"unknown sparse dimension format {metadata.Format()}")
        coordinates = np.concatenate([coordinates, column[:, None]], axis=1)
    dense = np.zeros(shape, dtype=values.dtype)
    index = []
    for dim in range(rank):
        coordinate = coordinates[:, order.index(dim)] * block_sizes.get(dim, 1)
        if dim in block_map:
            coordinate = coordinate + coordinates[:, order.index(rank + block_map.index(dim))]
        index.append(coordinate)
    dense[tuple(index)] = values[positions]
    return dense


@dataclass
class _Tensor:
    name: str
    shape: list[int]
    nchw: bool  # a 4-d activation, laid out NCHW in the ONNX graph


class TfliteToOnnx(GraphWriter):
    """Rewrites subgraph 0 of a .tflite model, one operator after another."""

    SUPPORTED = (
        "ADD", "CONCATENATION", "CONV_2D", "DENSIFY", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D",
        "DEQUANTIZE", "MAX_POOL_2D", "PAD", "RELU", "RESHAPE", "RESIZE_BILINEAR",
    )  # fmt: skip

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._tflite = tflite.Model.GetRootAsModel(data, 0)
        if self._tflite.SubgraphsLength() != 1:
            raise TfliteConversionError("expected a model of one subgraph")
        self._graph = self._tflite.Subgraphs(0)
        self._constants: dict[int, npt.NDArray[Any]] = {}
        self._tensors: dict[int, _Tensor] = {}

    def _shape(self, index: int) -> list[int]:
        tensor = self._graph.Tensors(index)
        return [int(v) for v in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []

    def _stored(self, index: int) -> npt.NDArray[Any] | None:
        """The tensor's constant value as stored (None for an activation)."""
        if index in self._constants:
            return self._constants[index]
        tensor = self._graph.Tensors(index)
        buffer = self._tflite.Buffers(tensor.Buffer())
        if buffer is None or buffer.DataLength() == 0:
            if buffer is not None and buffer.Offset() > 1:
                raise TfliteConversionError("buffers stored outside the flatbuffer are not read")
            return None
        dtype = _DTYPES.get(tensor.Type())
        if dtype is None:
            raise TfliteConversionError(f"tensor type {tensor.Type()} is not converted")
        raw = np.frombuffer(buffer.DataAsNumpy().tobytes(), dtype=dtype)
        sparsity = tensor.Sparsity()
        value = raw if sparsity is not None else raw.reshape(self._shape(index))
        self._constants[index] = value
        return value

    def _constant_of(self, index: int) -> npt.NDArray[Any]:
        value = self._stored(index)
        if value is None:
            raise TfliteConversionError(f"tensor {index} should be constant")
        return value

    def _input(self, index: int) -> _Tensor:
        if index not in self._tensors:
            raise TfliteConversionError(f"tensor {index} is used before it is computed")
        return self._tensors[index]

    def _image(self, index: int) -> _Tensor:
        """An input that must be a 4-d activation (NCHW here)."""
        tensor = self._input(index)
        if not tensor.nchw or len(tensor.shape) != 4:
            raise TfliteConversionError(f"tensor {index} should be a 4-d activation")
        return tensor

    def _set(self, index: int, name: str, nchw: bool) -> None:
        self._tensors[index] = _Tensor(name, self._shape(index), nchw)

    def _activation(self, name: str, code: int, output: str) -> str:
        if code not in _ACTIVATIONS:
            raise TfliteConversionError(f"fused activation {code} is not converted")
        op = _ACTIVATIONS[code]
        if op is None:
            return self._node("Identity", [name], output)
        if op == "Relu6":
            return self._node("Clip", [name, self._scalar(0.0), self._scalar(6.0)], output)
        return self._node(op, [name], output)

    def _scalar(self, value: float) -> str:
        return self._constant(self._name("scalar"), np.array(value, dtype=np.float32))

    @staticmethod
    def _spatial(stride: tuple[int, int], padding: int) -> dict[str, Any]:
        """Strides and padding; TensorFlow's SAME puts the odd pixel at the end, as ONNX's
        SAME_UPPER does, whatever the input's size."""
        if padding == _SAME:
            return {"strides": list(stride), "auto_pad": "SAME_UPPER"}
        return {"strides": list(stride), "pads": [0, 0, 0, 0]}

    def _options(self, op: Any, options_class: type) -> Any:
        table = op.BuiltinOptions()
        options = options_class()
        options.Init(table.Bytes, table.Pos)
        return options

    # -- the operators, each writing its output under the tflite tensor's index -----------------

    def _conv(self, op: Any, ins: list[int], out: str, depthwise: bool) -> str:
        x = self._image(ins[0])
        weight = self._constant_of(ins[1]).astype(np.float32)  # [O, KH, KW, I] or [1, KH, KW, O]
        if weight.ndim != 4:  # e.g. a sparse weight read without its DENSIFY
            raise TfliteConversionError(f"convolution weights of shape {weight.shape}")
        bias = self._constant_of(ins[2]).astype(np.float32) if ins[2] >= 0 else None
        cls = tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions
        options = self._options(op, cls)
        if options.DilationHFactor() != 1 or options.DilationWFactor() != 1:
            raise TfliteConversionError("dilated convolutions are not converted")
        kernel = (weight.shape[1], weight.shape[2])
        attrs = self._spatial((options.StrideH(), options.StrideW()), options.Padding())
        if depthwise:
            weight = weight.transpose(3, 0, 1, 2)  # [O, 1, KH, KW]
            attrs["group"] = x.shape[3]
        else:
            weight = weight.transpose(0, 3, 1, 2)
        inputs = [x.name, self._constant(self._name("w"), weight)]
        if bias is not None:
            inputs.append(self._constant(self._name("b"), bias))
        conv = self._node("Conv", inputs, kernel_shape=list(kernel), **attrs)
        return self._activation(conv, options.FusedActivationFunction(), out)

    def _convert(self, op: Any, name: str, ins: list[int], outs: list[int]) -> None:
        out_index = outs[0]
        out = f"t{out_index}"
        if name in ("DEQUANTIZE", "DENSIFY"):
            source = self._constant_of(ins[0])
            tensor = self._graph.Tensors(ins[0])
            if name == "DENSIFY":
                if tensor.Sparsity() is None:
                    raise TfliteConversionError("DENSIFY of a tensor without sparsity")
                value = densify(source, self._shape(ins[0]), tensor.Sparsity())
            else:
                if tensor.Type() != TensorType.FLOAT16:
                    raise TfliteConversionError("only float16 DEQUANTIZE is converted")
                value = source.astype(np.float32)
            self._constants[out_index] = value
            return
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            self._conv(op, ins, out, depthwise=name == "DEPTHWISE_CONV_2D")
            self._set(out_index, out, nchw=True)
        elif name == "ADD":
            a, b = self._input(ins[0]), self._input(ins[1])
            options = self._options(op, tflite.AddOptions)
            added = self._node("Add", [a.name, b.name])
            self._set(
                out_index, self._activation(added, options.FusedActivationFunction(), out), a.nchw
            )
        elif name == "RELU":
            x = self._input(ins[0])
            self._set(out_index, self._node("Relu", [x.name], out), x.nchw)
        elif name == "PAD":
            x = self._input(ins[0])
            paddings = self._constant_of(ins[1]).astype(np.int64)
            order = NHWC_TO_NCHW if x.nchw else list(range(len(x.shape)))
            pads = np.concatenate([paddings[order, 0], paddings[order, 1]])
            self._set(
                out_index,
                self._node("Pad", [x.name, self._constant(self._name("pads"), pads)], out),
                x.nchw,
            )
        elif name == "MAX_POOL_2D":
            x = self._image(ins[0])
            options = self._options(op, tflite.Pool2DOptions)
            kernel = (options.FilterHeight(), options.FilterWidth())
            attrs = self._spatial((options.StrideH(), options.StrideW()), options.Padding())
            pooled = self._node("MaxPool", [x.name], kernel_shape=list(kernel), **attrs)
            self._set(
                out_index, self._activation(pooled, options.FusedActivationFunction(), out), True
            )
        elif name == "RESIZE_BILINEAR":
            x = self._image(ins[0])
            options = self._options(op, tflite.ResizeBilinearOptions)
            height, width = (int(v) for v in self._constant_of(ins[1]))
            mode = (
                "align_corners" if options.AlignCorners()
                else "half_pixel" if options.HalfPixelCenters()
                else "asymmetric"
            )  # fmt: skip
            # as a factor, not a size, so that the graph takes other input sizes too
            factors = np.array([1, 1, height / x.shape[1], width / x.shape[2]], dtype=np.float32)
            scales = self._constant(self._name("scales"), factors)
            resized = self._node(
                "Resize",
                [x.name, "", scales],
                out,
                mode="linear",
                coordinate_transformation_mode=mode,
            )
            self._set(out_index, resized, True)
        elif name == "DEPTH_TO_SPACE":
            x = self._image(ins[0])
            block = self._options(op, tflite.DepthToSpaceOptions).BlockSize()
            self._set(
                out_index,
                self._node("DepthToSpace", [x.name], out, blocksize=block, mode="DCR"),
                True,
            )
        elif name == "RESHAPE":
            x = self._input(ins[0])
            target_shape = self._shape(out_index)
            if (
                len(target_shape) < 2
                or target_shape[0] != x.shape[0]
                or int(np.prod(target_shape[1:])) != int(np.prod(x.shape[1:]))
            ):
                raise TfliteConversionError(f"reshape to {target_shape} is not a head's flattening")
            nhwc = self._node("Transpose", [x.name], perm=NCHW_TO_NHWC) if x.nchw else x.name
            # the batch as it comes (0), the anchors as many as the input's size makes (-1)
            shape = [0, -1, *self._shape(out_index)[2:]]
            target = self._constant(self._name("shape"), np.array(shape, dtype=np.int64))
            self._set(out_index, self._node("Reshape", [nhwc, target], out), False)
        elif name == "CONCATENATION":
            parts = [self._input(i) for i in ins]
            if len({part.nchw for part in parts}) != 1:
                raise TfliteConversionError("concatenation of tensors laid out differently")
            options = self._options(op, tflite.ConcatenationOptions)
            axis = options.Axis() % len(parts[0].shape)
            if parts[0].nchw:
                axis = NHWC_TO_NCHW.index(axis)
            joined = self._node("Concat", [p.name for p in parts], axis=axis)
            self._set(
                out_index,
                self._activation(joined, options.FusedActivationFunction(), out),
                parts[0].nchw,
            )
        else:
            raise TfliteConversionError(f"operator {name} is not converted")

    def convert(
        self, output_names: Callable[[list[int]], list[str]], graph_name: str
    ) -> onnx.ModelProto:
        """The ONNX model: input `pixels` (N, C, H, W) float; outputs (N, anchors, values) named
        by `output_names` from the tflite outputs' last dimensions. N, H and W are free: the
        graph runs at other sizes than the file's (multiples of its largest stride), with as
        many anchors as that size makes."""
        graph = self._graph
        (input_index,) = [int(v) for v in graph.InputsAsNumpy()]
        input_shape = self._shape(input_index)  # NHWC
        self._tensors[input_index] = _Tensor("pixels", input_shape, True)
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = self._tflite.OperatorCodes(op.OpcodeIndex())
            name = _OPERATOR_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
            if name not in self.SUPPORTED:
                raise TfliteConversionError(f"operator {name} is not converted")
            self._convert(
                op,
                name,
                [int(v) for v in op.InputsAsNumpy()],
                [int(v) for v in op.OutputsAsNumpy()],
            )
        outputs = [int(v) for v in graph.OutputsAsNumpy()]
        names = output_names([self._shape(i)[-1] for i in outputs])
        declared: list[tuple[str, Shape]] = []
        for index, name in zip(outputs, names, strict=True):
            tensor = self._input(index)
            self._node("Identity", [tensor.name], name)
            declared.append((name, ["batch", "anchors", *tensor.shape[2:]]))
        channels = input_shape[3]
        return self._model(
            graph_name, [("pixels", ["batch", channels, "height", "width"])], declared
        )
