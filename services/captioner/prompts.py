"""The captioner's prompts, one data file per language (`prompts/<code>.toml`), and the choice
between the location-agnostic prompt and the location-aware one."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from services.common.captions import (
    CaptionLanguage,
    CaptionOptions,
    PromptKind,
    PromptText,
    caption_language,
)
from services.common.countries import SeaCountry
from services.common.errors import ServiceError

PROMPTS_DIR = Path(__file__).with_name("prompts")
LOCATION = "{location}"


@dataclass(frozen=True)
class OfflineSentences:
    """What the offline-labels backend writes, in one language."""

    labels: str
    no_labels: str
    place: str
    note: str


@dataclass(frozen=True)
class LanguagePrompts:
    language: CaptionLanguage
    name: str
    conjunction: str  # "and", to list labels and countries
    agnostic: str
    aware: str
    offline: OfflineSentences
    countries: dict[SeaCountry, str]

    def join(self, items: list[str]) -> str:
        if len(items) <= 1:
            return "".join(items)
        return f"{', '.join(items[:-1])} {self.conjunction} {items[-1]}"


@dataclass(frozen=True)
class PromptChoice:
    prompts: LanguagePrompts
    kind: PromptKind
    text: str
    location: str | None

    @property
    def places(self) -> list[str]:
        """The place names the prompt gave: "Hue, Vietnam" or "Malaysia and Singapore" names
        two, which the caption may repeat in any language."""
        if self.location is None:
            return []
        separators = rf",|\s{re.escape(self.prompts.conjunction)}\s"
        return [part.strip() for part in re.split(separators, self.location) if part.strip()]


def _load(path: Path, language: CaptionLanguage) -> LanguagePrompts:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    prompts = LanguagePrompts(
        language=language,
        name=data["name"],
        conjunction=data["and"],
        agnostic=data["prompts"]["agnostic"],
        aware=data["prompts"]["aware"],
        offline=OfflineSentences(**data["offline"]),
        countries={SeaCountry(code): name for code, name in data["countries"].items()},
    )
    if LOCATION not in prompts.aware or LOCATION in prompts.agnostic:
        raise ValueError(f"{path}: only the aware prompt names {LOCATION}")
    if set(prompts.countries) != set(SeaCountry):
        raise ValueError(f"{path}: name each of the 11 countries")
    return prompts


class PromptBook:
    """Every supported language's prompts, loaded once; a missing file fails at start-up."""

    def __init__(self, folder: Path = PROMPTS_DIR) -> None:
        self.languages = {
            language: _load(folder / f"{language.value}.toml", language)
            for language in CaptionLanguage
        }

    def texts(self) -> list[PromptText]:
        return [
            PromptText(language=p.language, name=p.name, agnostic=p.agnostic, aware=p.aware)
            for p in self.languages.values()
        ]

    def choose(self, options: CaptionOptions) -> PromptChoice:
        """The aware prompt when the caller knows the place (or asks for it), else agnostic."""
        prompts = self.languages[caption_language(options.language)]
        place = options.location.strip() if options.location else ""
        if not place and options.countries:
            place = prompts.join([prompts.countries[c] for c in dict.fromkeys(options.countries)])
        aware = bool(place) if options.location_aware is None else options.location_aware
        if not aware:
            return PromptChoice(prompts, PromptKind.AGNOSTIC, prompts.agnostic, None)
        if not place:
            raise ServiceError(
                422,
                "location_needed",
                "the location-aware prompt needs 'location' or 'countries'",
                field="location_aware",
            )
        return PromptChoice(
            prompts, PromptKind.AWARE, prompts.aware.replace(LOCATION, place), place
        )
