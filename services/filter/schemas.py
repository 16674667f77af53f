"""Bodies of the filter's reference-set and calibration endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, model_validator

from services.common.countries import SeaCountry
from services.common.errors import described_pattern
from services.common.schemas import SHA256_PATTERN
from services.common.vectors import MAX_DIMENSION, WireVector
from services.filter.relevance import Label

SET_NAME_PATTERN = described_pattern(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
    "1 to 100 letters, digits, '.', '_' or '-', starting with a letter or a digit",
)


class CreateSetRequest(BaseModel):
    name: str = Field(pattern=SET_NAME_PATTERN)
    model: str = Field(
        min_length=1, max_length=100, description="the embedder model of its vectors"
    )
    description: str = ""
    dim: int | None = Field(
        default=None,
        gt=0,
        le=MAX_DIMENSION,
        description="fixed by the first references if absent",
    )


class ReferenceSetInfo(BaseModel):
    name: str
    model: str
    dim: int | None
    description: str
    rho: float = Field(description="the acceptance threshold in force")
    rho_source: str = Field(description="'model default' or 'calibration'")
    references: int
    countries: dict[str, int]
    created_at: datetime


class ReferenceSetList(BaseModel):
    sets: list[ReferenceSetInfo]


class ImageOrVector(BaseModel):
    """A vector, or an image for the embedder: base64 bytes or the key of a stored object."""

    vector: WireVector | None = None
    image: str | None = Field(default=None, description="image file, base64")
    key: str | None = Field(default=None, description="sha256 key of a stored image")

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageOrVector:
        given = [x for x in (self.vector, self.image, self.key) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'vector', 'image' (base64) or 'key'")
        return self


class NewReference(ImageOrVector):
    country: SeaCountry | None = None
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)


class AddReferencesRequest(BaseModel):
    references: list[NewReference] = Field(min_length=1)
    model: str | None = Field(default=None, description="model of the given vectors, if known")


class AddReferencesResponse(BaseModel):
    ids: list[int]
    references: int


class LabelledSample(ImageOrVector):
    label: Label


class CalibrationRequest(BaseModel):
    samples: list[LabelledSample] = Field(min_length=1)
    target_precision: float = Field(default=0.85, gt=0, le=1)
    apply: bool = Field(default=False, description="set the set's rho to the recommendation")
    model: str | None = None


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
