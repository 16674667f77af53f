"""Caption prompts (one data file per language, agnostic or aware) and the language check."""

from __future__ import annotations

import pytest

from services.captioner.language import LanguageCheck
from services.captioner.prompts import PromptBook
from services.common.captions import (
    CaptionLanguage,
    CaptionOptions,
    PromptKind,
    UnsupportedLanguageError,
    caption_language,
)
from services.common.countries import SeaCountry
from services.common.errors import ServiceError

# Captions as a VLM would write them (3 sentences each), one per caption language.
REAL_CAPTIONS = {
    CaptionLanguage.ENGLISH: (
        "A woman in a red kebaya sells nasi lemak at a roadside stall in the morning. The rice "
        "is wrapped in banana leaves with sambal, fried anchovies and a boiled egg. Customers "
        "wait in line under a blue umbrella."
    ),
    CaptionLanguage.THAI: (
        "ภาพนี้แสดงแม่ค้ากำลังขายส้มตำและไก่ย่างที่ตลาดริมทาง ส้มตำใส่มะละกอสับ มะเขือเทศ และถั่วลิสง "
        "ลูกค้ากำลังรอซื้ออาหารอยู่หน้าร้าน"
    ),
    CaptionLanguage.MALAY: (
        "Seorang wanita berbaju kebaya merah sedang menjual nasi lemak di gerai tepi jalan pada "
        "waktu pagi. Nasi itu dibungkus dengan daun pisang bersama sambal, ikan bilis goreng dan "
        "telur rebus. Pelanggan beratur di bawah payung biru sambil berbual."
    ),
    CaptionLanguage.TAGALOG: (
        "Isang babae ang nagtitinda ng bibingka at puto sa tabi ng simbahan tuwing Simbang Gabi. "
        "Niluluto ang bibingka sa palayok na may uling sa itaas at ibaba. Maraming tao ang "
        "pumipila upang bumili pagkatapos ng misa."
    ),
    CaptionLanguage.INDONESIAN: (
        "Seorang ibu menjual gado-gado di warung pinggir jalan pada pagi hari. Sayuran rebus "
        "disiram bumbu kacang dan diberi kerupuk di atasnya. Para pembeli mengantre sambil "
        "mengobrol dengan penjualnya."
    ),
    CaptionLanguage.VIETNAMESE: (
        "Một người phụ nữ đang bán phở bò trên vỉa hè ở Hà Nội vào buổi sáng. Tô phở có bánh "
        "phở, thịt bò tái và hành lá. Khách hàng ngồi trên những chiếc ghế nhựa nhỏ."
    ),
}


@pytest.fixture(scope="module")
def book() -> PromptBook:
    return PromptBook()


@pytest.fixture(scope="module")
def check() -> LanguageCheck:
    return LanguageCheck()


@pytest.mark.parametrize("language", list(CaptionLanguage))
def test_each_language_has_both_prompts_in_that_language(
    book: PromptBook, check: LanguageCheck, language: CaptionLanguage
) -> None:
    prompts = book.languages[language]
    aware = book.choose(CaptionOptions(language=language.value, location="Hue, Vietnam"))
    assert aware.kind is PromptKind.AWARE and "Hue, Vietnam" in aware.text
    assert "{location}" not in aware.text
    agnostic = book.choose(CaptionOptions(language=language.value))
    assert agnostic.kind is PromptKind.AGNOSTIC and agnostic.text == prompts.agnostic
    # the prompt asks in the language it wants the caption in
    assert check.detect(prompts.agnostic) == language.value
    assert {t.language for t in book.texts()} == set(CaptionLanguage)


def test_aware_when_a_place_is_known_unless_asked_otherwise(book: PromptBook) -> None:
    by_country = book.choose(CaptionOptions(language="vi", countries=[SeaCountry.TH]))
    assert by_country.kind is PromptKind.AWARE
    assert by_country.location == "Thái Lan"  # the country named in the prompt's language
    two = book.choose(CaptionOptions(language="en", countries=[SeaCountry.MY, SeaCountry.SG]))
    assert two.location == "Malaysia and Singapore"
    place_first = book.choose(
        CaptionOptions(language="en", location="Ubud, Bali", countries=[SeaCountry.ID])
    )
    assert place_first.location == "Ubud, Bali"
    forced = book.choose(CaptionOptions(language="th", location="Bangkok", location_aware=False))
    assert forced.kind is PromptKind.AGNOSTIC and "Bangkok" not in forced.text
    with pytest.raises(ServiceError) as missing:
        book.choose(CaptionOptions(language="en", location_aware=True))
    assert missing.value.status_code == 422 and missing.value.code == "location_needed"


def test_languages_by_code_or_by_the_upload_forms_codes() -> None:
    assert caption_language("VI") is CaptionLanguage.VIETNAMESE
    assert caption_language("fil") is CaptionLanguage.TAGALOG
    assert caption_language("zlm") is CaptionLanguage.MALAY
    with pytest.raises(UnsupportedLanguageError) as unsupported:
        caption_language("km")
    error = unsupported.value
    assert error.status_code == 422 and error.code == "unsupported_language"
    for code in ("en", "th", "ms", "tl", "id", "vi"):
        assert code in error.message


@pytest.mark.parametrize("language", list(CaptionLanguage))
def test_the_language_of_real_captions_is_detected(
    check: LanguageCheck, language: CaptionLanguage
) -> None:
    detected = check.detect(REAL_CAPTIONS[language])
    assert detected == language.value
    assert check.matches(detected, language)


def test_an_english_answer_to_a_vietnamese_request_is_flagged(check: LanguageCheck) -> None:
    detected = check.detect(REAL_CAPTIONS[CaptionLanguage.ENGLISH])
    assert not check.matches(detected, CaptionLanguage.VIETNAMESE)
    assert check.detect("这是一碗越南河粉，上面有牛肉和香菜。") == "zh"
