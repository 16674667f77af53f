"""Request and response bodies that cross service boundaries (and so belong to no one service)."""

from __future__ import annotations

import base64
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.dedup_rules import DedupRule
from services.common.errors import ErrorBody, ServiceError, described_pattern
from services.common.openapi import (
    WHOLE_NUMBER,
    JsonBody,
    all_of,
    at_least_one_of,
    exactly_one_of,
    given,
    needed_with,
)
from services.common.vectors import WireVector

NAMESPACE_PATTERN = described_pattern(
    r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
    "1 to 64 letters, digits, '_' or '-', starting with a letter or a digit",
)
MODEL_PATTERN = described_pattern(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
    "1 to 100 letters, digits, '.', '_' or '-', starting with a letter or a digit",
)
SHA256_PATTERN = described_pattern(r"^[0-9a-f]{64}$", "a sha256: 64 lower-case hex digits")
PHASH_PATTERN = described_pattern(r"^[0-9a-f]{16}$", "a pHash: 16 lower-case hex digits")


class VectorEncoding(StrEnum):
    FLOAT = "float"  # a JSON list of numbers
    BASE64 = "base64"  # little-endian float32 bytes, base64: ~4x smaller on the wire


class ImageInput(JsonBody):
    """One image in a JSON request: its bytes (base64) or the key of a stored object."""

    model_config = ConfigDict(json_schema_extra=exactly_one_of("data", "key"))

    data: str | None = Field(
        default=None, min_length=1, description="the image file, base64-encoded"
    )
    key: str | None = Field(
        default=None, pattern=SHA256_PATTERN, description="sha256 key of an object already stored"
    )

    @classmethod
    def of_bytes(cls, data: bytes) -> ImageInput:
        """Bytes the caller holds (a stored image goes by `key` instead)."""
        return cls(data=base64.b64encode(data).decode("ascii"))

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ImageInput:
        if len(given(self, "data", "key")) != 1:
            raise ValueError("give exactly one of 'data' (base64) or 'key' (stored object)")
        return self


class EmbedOptions(BaseModel):
    """Options of an embed request, from a multipart form (text, read leniently) or JSON."""

    model: str | None = Field(
        default=None, pattern=MODEL_PATTERN, description="model name; the default model if absent"
    )
    encoding: VectorEncoding = Field(default=VectorEncoding.FLOAT, strict=False)
    top_k: Annotated[int, Field(ge=0), WHOLE_NUMBER] = Field(
        default=0, description="ImageNet-style labels to return, if the model has them"
    )


class EmbedJsonRequest(JsonBody, EmbedOptions):
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
    """One image of a batch that could not be embedded; the others were."""

    index: int
    error: ErrorBody
    status: int = Field(
        default=422,
        ge=400,
        le=499,
        description="the status this image alone would have got (413 too large, 415 not a "
        "format served, 422 unreadable)",
    )

    @classmethod
    def each_of(cls, error: ServiceError, count: int) -> list[ImageFailure]:
        """The failure of each of `count` images from the embedder's answer when none could be
        embedded: its `details` name each image's failure when there were several."""
        by_index = {
            failure.index: failure
            for failure in (cls.model_validate(detail) for detail in error.details or [])
        }
        whole = ErrorBody(code=error.code, message=error.message)
        return [
            by_index.get(index, cls(index=index, error=whole, status=error.status_code))
            for index in range(count)
        ]

    def as_error(self, field: str | None = None, prefix: str = "") -> ServiceError:
        """The caller's error for this image, with the status the embedder gave it."""
        return ServiceError(
            self.status, self.error.code, f"{prefix}{self.error.message}", field=field
        )


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
    dedup: DedupRule | None = Field(
        default=None,
        description="how dedup decides near-duplicates of this model's images by default "
        "(services/common/dedup_rules.py; GET /v1/dedup/collections shows the rule in force)",
    )


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class ScoreRequest(JsonBody):
    """Vectors to score against a reference set (POST /v1/score on the filter)."""

    set: str = Field(description="reference set name")
    vectors: list[WireVector] = Field(min_length=1)
    model: str | None = Field(
        default=None,
        pattern=MODEL_PATTERN,
        description="model of the vectors, checked against the set",
    )
    observe: bool = Field(
        default=False,
        description="add the scores to the set's background sketch (a crawl's scores), so "
        "`shares` boundaries settle as the crawl runs",
    )


class TierSource(StrEnum):
    """Where a set's tier boundaries come from (services/common/tiers.py)."""

    PAPER = "paper"  # fixed numbers: the paper's, for its encoders (or configured per model)
    SHARES = "shares"  # quantiles of a background sample's scores at configured shares
    CALIBRATED = "calibrated"  # from people's labels: the precision each tier must reach


class Tier(StrEnum):
    """The paper's relevance tiers, lowest first (the filter decides, the gateway filters)."""

    REJECTED = "Rejected"
    BRONZE = "Bronze"
    SILVER = "Silver"
    GOLD = "Gold"
    PLATINUM = "Platinum"
    DIAMOND = "Diamond"


class ScoreResult(BaseModel):
    score: float = Field(description="mean cosine similarity to the set's references")
    tier: Tier
    # None only from a filter older than tier versions (a rolling upgrade)
    tier_source: TierSource | None = Field(
        default=None, description="where the set's boundaries come from"
    )
    tiers_version: int | None = Field(
        default=None, description="the version of the set's boundaries it was tiered by"
    )
    accepted: bool
    country_scores: dict[str, float] | None = None
    best_country: str | None = None


class ScoreResponse(BaseModel):
    set: str
    model: str
    rho: float
    references_version: int | None = Field(
        default=None, description="the set's references the scores were made by"
    )
    results: list[ScoreResult]


class DedupCheckRequest(JsonBody):
    """Near-duplicates of vectors (in a model's collection) and/or of pHashes (in a namespace)."""

    model_config = ConfigDict(
        json_schema_extra=all_of(
            at_least_one_of("vectors", "phashes", lists=True),
            needed_with("model", "vectors", field_is_list=True),
        )
    )

    namespace: str = Field(default="default", pattern=NAMESPACE_PATTERN)
    model: str | None = Field(
        default=None, pattern=MODEL_PATTERN, description="needed with vectors"
    )
    vectors: list[WireVector] = Field(default_factory=list)
    phashes: list[str] = Field(default_factory=list, description="16 hex digits each")
    threshold: float | None = Field(default=None, gt=0, le=1, description="ε; the model's default")
    max_hamming: Annotated[int, Field(ge=0, le=64), WHOLE_NUMBER] | None = None
    limit: Annotated[int, Field(ge=1, le=1000), WHOLE_NUMBER] | None = None
    images: list[str] = Field(
        default_factory=list,
        description="the images the vectors are of, base64, one per vector (or none): each "
        "vector's `duplicate_of` then checks near candidates on their pixels, as an insert "
        "of a stored image does",
    )

    @model_validator(mode="after")
    def _something_to_check(self) -> DedupCheckRequest:
        if not self.vectors and not self.phashes:
            raise ValueError("send 'vectors' (with 'model') or 'phashes', or both")
        if self.images and len(self.images) != len(self.vectors):
            raise ValueError("send one image per vector in 'images', or none")
        if self.vectors and self.model is None:
            raise ValueError(
                "'model' is needed to check vectors: each model has its own collection"
            )
        return self


class DuplicateOf(BaseModel):
    id: str
    by: str = Field(
        description="'pixels' (a near candidate its pixels call a copy), 'embedding' (cosine "
        ">= ε) or 'phash'"
    )
    score: float | None = None
    distance: int | None = None


class Neighbour(BaseModel):
    id: str = Field(description="sha256 of the stored image")
    score: float = Field(description="cosine similarity")


class PHashMatch(BaseModel):
    id: str
    distance: int = Field(description="Hamming distance between the 64-bit pHashes")


class VectorCheck(BaseModel):
    neighbours: list[Neighbour] = Field(description="stored images at cosine >= ε, nearest first")
    duplicate_of: DuplicateOf | None = Field(
        default=None, description="what an insert of this image would decide"
    )


class PHashCheck(BaseModel):
    phash: str
    matches: list[PHashMatch]


class DedupCheckResponse(BaseModel):
    namespace: str
    model: str | None
    threshold: float | None
    max_hamming: int
    vectors: list[VectorCheck]
    phashes: list[PHashCheck]


class DedupInsertRequest(JsonBody):
    """Insert an image's vector (and pHash) unless a near-duplicate is already stored."""

    model_config = ConfigDict(
        json_schema_extra=all_of(at_least_one_of("vector", "phash"), needed_with("model", "vector"))
    )

    id: str = Field(pattern=SHA256_PATTERN, description="sha256 of the image")
    namespace: str = Field(default="default", pattern=NAMESPACE_PATTERN)
    model: str | None = Field(default=None, pattern=MODEL_PATTERN)
    vector: WireVector | None = None
    phash: str | None = Field(default=None, pattern=PHASH_PATTERN)
    threshold: float | None = Field(default=None, gt=0, le=1)
    max_hamming: Annotated[int, Field(ge=0, le=64), WHOLE_NUMBER] | None = None
    match_phash: bool = Field(
        default=False,
        description="also call it a duplicate when the pHash matches (always, with no vector)",
    )
    stored: bool = Field(
        default=False,
        description="the image is in the shared store (SEAVL_STORAGE_…) under its id, as the "
        "gateway keeps uploads and crawled images: near candidates are then checked on their "
        "pixels, which finds grayscale, cropped, framed and re-compressed copies and passes "
        "over different photos of one scene",
    )

    @model_validator(mode="after")
    def _vector_or_phash(self) -> DedupInsertRequest:
        if self.vector is None and self.phash is None:
            raise ValueError("send 'vector' (with 'model') or 'phash'")
        if self.vector is not None and self.model is None:
            raise ValueError("'model' is needed with 'vector'")
        return self


class DedupInsertResponse(BaseModel):
    status: str = Field(description="'inserted' or 'duplicate'")
    id: str
    duplicate_of: DuplicateOf | None = None


class DedupInsertBatch(JsonBody):
    """Several inserts in order, under one lock: later items see the ones kept before them."""

    items: list[DedupInsertRequest] = Field(min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _one_namespace(self) -> DedupInsertBatch:
        if len({item.namespace for item in self.items}) != 1:
            raise ValueError("all items of a batch share one namespace")
        return self


class DedupInsertBatchResponse(BaseModel):
    results: list[DedupInsertResponse]


class DroppedCollection(BaseModel):
    """A collection forgotten (`DELETE /v1/dedup/collections/...`), to be inserted again."""

    namespace: str
    model: str
    points: int = Field(description="the points it held, forgotten with their pHashes")
