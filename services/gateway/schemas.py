"""Bodies of the gateway's public API."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from services.common.captions import CaptionLanguage
from services.common.countries import SeaCountry
from services.common.openapi import JsonBody, all_of, exactly_one_of, given, needed_with
from services.common.privacy import Detectors, Region
from services.common.reference_sets import SET_NAME_PATTERN
from services.common.schemas import (
    MODEL_PATTERN,
    NAMESPACE_PATTERN,
    PHASH_PATTERN,
    SHA256_PATTERN,
    DuplicateOf,
    Neighbour,
    PHashMatch,
    Tier,
    TierSource,
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


class Category(StrEnum):
    """What a submission shows: the SEA-VL form's categories."""

    DAILY_LIFE = "daily_life"
    LOCAL_PRODUCTS = "local_products"
    POP_CULTURE = "pop_culture"
    LANDMARK = "landmark"
    TRADITION_ART = "tradition_art"
    TRANSPORTATION = "transportation"
    PLANT_ANIMAL = "plant_animal"
    SPORT_RECREATION = "sport_recreation"
    CUISINE = "cuisine"


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
    category: Category | None = Field(default=None, description="what the image shows")
    consent: bool | None = Field(
        default=None,
        description="the contributor took the photo, removed personal information, and releases "
        "it under CC-BY-SA 4.0 (required from people's accounts)",
    )
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


class ReviewState(BaseModel):
    """What validators made of an image (the paper's flags, appendix B): each flag is True when
    its threshold is met by at least two reviews, None when met by fewer, False when missed."""

    count: int = Field(description="reviews in")
    needed: int = Field(description="2, or 3 when the first two agreed on under 80%")
    quality: bool | None
    caption_fit: bool | None
    relevance: bool | None
    overall: bool | None


class PrivacyOut(BaseModel):
    """The privacy and safety pass before the image was stored (services/gateway/privacy.py)."""

    faces: int
    plates: int
    blurred: bool = Field(description="the stored image is the blurred one; the original was not")
    regions: list[Region]
    unsafe_score: float | None = Field(description="null when no unsafe-content model ran")
    held: bool = Field(description="held for an admin's review: never exported nor reviewed")
    detectors: Detectors


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
    tier_source: TierSource | None = Field(
        default=None, description="where the boundaries the tier was decided by come from"
    )
    tiers_version: int | None = Field(default=None, description="their version, in the set")
    accepted: bool | None = Field(
        description="the filter's verdict until validators review the image; from the first "
        "review on, the overall flag"
    )
    best_country: str | None
    duplicate_of: str | None = Field(
        description="the image it copies; for a contributor only when that one is theirs too"
    )
    is_duplicate: bool | None = Field(description="None until dedup has run")
    category: Category | None = None
    review: ReviewState
    points: float = Field(default=0, description="points the submission earned its contributor")
    notes: str | None
    error: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    captions: list[CaptionOut] = Field(default_factory=list)
    privacy: PrivacyOut | None = Field(
        default=None, description="null for images stored before the pass, or with it off"
    )


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
    tier_source: TierSource | None
    tiers_version: int | None
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
    duplicate_of: DuplicateOf | None = Field(
        default=None,
        description="the stored image the pipeline would record it as a duplicate of (asked "
        "with an image: near candidates checked on their pixels; with an embedding: the "
        "nearest at cosine >= ε)",
    )


class ImageSource(StrEnum):
    """Where an image came from: a person's upload, or a crawl."""

    CROWD = "crowd"
    CRAWL = "crawl"


class KeepPolicy(StrEnum):
    """Which crawled images are stored: the accepted ones (the rest keep a small row), or all."""

    ACCEPTED = "accepted"
    ALL = "all"


class CrawlPolicy(JsonBody):
    keep: KeepPolicy = Field(default=KeepPolicy.ACCEPTED, strict=False)
    rho: float | None = Field(
        default=None, ge=-1, le=1, description="acceptance threshold instead of the set's ρ"
    )


class CrawlIn(JsonBody):
    source: str = Field(
        min_length=1,
        max_length=4096,
        description="img2dataset output: a folder the gateway and workers can read, or "
        "s3://bucket/prefix on the object store's server",
    )
    reference_set: str | None = Field(
        default=None, pattern=SET_NAME_PATTERN, description="the pipeline's set if absent"
    )
    policy: CrawlPolicy = CrawlPolicy()
    namespace: str | None = Field(
        default=None, pattern=NAMESPACE_PATTERN, description="dedup namespace; the pipeline's"
    )
    caption_language: str | None = Field(
        default=None, description="a caption is queued for each image kept, in this language"
    )


class TierCount(BaseModel):
    tier: str
    count: int
    share: float = Field(description="of the images scored")


class ShardCounts(BaseModel):
    total: int
    queued: int
    processing: int
    done: int
    failed: int


class ImageCounts(BaseModel):
    seen: int
    accepted: int
    rejected: int
    duplicates: int
    failed: int
    stored: int


class CrawlOut(BaseModel):
    id: str
    source: str
    reference_set: str
    keep: KeepPolicy
    rho: float | None
    namespace: str
    caption_language: str | None
    status: JobStatus
    shards: ShardCounts
    images: ImageCounts
    tiers: list[TierCount] = Field(description="the paper's table: tier, count, share")
    failures: dict[str, int] = Field(description="failed images by reason")
    images_per_second: float | None
    eta_seconds: float | None
    created_at: datetime
    finished_at: datetime | None


class CrawlPage(BaseModel):
    items: list[CrawlOut]
    total: int


class ExportFilters(JsonBody):
    """Which processed images an export holds."""

    sources: list[Annotated[ImageSource, Strict(False)]] | None = Field(
        default=None, description="crowd, crawl; all if absent"
    )
    min_tier: Tier | None = Field(default=None, strict=False, description="this tier and up")
    accepted_only: bool = Field(
        default=False,
        description="only accepted images: by the filter, or for reviewed ones by their validators",
    )
    min_reviews: int | None = Field(
        default=None, ge=0, le=100, description="only images reviewed this many times or more"
    )
    countries: list[Annotated[SeaCountry, Strict(False)]] | None = Field(
        default=None, description="images tagged with, or scored best for, one of these"
    )
    duplicates: bool = Field(
        default=False, description="include duplicates (else one image per duplicate group)"
    )
    caption_languages: list[Annotated[CaptionLanguage, Strict(False)]] | None = Field(
        default=None, description="captions in these languages only; all if absent"
    )


class ExportIn(JsonBody):
    destination: str = Field(
        min_length=1,
        max_length=4096,
        description="an empty or new folder the gateway and workers can write, or "
        "s3://bucket/prefix on the object store's server",
    )
    filters: ExportFilters = ExportFilters()
    records_per_shard: int = Field(default=1000, ge=1, le=100_000)


class ExportOut(BaseModel):
    id: str
    destination: str
    filters: ExportFilters
    records_per_shard: int
    status: JobStatus
    total: int = Field(description="images matching the filters when the export started")
    written: int
    shards: int
    size_bytes: int
    summary: dict[str, Any] | None = Field(description="counts by tier, country, source")
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ExportPage(BaseModel):
    items: list[ExportOut]
    total: int
