"""The torch-free reader of legacy checkpoints, on files written here in that format.

The writer below pickles through stand-in `torch` modules that exist only while it writes, so the
file references `torch._utils._rebuild_tensor_v2` and `torch.FloatStorage` exactly as torch's own
legacy writer does, without torch installed.
"""

from __future__ import annotations

import pickle
import struct
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.embedder.legacy_torch import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    LegacyCheckpointError,
    load_legacy_state_dict,
)


class _Storage:
    def __init__(self, key: str, array: np.ndarray) -> None:
        self.key, self.array = key, array


class _Tensor:
    def __init__(
        self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]
    ):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __reduce__(self) -> Any:
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2  # type: ignore[attr-defined]
        return rebuild, (self.storage, self.offset, self.shape, self.stride, False, OrderedDict())


@contextmanager
def _stand_in_torch() -> Iterator[types.ModuleType]:
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args: Any) -> None:
        raise AssertionError("only its name is pickled")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils  # type: ignore[attr-defined]
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        yield torch
    finally:
        del sys.modules["torch"], sys.modules["torch._utils"]


class _StatePickler(pickle.Pickler):
    def __init__(self, file: Any, torch: types.ModuleType) -> None:
        super().__init__(file, protocol=2)
        self.torch = torch

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _Storage):
            type_name = "LongStorage" if obj.array.dtype == np.int64 else "FloatStorage"
            return ("storage", getattr(self.torch, type_name), obj.key, "cpu", obj.array.size, None)
        return None


def write_legacy(path: Path, state: OrderedDict[str, _Tensor], trailing: bytes = b"") -> None:
    storages = {t.storage.key: t.storage for t in state.values()}
    with path.open("wb") as handle, _stand_in_torch() as torch:
        for header in (
            LEGACY_MAGIC_NUMBER,
            LEGACY_PROTOCOL_VERSION,
            {"protocol_version": 1001, "little_endian": True},
        ):
            pickle.dump(header, handle, protocol=2)
        _StatePickler(handle, torch).dump(state)
        pickle.dump(list(storages), handle, protocol=2)
        for storage in storages.values():
            handle.write(struct.pack("<q", storage.array.size))
            handle.write(storage.array.astype(storage.array.dtype.newbyteorder("<")).tobytes())
        handle.write(trailing)


def test_reads_contiguous_strided_and_offset_tensors(tmp_path: Path) -> None:
    weights = np.arange(24, dtype=np.float32)
    counter = np.array([7], dtype=np.int64)
    state = OrderedDict(
        contiguous=_Tensor(_Storage("1", weights), 0, (2, 3, 4), (12, 4, 1)),
        # the same storage seen transposed, as TF-ported weights are stored
        transposed=_Tensor(_Storage("1", weights), 0, (4, 6), (1, 4)),
        offset=_Tensor(_Storage("1", weights), 20, (4,), (1,)),
        counter=_Tensor(_Storage("2", counter), 0, (), ()),
    )
    path = tmp_path / "legacy.pth"
    write_legacy(path, state)
    loaded = load_legacy_state_dict(path)
    np.testing.assert_array_equal(loaded["contiguous"], weights.reshape(2, 3, 4))
    np.testing.assert_array_equal(loaded["transposed"], weights.reshape(6, 4).T)
    np.testing.assert_array_equal(loaded["offset"], weights[20:24])
    assert loaded["counter"].dtype == np.int64 and int(loaded["counter"]) == 7


def test_refuses_code_in_the_pickle(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self) -> Any:
            return (print, ("owned",))

    path = tmp_path / "evil.pth"
    with path.open("wb") as handle:
        pickle.dump(LEGACY_MAGIC_NUMBER, handle, protocol=2)
        pickle.dump(LEGACY_PROTOCOL_VERSION, handle, protocol=2)
        pickle.dump({"little_endian": True}, handle, protocol=2)
        pickle.dump(OrderedDict(x=Exploit()), handle, protocol=2)
    with pytest.raises(LegacyCheckpointError, match="refusing to load .*print"):
        load_legacy_state_dict(path)


def test_refuses_files_of_other_formats(tmp_path: Path) -> None:
    path = tmp_path / "zip.pth"
    path.write_bytes(b"PK\x03\x04 a zip-format checkpoint")
    with pytest.raises(LegacyCheckpointError, match="not a legacy torch checkpoint"):
        load_legacy_state_dict(path)


def test_refuses_truncated_and_padded_files(tmp_path: Path) -> None:
    state = OrderedDict(w=_Tensor(_Storage("1", np.ones(8, dtype=np.float32)), 0, (8,), (1,)))
    path = tmp_path / "ok.pth"
    write_legacy(path, state)
    data = path.read_bytes()
    (tmp_path / "short.pth").write_bytes(data[:-4])
    with pytest.raises(LegacyCheckpointError, match="truncated"):
        load_legacy_state_dict(tmp_path / "short.pth")
    write_legacy(tmp_path / "long.pth", state, trailing=b"\x00")
    with pytest.raises(LegacyCheckpointError, match="trailing"):
        load_legacy_state_dict(tmp_path / "long.pth")
