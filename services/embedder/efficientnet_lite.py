"""EfficientNet-Lite0 as an ONNX graph, written with onnx.helper from a numpy state dict.

Lite0 is conv / batch-norm / ReLU6 / depthwise conv / pooling / linear, so the graph is small to
write by hand; batch-norm is folded into the convolutions. The weights were ported from
TensorFlow, so every convolution pads the TensorFlow way ("SAME", extra row and column at the end).
Outputs: `features` (globally pooled 1280-d, the embedding) and `logits` (1000 ImageNet classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper

from services.embedder.onnx_graph import GraphWriter

BATCH_NORM_EPSILON = 1e-3
INPUT_NAME = "pixel_values"
FEATURES_OUTPUT = "features"
LOGITS_OUTPUT = "logits"
FEATURE_DIM = 1280
Weights = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class StageSpec:
    """One stage of MBConv blocks, as in the EfficientNet-B0/Lite0 table."""

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int


LITE0_STAGES = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)


class _LiteWriter(GraphWriter):
    """The writer of Lite0's layers, reading the state dict by key."""

    def __init__(self, weights: Weights) -> None:
        super().__init__()
        self.weights = weights
        self._relu6_bounds_added = False

    def _weight(self, key: str, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
        if key not in self.weights:
            raise ValueError(f"the checkpoint has no tensor {key}")
        array = self.weights[key].astype(np.float32)
        if array.shape != shape:
            raise ValueError(f"{key} has shape {array.shape}, expected {shape}")
        return array

    def conv_bn(
        self,
        x: str,
        conv_key: str,
        bn_key: str,
        shape: tuple[int, int, int, int],
        stride: int = 1,
        groups: int = 1,
        relu6: bool = True,
    ) -> str:
        """Convolution with its batch-norm folded in, optionally followed by ReLU6."""
        kernel = self._weight(f"{conv_key}.weight", shape)
        out_channels = shape[0]
        gamma = self._weight(f"{bn_key}.weight", (out_channels,))
        beta = self._weight(f"{bn_key}.bias", (out_channels,))
        mean = self._weight(f"{bn_key}.running_mean", (out_channels,))
        var = self._weight(f"{bn_key}.running_var", (out_channels,))
        scale = gamma / np.sqrt(var + BATCH_NORM_EPSILON)
        folded_kernel = (kernel * scale[:, None, None, None]).astype(np.float32)
        folded_bias = (beta - mean * scale).astype(np.float32)
        w = self._constant(f"{conv_key}.folded_weight", folded_kernel)
        b = self._constant(f"{conv_key}.folded_bias", folded_bias)
        y = self._name(conv_key)
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, w, b],
                [y],
                kernel_shape=list(shape[2:]),
                strides=[stride, stride],
                group=groups,
                auto_pad="SAME_UPPER",
            )
        )
        return self.relu6(y) if relu6 else y

    def relu6(self, x: str) -> str:
        if not self._relu6_bounds_added:
            self._constant("relu6_min", np.array(0.0, dtype=np.float32))
            self._constant("relu6_max", np.array(6.0, dtype=np.float32))
            self._relu6_bounds_added = True
        y = self._name("relu6")
        self.nodes.append(helper.make_node("Clip", [x, "relu6_min", "relu6_max"], [y]))
        return y

    def add(self, a: str, b: str) -> str:
        y = self._name("residual")
        self.nodes.append(helper.make_node("Add", [a, b], [y]))
        return y

    def mbconv(self, x: str, index: int, spec: StageSpec, in_channels: int, stride: int) -> str:
        """Inverted residual block: expand 1x1, depthwise kxk, project 1x1, skip if shapes allow."""
        prefix = f"_blocks.{index}"
        hidden = in_channels * spec.expand_ratio
        y = x
        if spec.expand_ratio != 1:
            y = self.conv_bn(
                y, f"{prefix}._expand_conv", f"{prefix}._bn0", (hidden, in_channels, 1, 1)
            )
        y = self.conv_bn(
            y,
            f"{prefix}._depthwise_conv",
            f"{prefix}._bn1",
            (hidden, 1, spec.kernel, spec.kernel),
            stride=stride,
            groups=hidden,
        )
        y = self.conv_bn(
            y,
            f"{prefix}._project_conv",
            f"{prefix}._bn2",
            (spec.out_channels, hidden, 1, 1),
            relu6=False,
        )
        if stride == 1 and in_channels == spec.out_channels:
            y = self.add(y, x)
        return y


def build_efficientnet_lite0(weights: Weights, num_classes: int = 1000) -> onnx.ModelProto:
    """Returns the checked ONNX model for Lite0 with the given state dict's weights."""
    writer = _LiteWriter(weights)
    x = writer.conv_bn(INPUT_NAME, "_conv_stem", "_bn0", (32, 3, 3, 3), stride=2)
    block_index = 0
    for spec in LITE0_STAGES:
        for repeat in range(spec.repeats):
            in_channels = spec.in_channels if repeat == 0 else spec.out_channels
            stride = spec.stride if repeat == 0 else 1
            x = writer.mbconv(x, block_index, spec, in_channels, stride)
            block_index += 1
    x = writer.conv_bn(x, "_conv_head", "_bn1", (FEATURE_DIM, LITE0_STAGES[-1].out_channels, 1, 1))
    writer.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    writer.nodes.append(helper.make_node("Flatten", ["pooled"], [FEATURES_OUTPUT], axis=1))
    fc_weight = writer._weight("_fc.weight", (num_classes, FEATURE_DIM))
    fc_bias = writer._weight("_fc.bias", (num_classes,))
    writer._constant("fc.weight", fc_weight)
    writer._constant("fc.bias", fc_bias)
    writer.nodes.append(
        helper.make_node(
            "Gemm", [FEATURES_OUTPUT, "fc.weight", "fc.bias"], [LOGITS_OUTPUT], transB=1
        )
    )
    return writer._model(
        "efficientnet_lite0",
        [(INPUT_NAME, ["batch", 3, "height", "width"])],
        [(FEATURES_OUTPUT, ["batch", FEATURE_DIM]), (LOGITS_OUTPUT, ["batch", num_classes])],
    )
