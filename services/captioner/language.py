"""Which language a caption is written in, offline (lingua), to catch the VLMs' habit of
answering in English, or Chinese, when asked for a Southeast Asian language (SEA-VL, §5).

Captions name cultural items by their local names, and in one sentence those names outvote
the words around them: lingua calls "A plate of nasi lemak with sambal and ikan bilis."
Tagalog. So the item names (`cultural_terms.toml`), the places the prompt named and proper
nouns are masked first, and the rest is judged: with too few words left, or a confidence below
the setting, the language is unknown, which is not a wrong language.

Malay and Indonesian share most of their words and lingua splits a short text between them:
their confidences are added up to decide whether the language is known, and a caption asked in
one and detected in the other is accepted when their two confidences are close
(`close_language_margin`); three sentences of plain Indonesian are not a Malay caption.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

from lingua import Language, LanguageDetector, LanguageDetectorBuilder

from services.captioner.config import LanguageCheckSettings
from services.common.captions import CaptionLanguage
from services.common.countries import SeaCountry

CAPTION_LANGUAGES: dict[Language, CaptionLanguage] = {
    Language.ENGLISH: CaptionLanguage.ENGLISH,
    Language.THAI: CaptionLanguage.THAI,
    Language.MALAY: CaptionLanguage.MALAY,
    Language.TAGALOG: CaptionLanguage.TAGALOG,
    Language.INDONESIAN: CaptionLanguage.INDONESIAN,
    Language.VIETNAMESE: CaptionLanguage.VIETNAMESE,
}
# What VLMs answer in by mistake, besides English: Qwen- and Pangea-style models drift to these.
OTHER_LANGUAGES = (Language.CHINESE, Language.JAPANESE, Language.KOREAN)
# Pairs close enough that a hesitant detector's second choice is as good as its first.
CLOSE_LANGUAGES = frozenset(
    {frozenset({CaptionLanguage.MALAY.value, CaptionLanguage.INDONESIAN.value})}
)

CULTURAL_TERMS_FILE = Path(__file__).with_name("cultural_terms.toml")
REGION_SECTION = "SEA"  # items of the whole region, beside one section per country

WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
SENTENCE_END = ".!?…\n"
BEFORE_A_WORD = " \t\r\"'“‘«([{-–—"  # what may stand between a sentence's end and its first word
NAME_GAP = r"[\s\-]*"  # "halo-halo", "halo halo" and "halohalo" are one name


class LanguageOutcome(StrEnum):
    """A caption's language against the one asked for; also the metrics' outcome label."""

    OK = "ok"
    WRONG_LANGUAGE = "wrong_language"  # another language, detected with confidence
    UNKNOWN = "unknown"  # too little text or too unsure to tell

    @property
    def language_ok(self) -> bool | None:
        """What a caption record stores: None when the language could not be told."""
        if self is LanguageOutcome.UNKNOWN:
            return None
        return self is LanguageOutcome.OK


@dataclass(frozen=True)
class Detection:
    """What the caption is written in, as far as the detector can tell."""

    language: str | None  # ISO 639-1, None when unknown
    # in `language`, or in the best guess when unknown; 0 with no guess. Known means it is at
    # least the threshold, Malay and Indonesian counted together.
    confidence: float
    confidences: Mapping[str, float]  # of every candidate language, by ISO 639-1 code


@cache
def _fold_char(char: str) -> str:
    if char in "đĐ":  # a letter of its own, not d with an accent, but written d in English
        return "d"
    if char == "’":
        return "'"
    base = "".join(c for c in unicodedata.normalize("NFD", char) if not unicodedata.combining(c))
    folded = base.lower()
    return folded if len(folded) == 1 else char


def fold(text: str) -> str:
    """Lower case without accents, one character for one, so that "Phở" and "pho" match and a
    match in the folded text is at the same place in the text."""
    return "".join(_fold_char(char) for char in text)


@cache
def _is_latin(char: str) -> bool:
    return unicodedata.name(char, "").startswith("LATIN")


def names_pattern(names: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern, on folded text, for all the names, longest first ("nasi lemak" before
    "nasi"): Latin-script names as whole words; Thai is written without spaces, so a Thai name
    matches anywhere."""
    latin: set[str] = set()
    other: set[str] = set()
    for name in names:
        parts = [p for p in re.split(r"[\s\-]+", fold(unicodedata.normalize("NFC", name))) if p]
        if parts:
            body = NAME_GAP.join(re.escape(part) for part in parts)
            latin_script = any(_is_latin(char) for part in parts for char in part)
            (latin if latin_script else other).add(body)
    alternatives = []
    if latin:  # one look-around for all: ten times faster than one per name
        alternatives.append(rf"(?<!\w)(?:{_longest_first(latin)})(?!\w)")
    if other:
        alternatives.append(_longest_first(other))
    return re.compile("|".join(alternatives)) if alternatives else None


def _longest_first(bodies: set[str]) -> str:
    return "|".join(sorted(bodies, key=len, reverse=True))


def load_cultural_terms(path: Path = CULTURAL_TERMS_FILE) -> list[str]:
    """The item names of the shipped list; a section per country and one for the region."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    expected = {country.value for country in SeaCountry} | {REGION_SECTION}
    if set(data) != expected:
        raise ValueError(f"{path}: sections must be {sorted(expected)}, found {sorted(data)}")
    terms: list[str] = []
    for section, categories in data.items():
        for category, names in categories.items():
            if not isinstance(names, list) or not all(
                isinstance(name, str) and name.strip() for name in names
            ):
                raise ValueError(f"{path}: [{section}] {category} must be a list of names")
            terms.extend(names)
    return terms


def _capitalised(word: str) -> bool:
    return len(word) > 1 and word[0].isupper()


def proper_noun_spans(text: str) -> list[tuple[int, int]]:
    """Capitalised words that do not start a sentence, and one that does when a name follows
    it ("Kampung Ayer seen from a boat"): names of people, places and things say little about
    the language around them."""
    words = list(WORD.finditer(text))
    spans: list[tuple[int, int]] = []
    for match, following in zip(words, [*words[1:], None], strict=True):
        if not _capitalised(match.group()):
            continue
        before = text[: match.start()].rstrip(BEFORE_A_WORD)
        starts_a_sentence = not before or before[-1] in SENTENCE_END
        name_follows = (
            following is not None
            and not text[match.end() : following.start()].strip()
            and _capitalised(following.group())
        )
        if not starts_a_sentence or name_follows:
            spans.append(match.span())
    return spans


class LanguageCheck:
    """Detects among the caption languages and the usual wrong answers; thread-safe."""

    def __init__(self, settings: LanguageCheckSettings | None = None) -> None:
        self.settings = settings or LanguageCheckSettings()
        self._detector: LanguageDetector = LanguageDetectorBuilder.from_languages(
            *CAPTION_LANGUAGES, *OTHER_LANGUAGES
        ).build()
        self._cultural_terms = names_pattern(load_cultural_terms())

    def masked(self, text: str, named: Sequence[str] = ()) -> str:
        """The text with item names, the `named` places and proper nouns blanked out."""
        text = unicodedata.normalize("NFC", text)
        folded = fold(text)
        spans = proper_noun_spans(text)
        for pattern in (self._cultural_terms, names_pattern(named)):
            if pattern is not None:
                spans.extend(match.span() for match in pattern.finditer(folded))
        chars = list(text)
        for start, end in spans:
            chars[start:end] = " " * (end - start)
        return "".join(chars)

    def _enough_text(self, masked: str) -> bool:
        """Latin-script languages share an alphabet and many words, so a few words do not tell
        them apart; Thai or Chinese letters tell their language by their script."""
        if any(char.isalpha() and not _is_latin(char) for char in masked):
            return True
        latin_words = [word for word in WORD.findall(masked) if _is_latin(word[0])]
        return len(latin_words) >= self.settings.min_words

    def detect(self, text: str, named: Sequence[str] = ()) -> Detection:
        """The language of the text once names are masked (`named`: places the prompt gave),
        with lingua's confidence among the candidate languages."""
        masked = self.masked(text, named)
        values = self._detector.compute_language_confidence_values(masked)
        confidences = {
            value.language.iso_code_639_1.name.lower(): round(value.value, 3) for value in values
        }
        best = max(confidences, key=confidences.__getitem__)
        known = (
            confidences[best] > 0
            and self._with_close_relatives(best, confidences) >= self.settings.min_confidence
            and self._enough_text(masked)
        )
        return Detection(best if known else None, confidences[best], confidences)

    @staticmethod
    def _with_close_relatives(language: str, confidences: Mapping[str, float]) -> float:
        """The confidence that the text is in `language` or a close relative: lingua splits a
        sentence of Malay about 0.55 / 0.45 with Indonesian, and is sure it is one of them."""
        relatives = {other for pair in CLOSE_LANGUAGES if language in pair for other in pair}
        return sum(confidences[other] for other in relatives | {language})

    def judge(self, detection: Detection, wanted: CaptionLanguage) -> LanguageOutcome:
        """OK in the wanted language or, hesitantly, in its close relative; unknown is not
        wrong."""
        if detection.language is None:
            return LanguageOutcome.UNKNOWN
        if detection.language == wanted.value:
            return LanguageOutcome.OK
        if frozenset({detection.language, wanted.value}) in CLOSE_LANGUAGES:
            lead = detection.confidence - detection.confidences.get(wanted.value, 0.0)
            if lead < self.settings.close_language_margin:
                return LanguageOutcome.OK
        return LanguageOutcome.WRONG_LANGUAGE
