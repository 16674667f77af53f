"""Vectors on the wire: JSON lists or base64 float32, validated once for every service."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from pydantic import Field

from services.common.errors import ServiceError

Vector = npt.NDArray[np.float32]
# Embeddings in use have 512 to 4096 dimensions; a bound keeps one request from making a service
# allocate an index or a matrix of any size it names.
MAX_DIMENSION = 8192
# A vector as a client sends it: a list of numbers, or little-endian float32 bytes in base64.
WireVector = Annotated[
    list[float] | str,
    Field(description="a list of numbers, or little-endian float32 bytes base64-encoded"),
]


def _invalid(code: str, message: str, field: str) -> ServiceError:
    return ServiceError(422, code, message, field=field)


def decode_vector(value: list[float] | str, field: str) -> Vector:
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _invalid("invalid_vector", f"{field} is not valid base64", field) from exc
        if len(raw) % 4:
            raise _invalid("invalid_vector", f"{field}: base64 length is not whole float32s", field)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    with np.errstate(over="ignore"):  # past float32 is infinity, refused with the NaNs below
        return np.asarray(value, dtype=np.float32)


def parse_vectors(
    values: list[Any], field: str = "vectors", dim: int | None = None
) -> npt.NDArray[np.float32]:
    """(n, d) unit vectors; refuses empty input, ragged or wrong dimensions, NaN and infinity."""
    if not values:
        raise _invalid("empty_input", f"{field} is empty: send at least one vector", field)
    rows = [decode_vector(v, f"{field}[{i}]") for i, v in enumerate(values)]
    expected = dim if dim is not None else rows[0].size
    if expected > MAX_DIMENSION:
        raise _invalid(
            "dimension_too_large",
            f"{field} have {expected} dimensions, more than the {MAX_DIMENSION} accepted",
            field,
        )
    for index, row in enumerate(rows):
        name = f"{field}[{index}]"
        if row.size != expected:
            raise _invalid(
                "dimension_mismatch", f"{name} has {row.size} dimensions, expected {expected}", name
            )
        if not np.all(np.isfinite(row)):
            raise _invalid("invalid_vector", f"{name} contains NaN or infinite values", name)
        if not np.any(row):
            raise _invalid("invalid_vector", f"{name} is all zeros and has no direction", name)
    if expected == 0:
        raise _invalid("invalid_vector", f"{field} holds empty vectors", field)
    matrix = np.stack(rows).astype(np.float32)
    return normalise_rows(matrix)


def normalise_rows(matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(matrix.astype(np.float64), axis=1, keepdims=True)
    return np.asarray(matrix / norms, dtype=np.float32)


def vector_to_bytes(vector: npt.NDArray[Any], dtype: str = "<f4") -> bytes:
    return np.ascontiguousarray(vector, dtype=dtype).tobytes()


def vector_from_bytes(raw: bytes, dtype: str = "<f4") -> npt.NDArray[Any]:
    return np.frombuffer(raw, dtype=dtype).copy()
