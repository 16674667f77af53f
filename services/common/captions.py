"""What the captioner and its callers share: caption languages and the captions API's bodies.

The languages are the SEA-VL paper's caption languages. Callers may also name them the way the
gateway's upload form names native languages (ISO 639-3: `tha`, `zlm`, `fil`, `ind`, `vie`).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from services.common.countries import CountryCode, SeaCountry
from services.common.errors import ServiceError
from services.common.schemas import ImageInput


class CaptionLanguage(StrEnum):
    ENGLISH = "en"
    THAI = "th"
    MALAY = "ms"
    TAGALOG = "tl"
    INDONESIAN = "id"
    VIETNAMESE = "vi"


LANGUAGE_ALIASES: dict[str, CaptionLanguage] = {
    "eng": CaptionLanguage.ENGLISH,
    "tha": CaptionLanguage.THAI,
    "zlm": CaptionLanguage.MALAY,
    "zsm": CaptionLanguage.MALAY,
    "msa": CaptionLanguage.MALAY,
    "fil": CaptionLanguage.TAGALOG,
    "tgl": CaptionLanguage.TAGALOG,
    "ind": CaptionLanguage.INDONESIAN,
    "vie": CaptionLanguage.VIETNAMESE,
}


class UnsupportedLanguageError(ServiceError):
    def __init__(self, language: str) -> None:
        supported = [language.value for language in CaptionLanguage]
        super().__init__(
            422,
            "unsupported_language",
            f"captions are not available in {language!r}; supported: {', '.join(supported)}",
            field="language",
            details=[{"supported": supported, "aliases": sorted(LANGUAGE_ALIASES)}],
        )


def caption_language(name: str) -> CaptionLanguage:
    """The caption language a caller means by `name` (ISO 639-1, or 639-3 as in uploads)."""
    key = name.strip().lower()
    if key in LANGUAGE_ALIASES:
        return LANGUAGE_ALIASES[key]
    try:
        return CaptionLanguage(key)
    except ValueError:
        raise UnsupportedLanguageError(name) from None


class PromptKind(StrEnum):
    AGNOSTIC = "agnostic"
    AWARE = "aware"  # "This is an image from {location}. …": when the place is known


class CaptionOptions(BaseModel):
    """How to caption: in which language, and what the caller knows of the place."""

    language: str = Field(
        default="en", description="en, th, ms, tl, id or vi (or tha, zlm, fil, ind, vie)"
    )
    location: str | None = Field(
        default=None, max_length=200, description="where it was taken, e.g. 'Hue, Vietnam'"
    )
    countries: list[CountryCode] = Field(
        default_factory=list,
        max_length=len(SeaCountry),
        description="countries the image belongs to",
    )
    location_aware: bool | None = Field(
        default=None,
        description="use the location-aware prompt; by default, when a location or country "
        "is given",
    )


class CaptionRequest(ImageInput, CaptionOptions):
    """POST /v1/captions on the captioner: one image, its bytes (`data`, base64) or a stored
    `key`, as the embedder takes images, and how to caption it."""


class CaptionResponse(BaseModel):
    caption: str
    language_requested: CaptionLanguage
    language: str | None = Field(
        description="ISO 639-1 code of the language the caption is written in (detected once "
        "the names of cultural items, places and people are masked), or null (unknown) when "
        "too few words are left or the confidence is below the captioner's threshold"
    )
    language_confidence: float = Field(
        ge=0,
        le=1,
        description="the detector's confidence in `language` or, when unknown, in its best "
        "guess (0: no guess), among the caption languages and Chinese, Japanese and Korean",
    )
    language_ok: bool | None = Field(
        description="true: in the language asked for (Malay for Indonesian, or the reverse, "
        "when the detector hesitates between the two); false: in another language, detected "
        "with confidence; null: unknown, not a wrong language"
    )
    backend: str = Field(description="'offline-labels' or 'openai-compatible'")
    model: str
    prompt_kind: PromptKind
    prompt: str
    location: str | None = Field(description="the place named in the prompt, when aware")


class PromptText(BaseModel):
    language: CaptionLanguage
    name: str
    agnostic: str
    aware: str = Field(description="with {location} where the place goes")


class PromptsResponse(BaseModel):
    languages: list[CaptionLanguage]
    prompts: list[PromptText]
