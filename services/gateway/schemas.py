"""Bodies of the gateway's public API."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.common.countries import SeaCountry
from services.common.openapi import JsonBody, all_of, exactly_one_of, given, needed_with
from services.common.schemas import (
    MODEL_PATTERN,
    PHASH_PATTERN,
    SHA256_PATTERN,
    Neighbour,
    PHashMatch,
    Tier,
)
from services.common.states import JobStatus
from services.common.vectors import WireVector


class NativeLanguage(StrEnum):
    """The SEA-VL form's native-language choices (ISO 639-3)."""

    MYA = "mya"
    FIL = "fil"
    IND = "ind"
    KHM = "khm"
    LAO = "lao"
    ZLM = "zlm"
    TDT = "tdt"
    THA = "tha"
    VIE = "vie"
    OTHER = "other"


class UploadMetadata(BaseModel):
    countries: list[SeaCountry] = Field(
        default_factory=list,
        max_length=len(SeaCountry),
        description="countries it is relevant to, each once",
    )
    location: str | None = Field(
        default=None, max_length=200, description="where taken: 'City, Country'"
    )
    native_language: NativeLanguage | None = None
    caption_native: str | None = Field(default=None, max_length=5000)
    caption_en: str | None = Field(default=None, max_length=5000)
    caption: bool = Field(default=False, description="queue a caption by the captioner")
    caption_language: str | None = Field(
        default=None,
        description="its language: en, th, ms, tl, id or vi (en by default; implies caption)",
    )

    @field_validator("countries")
    @classmethod
    def _each_once(cls, countries: list[SeaCountry]) -> list[SeaCountry]:
        return list(dict.fromkeys(countries))


class CaptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read straight from a CaptionRow

    language: str
    status: JobStatus = Field(description="queued, done or failed")
    caption: str | None
    detected_language: str | None = Field(description="what the caption is written in")
    language_ok: bool | None = Field(
        description="written in the language asked for; null until done, or when the caption "
        "is too short or unsure to tell"
    )
    language_confidence: float | None = Field(
        description="the language detector's confidence in `detected_language` (or in its "
        "best guess when that is null)"
    )
    backend: str | None = Field(description="'openai-compatible' (a VLM) or 'offline-labels'")
    model: str | None
    prompt_kind: str | None = Field(description="'aware' (of the place) or 'agnostic'")
    location: str | None
    error: str | None
    attempts: int
    updated_at: datetime


class CaptionBatchIn(JsonBody):
    image_ids: list[Annotated[str, Field(pattern=SHA256_PATTERN)]] = Field(
        min_length=1, max_length=1000, description="ids (sha256) of stored images"
    )
    language: str = Field(default="en", description="en, th, ms, tl, id or vi")
    location_aware: bool | None = Field(
        default=None, description="by default, aware when the image's place or country is known"
    )
    redo: bool = Field(default=False, description="caption again where a caption is done")


class CaptionBatchOut(BaseModel):
    language: str
    queued: list[str] = Field(description="captions queued (after their image's processing)")
    already_done: list[str] = Field(description="captions already done (see redo)")
    unknown: list[str] = Field(description="no such image")


class ImageOut(BaseModel):
    id: str = Field(description="sha256 of the stored image (location data removed)")
    status: JobStatus
    format: str
    size_bytes: int
    width: int
    height: int
    phash: str | None = Field(description="64-bit perceptual hash, once processed")
    countries: list[str]
    location: str | None
    native_language: str | None
    caption_native: str | None
    caption_en: str | None
    model: str | None
    score: float | None
    tier: Tier | None
    accepted: bool | None
    best_country: str | None
    duplicate_of: str | None
    is_duplicate: bool | None = Field(description="None until dedup has run")
    notes: str | None
    error: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    captions: list[CaptionOut] = Field(default_factory=list)


class ImagePage(BaseModel):
    items: list[ImageOut]
    total: int
    limit: int
    offset: int


class RelevanceOut(BaseModel):
    set: str
    model: str
    score: float
    tier: Tier
    accepted: bool
    best_country: str | None
    country_scores: dict[str, float] | None
    phash: str
    sha256: str


class DedupQuery(JsonBody):
    """What the bulk uploader already computed: a pHash, or an embedding with its model."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=all_of(
            exactly_one_of("phash", "embedding"), needed_with("model", "embedding")
        ),
    )

    phash: str | None = Field(default=None, pattern=PHASH_PATTERN)
    embedding: WireVector | None = None
    model: str | None = Field(default=None, pattern=MODEL_PATTERN)

    @model_validator(mode="after")
    def _phash_or_embedding(self) -> DedupQuery:
        if len(given(self, "phash", "embedding")) != 1:
            raise ValueError("send exactly one of 'phash', or 'embedding' with 'model'")
        if self.embedding is not None and self.model is None:
            raise ValueError("'model' is needed with 'embedding'")
        return self


class DuplicatesOut(BaseModel):
    by_embedding: list[Neighbour]
    by_phash: list[PHashMatch]
    is_duplicate: bool
