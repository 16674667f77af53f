"""What the embedder's privacy and safety detectors answer, shared by the embedder (which runs
them) and the gateway (which blurs, flags and holds by them)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from services.common.openapi import JsonBody
from services.common.schemas import EmbeddedImage, ImageFailure, ImageInput


class PiiKind(StrEnum):
    """What identifies a person in a photo (SEA-VL asked contributors to blur both)."""

    FACE = "face"
    PLATE = "plate"


class Region(BaseModel):
    """A detected region, as fractions of the upright image (independent of the size sent)."""

    kind: PiiKind
    box: tuple[float, float, float, float] = Field(
        description="x0, y0, x1, y1, each from 0 to 1 of the upright image's width or height"
    )
    confidence: float = Field(ge=0, le=1)


class Detectors(BaseModel):
    """The model behind each kind of finding; null where none runs (nothing is then found)."""

    faces: str | None
    plates: str | None
    unsafe: str | None


class DetectRequest(JsonBody):
    images: list[ImageInput] = Field(min_length=1)
    embed: bool = Field(
        default=False,
        description="also answer each image's embedding by the default model (base64 vector, "
        "as `POST /v1/embed` answers it): the pass encodes every image anyway, and a caller "
        "that would embed the same bytes next need not ask another replica to encode them again",
    )


class DetectedImage(BaseModel):
    index: int
    regions: list[Region]
    unsafe: float | None = Field(
        description="explicit-content score from 0 to 1; null when no unsafe-content model runs"
    )
    width: int = Field(
        description="the upright width the image was analysed at (at most the embedder's "
        "`detection.long_side` on the long side)"
    )
    height: int
    vehicles: float | None = Field(
        default=None,
        description="the encoder's belief that a vehicle is shown (0 to 1): plates are looked "
        "for from the embedder's `plates_from_vehicles` share; null when its encoder has no "
        "ImageNet classes (plates are then looked for in every image)",
    )
    embedded: EmbeddedImage | None = Field(
        default=None, description="the image's embedding, when the request asked for it (`embed`)"
    )


class DetectResponse(BaseModel):
    detectors: Detectors
    results: list[DetectedImage | ImageFailure]
