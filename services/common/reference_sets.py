"""Reference sets and calibrations on the wire: the filter serves them, the gateway passes them
on to admins (one type for both, so the two never disagree)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from services.common.countries import SeaCountry
from services.common.errors import described_pattern
from services.common.openapi import WHOLE_NUMBER, JsonBody, exactly_one_of, given
from services.common.schemas import MODEL_PATTERN, SHA256_PATTERN, ImageInput
from services.common.tiers import (
    Boundaries,
    CalibrationTargets,
    TierBasis,
    TierShares,
    TierSource,
)
from services.common.vectors import MAX_DIMENSION, WireVector


class Label(StrEnum):
    """A person's judgement of a calibration sample's cultural relevance."""

    YES = "yes"
    NO = "no"
    NOT_SURE = "not_sure"


SET_NAME_PATTERN = described_pattern(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
    "1 to 100 letters, digits, '.', '_' or '-', starting with a letter or a digit",
)


class CreateSetRequest(JsonBody):
    name: str = Field(pattern=SET_NAME_PATTERN)
    model: str = Field(pattern=MODEL_PATTERN, description="the embedder model of its vectors")
    description: str = ""
    dim: Annotated[int, Field(gt=0, le=MAX_DIMENSION), WHOLE_NUMBER] | None = Field(
        default=None, description="fixed by the first references if absent"
    )


class TierBoundariesOut(BaseModel):
    """One version of a set's tier boundaries."""

    version: int
    source: TierSource
    basis: TierBasis
    boundaries: Boundaries = Field(description="each tier's lower bound; null: unreachable")
    shares: TierShares | None = Field(description="the shares a `shares` fit aimed at")
    samples: int = Field(description="scores or labelled samples it was fitted on")
    description: str
    references_version: int = Field(description="the set's references it was made for")
    stale: bool = Field(description="the set's references changed since: fit again")
    created_at: datetime


class TierHistory(BaseModel):
    set: str
    versions: list[TierBoundariesOut] = Field(description="oldest first; the last is in force")


class FitTiersRequest(JsonBody):
    """New boundaries for a set: `paper` (its fixed numbers), `shares` (quantiles of background
    scores: given in `scores`, else the crawl scores the set has observed) or `calibrated` (from
    a calibration's labels, which also sets ρ)."""

    source: TierSource = Field(strict=False)
    shares: TierShares | None = Field(default=None, description="`shares`: the CC3M row if absent")
    scores: list[float] | None = Field(
        default=None,
        max_length=1_000_000,
        description="`shares`: scores of a background sample against the set",
    )
    references_version: int | None = Field(
        default=None, ge=0, description="the set's references the scores were made by (checked)"
    )
    calibration_id: int | None = Field(default=None, ge=1, description="`calibrated`: which")
    targets: CalibrationTargets | None = Field(
        default=None, description="`calibrated`: precision at or above each tier"
    )
    description: str = Field(default="", max_length=500, description="where the sample is from")


class ReferenceSetInfo(BaseModel):
    name: str
    model: str
    dim: int | None
    description: str
    rho: float = Field(description="the acceptance threshold in force")
    rho_source: str = Field(
        description="'calibration', 'model default' or 'platinum boundary' (`shares` tiers: "
        "the paper kept Platinum and up)"
    )
    references: int
    # defaults: what a filter older than tier versions answers (a rolling upgrade)
    references_version: int = 0
    tiers: TierBoundariesOut | None = Field(default=None, description="the boundaries in force")
    observed_scores: int = Field(
        default=0,
        description="crawl scores in the set's sketch for its current references (`shares` "
        "boundaries are fitted again from it once it is large enough, then each time it doubles)",
    )
    countries: dict[str, int]
    created_at: datetime


class ReferenceSetList(BaseModel):
    sets: list[ReferenceSetInfo]


class ImageOrVector(ImageInput):
    """An image as every service takes it (`ImageInput`: base64 `data` or a stored `key`;
    `image` is the older name of `data` here), or a vector already made."""

    model_config = ConfigDict(json_schema_extra=exactly_one_of("vector", "image", "key"))

    # no minimum length: an empty image is the embedder's 400 `empty_image`, as in uploads
    data: str | None = Field(
        default=None,
        validation_alias=AliasChoices("image", "data"),
        description="image file, base64 (also accepted as 'data')",
    )
    vector: WireVector | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        if isinstance(value, dict) and "image" in value and "data" in value:
            raise ValueError("give the image as 'image' or as 'data', not both")
        return value

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ImageOrVector:
        if len(given(self, "vector", "data", "key")) != 1:
            raise ValueError("give exactly one of 'vector', 'image' (base64) or 'key'")
        return self


class NewReference(ImageOrVector):
    country: SeaCountry | None = Field(default=None, strict=False)
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)


class AddReferencesRequest(JsonBody):
    references: list[NewReference] = Field(min_length=1)
    model: str | None = Field(
        default=None, pattern=MODEL_PATTERN, description="model of the given vectors, if known"
    )


class AddReferencesResponse(BaseModel):
    ids: list[int]
    references: int


class LabelledSample(ImageOrVector):
    label: Label = Field(strict=False)


class CalibrationRequest(JsonBody):
    samples: list[LabelledSample] = Field(min_length=1)
    target_precision: float = Field(default=0.85, gt=0, le=1)
    apply: bool = Field(default=False, description="set the set's rho to the recommendation")
    model: str | None = Field(default=None, pattern=MODEL_PATTERN)


class TierRowOut(BaseModel):
    tier: str
    lower: float | None
    upper: float | None
    count: int
    yes: int
    no: int
    not_sure: int
    relevance: float | None = Field(description="share of 'yes' among the tier's samples")


class CalibrationOut(BaseModel):
    id: int
    set: str
    created_at: datetime
    samples: int
    target_precision: float
    tiers: list[TierRowOut]
    recommended_rho: float | None
    precision_at_rho: float | None
    accepted_at_rho: int
    applied: bool


class CalibrationList(BaseModel):
    calibrations: list[CalibrationOut]
