"""Read a PyTorch state dict saved in torch's legacy (pre-1.6) format, without torch.

The default encoder's weights ship as such a file. Its layout is a run of pickles (magic number,
protocol version, system info, the state dict with tensors as persistent ids, the list of storage
keys) followed by each storage as an int64 element count and its raw little-endian bytes. The
unpickler below admits only the handful of names such a file needs, so a hostile file cannot run
code.
"""

from __future__ import annotations

import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

STORAGE_DTYPES: dict[str, npt.DTypeLike] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class LegacyCheckpointError(ValueError):
    """The file is not a legacy torch checkpoint this reader understands."""


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype[Any]
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass(frozen=True)
class _StorageType:
    name: str


def _rebuild_tensor_v2(
    storage: _StorageRef, offset: int, shape: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _TensorRef:
    return _TensorRef(storage, offset, tuple(shape), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names a state dict of plain tensors uses."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise LegacyCheckpointError(f"refusing to load {module}.{name} from a checkpoint")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise LegacyCheckpointError(f"unexpected persistent id {pid!r}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        type_name = storage_type.name if isinstance(storage_type, _StorageType) else storage_type
        if type_name not in STORAGE_DTYPES:
            raise LegacyCheckpointError(f"unsupported storage type {type_name!r}")
        return _StorageRef(str(key), np.dtype(STORAGE_DTYPES[type_name]), int(numel))


def _read_storages(
    stream: IO[bytes], keys: list[str], refs: dict[str, _StorageRef]
) -> dict[str, npt.NDArray[Any]]:
    storages: dict[str, npt.NDArray[Any]] = {}
    for key in keys:
        header = stream.read(8)
        if len(header) != 8:
            raise LegacyCheckpointError(f"file ends before storage {key}")
        (numel,) = struct.unpack("<q", header)
        ref = refs.get(key)
        if ref is None or numel != ref.numel:
            raise LegacyCheckpointError(f"storage {key} has {numel} elements, expected a match")
        raw = stream.read(numel * ref.dtype.itemsize)
        if len(raw) != numel * ref.dtype.itemsize:
            raise LegacyCheckpointError(f"storage {key} is truncated")
        storages[key] = np.frombuffer(raw, dtype=ref.dtype.newbyteorder("<"))
    return storages


def _materialise(tensor: _TensorRef, storage: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Applies the tensor's offset, shape and strides (which need not be contiguous)."""
    last = tensor.offset + sum(
        (n - 1) * s for n, s in zip(tensor.shape, tensor.stride, strict=True)
    )
    if tensor.shape and (min(tensor.shape) > 0 and last >= storage.size):
        raise LegacyCheckpointError("tensor view reaches past its storage")
    base = storage[tensor.offset :]
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        base, shape=tensor.shape, strides=[s * itemsize for s in tensor.stride], writeable=False
    )
    return np.array(view, dtype=storage.dtype.newbyteorder("="), order="C", copy=True)


def load_legacy_state_dict(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Returns the checkpoint's tensors as numpy arrays, keyed by their state-dict names."""
    with path.open("rb") as stream:
        try:
            magic = _RestrictedUnpickler(stream).load()
            protocol = _RestrictedUnpickler(stream).load()
        except (pickle.UnpicklingError, EOFError, LegacyCheckpointError) as exc:
            raise LegacyCheckpointError(f"{path} is not a legacy torch checkpoint") from exc
        if magic != LEGACY_MAGIC_NUMBER or protocol != LEGACY_PROTOCOL_VERSION:
            raise LegacyCheckpointError(f"{path} is not a legacy torch checkpoint")
        sys_info = _RestrictedUnpickler(stream).load()
        if not sys_info.get("little_endian", False):
            raise LegacyCheckpointError("big-endian checkpoints are not supported")
        state = _RestrictedUnpickler(stream).load()
        storage_keys = _RestrictedUnpickler(stream).load()
        tensors: dict[str, _TensorRef] = {
            name: value for name, value in state.items() if isinstance(value, _TensorRef)
        }
        refs = {t.storage.key: t.storage for t in tensors.values()}
        storages = _read_storages(stream, [str(k) for k in storage_keys], refs)
        if stream.read(1):
            raise LegacyCheckpointError("trailing bytes after the last storage")
    return {name: _materialise(t, storages[t.storage.key]) for name, t in tensors.items()}
