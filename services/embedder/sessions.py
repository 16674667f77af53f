"""ONNX Runtime sessions: execution provider choice and the model's forward pass.

`get_available_providers()` lists what onnxruntime was built with, not what works: the GPU build
lists CUDA on a machine without a GPU and falls back to the CPU, after logging a red error about
the CUDA libraries it could not load. So CUDA is asked for only where its driver finds a device,
the provider in use is read back from the session, and `require_gpu` is checked against that.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from services.embedder.config import RuntimeSettings
from services.embedder.models import Pooling, RegisteredModel

logger = logging.getLogger(__name__)

GPU_PROVIDERS = frozenset(
    {
        "CUDAExecutionProvider",
        "TensorrtExecutionProvider",
        "ROCMExecutionProvider",
        "MIGraphXExecutionProvider",
        "DmlExecutionProvider",
        "CoreMLExecutionProvider",
    }
)
CPU_PROVIDER = "CPUExecutionProvider"
# Providers that run on CUDA: asked for only when the CUDA driver is there and sees a device.
CUDA_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})
CUDA_DRIVER_LIBRARY = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"


class ModelLoadError(RuntimeError):
    """The model cannot serve: a required GPU is missing, or the ONNX file does not fit."""


def select_providers(ranked: list[str], available: list[str]) -> list[str]:
    """The ranked providers that this onnxruntime build has, CPU always last as the fallback."""
    chosen = [p for p in ranked if p in available and p != CPU_PROVIDER]
    return [*chosen, CPU_PROVIDER]


@functools.cache
def cuda_unavailable_reason() -> str | None:
    """Why CUDA cannot run here (no driver, or no device), or None when it can.

    Asked of the CUDA driver itself, because onnxruntime finds out only by trying: it logs a red
    error about missing CUDA libraries on every machine without them, then uses the CPU."""
    try:
        driver = ctypes.CDLL(CUDA_DRIVER_LIBRARY)
    except OSError:
        return f"no CUDA driver ({CUDA_DRIVER_LIBRARY} cannot be loaded)"
    devices = ctypes.c_int(0)
    initialised = driver.cuInit(0)
    if initialised != 0:
        return f"the CUDA driver finds no usable device (cuInit error {initialised})"
    if driver.cuDeviceGetCount(ctypes.byref(devices)) != 0 or devices.value < 1:
        return "the CUDA driver finds no device"
    return None


def _without_unusable_cuda(model_name: str, providers: list[str], require_gpu: bool) -> list[str]:
    """`providers` less the CUDA ones when CUDA cannot run here, so onnxruntime is not asked."""
    cuda = [p for p in providers if p in CUDA_PROVIDERS]
    reason = cuda_unavailable_reason() if cuda else None
    if reason is None:
        return providers
    others = [p for p in providers if p not in CUDA_PROVIDERS]
    if require_gpu and not any(p in GPU_PROVIDERS for p in others):
        raise ModelLoadError(f"a GPU is required (require_gpu) but {cuda} cannot run: {reason}")
    logger.info("%s: %s not tried: %s", model_name, cuda, reason)
    return others


def usable_providers(model_name: str, runtime: RuntimeSettings) -> list[str]:
    """The runtime's providers that this onnxruntime build has and can use, in its order."""
    providers = select_providers(runtime.providers, ort.get_available_providers())
    return _without_unusable_cuda(model_name, providers, runtime.require_gpu)


def create_session(
    model: RegisteredModel, runtime: RuntimeSettings
) -> tuple[ort.InferenceSession, str]:
    """Opens the model on the best provider there is; returns the session and the provider used."""
    built = select_providers(runtime.providers, ort.get_available_providers())
    if runtime.require_gpu and not any(p in GPU_PROVIDERS for p in built):
        raise ModelLoadError(
            "a GPU is required (require_gpu) but this onnxruntime build has none of "
            f"{runtime.providers}; available: {ort.get_available_providers()}"
        )
    providers = usable_providers(model.manifest.name, runtime)
    wanted_gpu = [p for p in providers if p in GPU_PROVIDERS]
    options = ort.SessionOptions()
    options.intra_op_num_threads = runtime.intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads would burn the cores that decoding and HTTP need between batches.
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if runtime.allow_spinning else "0"
    )
    try:
        session = ort.InferenceSession(
            str(model.onnx_path), sess_options=options, providers=providers
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable files
        raise ModelLoadError(f"cannot load {model.onnx_path}: {exc}") from exc
    active = session.get_providers()[0]
    if runtime.require_gpu and active not in GPU_PROVIDERS:
        raise ModelLoadError(
            f"a GPU is required (require_gpu) but {model.manifest.name} runs on {active}: "
            f"{wanted_gpu} could not be initialised (no device, or its CUDA libraries are missing)"
        )
    if wanted_gpu and active not in GPU_PROVIDERS:
        logger.warning(
            "%s: %s unusable, falling back to %s", model.manifest.name, wanted_gpu, active
        )
    logger.info("model %s loaded on %s", model.manifest.name, active)
    return session, active


@dataclass(frozen=True)
class ForwardResult:
    embeddings: npt.NDArray[np.float32]
    logits: npt.NDArray[np.float32] | None


def pool_embeddings(output: npt.NDArray[np.float32], pooling: Pooling) -> npt.NDArray[np.float32]:
    """Reduces the model's output tensor to (batch, dim) as the manifest says."""
    if pooling is Pooling.NONE:
        return np.asarray(output.reshape(output.shape[0], -1), dtype=np.float32)
    if pooling is Pooling.CLS:
        if output.ndim != 3:
            raise ModelLoadError(f"cls pooling needs (batch, tokens, dim), got {output.shape}")
        return np.asarray(output[:, 0, :], dtype=np.float32)
    if output.ndim in (3, 4):
        token_axes = (1,) if output.ndim == 3 else (2, 3)
        return np.asarray(output.mean(axis=token_axes), dtype=np.float32)
    raise ModelLoadError(f"mean pooling needs a 3-d or 4-d output, got {output.shape}")


def l2_normalise(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


class LoadedModel:
    """A registered model with its session: runs a preprocessed batch to embeddings and logits."""

    def __init__(self, registered: RegisteredModel, runtime: RuntimeSettings) -> None:
        self.registered = registered
        self.manifest = registered.manifest
        self.session, self.provider = create_session(registered, runtime)
        self.labels = self._read_labels()
        self._check_signature()

    def _read_labels(self) -> list[str] | None:
        path = self.registered.labels_path
        if path is None or not path.is_file():
            return None
        labels = json.loads(path.read_text(encoding="utf-8"))
        return [str(label) for label in labels]

    def _check_signature(self) -> None:
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        manifest = self.manifest
        if manifest.input_name not in inputs:
            raise ModelLoadError(f"{manifest.name}: no input {manifest.input_name!r}; has {inputs}")
        for wanted in (manifest.embedding_output, manifest.logits_output):
            if wanted is not None and wanted not in outputs:
                raise ModelLoadError(f"{manifest.name}: no output {wanted!r}; has {outputs}")
        probe = np.zeros((1, 3, manifest.input_size, manifest.input_size), dtype=np.float32)
        dim = self.forward(probe).embeddings.shape[1]
        if dim != manifest.embedding_dim:
            raise ModelLoadError(
                f"{manifest.name}: the manifest says dim {manifest.embedding_dim}, "
                f"the model gives {dim}"
            )

    @property
    def has_labels(self) -> bool:
        return self.labels is not None and self.manifest.logits_output is not None

    def forward(self, batch: npt.NDArray[np.float32]) -> ForwardResult:
        """One ONNX run over a (batch, 3, size, size) array."""
        manifest = self.manifest
        wanted = [manifest.embedding_output]
        if manifest.logits_output is not None:
            wanted.append(manifest.logits_output)
        outputs: list[Any] = self.session.run(wanted, {manifest.input_name: batch})
        embeddings = pool_embeddings(np.asarray(outputs[0], dtype=np.float32), manifest.pooling)
        if manifest.normalize:
            embeddings = l2_normalise(embeddings)
        logits = np.asarray(outputs[1], dtype=np.float32) if len(outputs) > 1 else None
        return ForwardResult(embeddings=embeddings, logits=logits)
