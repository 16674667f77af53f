"""Which language a caption is written in, offline (lingua), to catch the VLMs' habit of
answering in English, or Chinese, when asked for a Southeast Asian language (SEA-VL, §5)."""

from __future__ import annotations

from lingua import Language, LanguageDetector, LanguageDetectorBuilder

from services.common.captions import CaptionLanguage

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


class LanguageCheck:
    """Detects among the caption languages and the usual wrong answers; thread-safe."""

    def __init__(self) -> None:
        self._detector: LanguageDetector = LanguageDetectorBuilder.from_languages(
            *CAPTION_LANGUAGES, *OTHER_LANGUAGES
        ).build()

    def detect(self, text: str) -> str | None:
        """ISO 639-1 code (lower case) of the text's language, None when it cannot tell."""
        language = self._detector.detect_language_of(text)
        if language is None:
            return None
        return language.iso_code_639_1.name.lower()

    def matches(self, detected: str | None, wanted: CaptionLanguage) -> bool:
        return detected == wanted.value
