"""Request and response bodies that cross service boundaries (and so belong to no one service)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field, model_validator

from services.common.errors import ErrorBody
from services.common.vectors import WireVector


class VectorEncoding(StrEnum):
    FLOAT = "float"  # a JSON list of numbers
    BASE64 = "base64"  # little-endian float32 bytes, base64: ~4x smaller on the wire


class ImageInput(BaseModel):
    """One image in a JSON request: its bytes (base64) or the key of a stored object."""

    data: str | None = Field(default=None, description="the image file, base64-encoded")
    key: str | None = Field(default=None, description="sha256 key of an object already stored")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ImageInput:
        if (self.data is None) == (self.key is None):
            raise ValueError("give exactly one of 'data' (base64) or 'key' (stored object)")
        return self


class EmbedOptions(BaseModel):
    model: str | None = Field(default=None, description="model name; the default model if absent")
    encoding: VectorEncoding = VectorEncoding.FLOAT
    top_k: int = Field(
        default=0, ge=0, description="ImageNet-style labels to return, if the model has them"
    )


class EmbedJsonRequest(EmbedOptions):
    images: list[ImageInput] = Field(min_length=1)


class LabelScore(BaseModel):
    index: int
    label: str
    score: float


class EmbeddedImage(BaseModel):
    index: int
    model: str
    dim: int
    embedding: list[float] | str
    sha256: str
    phash: str
    width: int
    height: int
    format: str
    labels: list[LabelScore] | None = None


class ImageFailure(BaseModel):
    index: int
    error: ErrorBody


class EmbedResponse(BaseModel):
    model: str
    encoding: VectorEncoding
    results: list[EmbeddedImage | ImageFailure]


class ModelInfo(BaseModel):
    name: str
    description: str
    embedding_dim: int
    input_size: int
    default: bool
    loaded: bool
    provider: str | None
    has_labels: bool
    preset: str | None


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class ScoreRequest(BaseModel):
    """Vectors to score against a reference set (POST /v1/score on the filter)."""

    set: str = Field(description="reference set name")
    vectors: list[WireVector] = Field(min_length=1)
    model: str | None = Field(
        default=None, description="model of the vectors, checked against the set"
    )


class ScoreResult(BaseModel):
    score: float = Field(description="mean cosine similarity to the set's references")
    tier: str
    accepted: bool
    country_scores: dict[str, float] | None = None
    best_country: str | None = None


class ScoreResponse(BaseModel):
    set: str
    model: str
    rho: float
    results: list[ScoreResult]
