"""Caption prompts (one data file per language, agnostic or aware) and the language check."""

from __future__ import annotations

import pytest

from services.captioner.config import LanguageCheckSettings
from services.captioner.language import Detection, LanguageCheck, LanguageOutcome
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

EN = CaptionLanguage.ENGLISH

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
    assert check.detect(prompts.agnostic).language == language.value
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
    detection = check.detect(REAL_CAPTIONS[language])
    assert detection.language == language.value and detection.confidence > 0.8
    assert check.judge(detection, language) is LanguageOutcome.OK


def test_an_english_answer_to_a_vietnamese_request_is_flagged(check: LanguageCheck) -> None:
    detection = check.detect(REAL_CAPTIONS[CaptionLanguage.ENGLISH])
    assert check.judge(detection, CaptionLanguage.VIETNAMESE) is LanguageOutcome.WRONG_LANGUAGE


# Short captions (one sentence) that name SEA cultural items by their local names: the item
# names are not the caption's language and, unmasked, outvote it ("nasi lemak ... ikan bilis"
# made an English sentence Tagalog).
SHORT_CAPTIONS: list[tuple[CaptionLanguage, str]] = [
    (CaptionLanguage.ENGLISH, "A plate of nasi lemak with sambal and ikan bilis."),
    (CaptionLanguage.ENGLISH, "A groom in a barong tagalog stands outside the church."),
    (CaptionLanguage.ENGLISH, "Street vendors grilling satay next to a bowl of laksa."),
    (CaptionLanguage.ENGLISH, "Chicken adobo and pancit served at a fiesta in Pampanga."),
    (CaptionLanguage.ENGLISH, "A red kebaya and a batik sarung for sale at Pasar Beringharjo."),
    (CaptionLanguage.ENGLISH, "Wat Arun seen from across the Chao Phraya river at dusk."),
    (CaptionLanguage.ENGLISH, "A woman in an áo dài eats phở bò in Hà Nội."),
    (CaptionLanguage.THAI, "ส้มตำไทยใส่กุ้งแห้งและถั่วลิสงวางอยู่บนโต๊ะ"),
    (CaptionLanguage.THAI, "วัดอรุณยามเย็นริมแม่น้ำเจ้าพระยา"),
    (CaptionLanguage.THAI, "ผู้หญิงสวมชุดไทยรำในงานสงกรานต์"),
    (CaptionLanguage.MALAY, "Sepinggan nasi lemak dengan sambal dan ikan bilis goreng."),
    (CaptionLanguage.MALAY, "Seorang lelaki memakai songkok dan baju Melayu pada Hari Raya."),
    (CaptionLanguage.MALAY, "Teh tarik dan roti canai di sebuah gerai mamak pada waktu pagi."),
    (CaptionLanguage.TAGALOG, "Isang plato ng adobo at kanin sa mesa."),
    (CaptionLanguage.TAGALOG, "Nakasuot ng barong tagalog ang lalaki sa harap ng simbahan."),
    (CaptionLanguage.TAGALOG, "Masarap ang sinigang na baboy na may kangkong."),
    (
        CaptionLanguage.INDONESIAN,
        "Sepiring rendang daging dengan nasi putih di rumah makan Padang.",
    ),
    (CaptionLanguage.INDONESIAN, "Penjual sate ayam sedang membakar sate di pinggir jalan."),
    (CaptionLanguage.INDONESIAN, "Para penari memakai kebaya dan kain batik saat upacara."),
    (CaptionLanguage.VIETNAMESE, "Một tô phở bò nóng hổi với rau thơm và chanh."),
    (CaptionLanguage.VIETNAMESE, "Cô gái mặc áo dài trắng đi dạo trên phố cổ Hội An."),
    (CaptionLanguage.VIETNAMESE, "Gia đình gói bánh chưng để đón Tết."),
]
MALAY_OR_INDONESIAN = {CaptionLanguage.MALAY.value, CaptionLanguage.INDONESIAN.value}


def language_of(detection: Detection) -> str:
    assert detection.language is not None, detection
    return detection.language


@pytest.mark.parametrize(("language", "caption"), SHORT_CAPTIONS)
def test_a_short_caption_naming_sea_items_is_in_its_own_language(
    check: LanguageCheck, language: CaptionLanguage, caption: str
) -> None:
    detection = check.detect(caption)
    if language.value in MALAY_OR_INDONESIAN:  # close relatives: either is accepted
        assert detection.language in MALAY_OR_INDONESIAN
    else:
        assert detection.language == language.value
    assert detection.confidence == detection.confidences[language_of(detection)]
    assert check.judge(detection, language) is LanguageOutcome.OK


ENGLISH_SHORT = [caption for language, caption in SHORT_CAPTIONS if language is EN]


@pytest.mark.parametrize("caption", ENGLISH_SHORT)
def test_an_english_caption_naming_sea_items_is_flagged_when_another_language_was_asked(
    check: LanguageCheck, caption: str
) -> None:
    """Masking the item names leaves the English words to be judged, not nothing."""
    detection = check.detect(caption)
    for asked in CaptionLanguage:
        if asked is not EN:
            assert check.judge(detection, asked) is LanguageOutcome.WRONG_LANGUAGE


@pytest.mark.parametrize(
    ("caption", "asked", "written_in"),
    [
        ("Penjual sate ayam sedang membakar sate di pinggir jalan.", "th", "id"),
        ("Masarap ang sinigang na baboy na may kangkong.", "ms", "tl"),
        ("A bowl of pho with fresh herbs and lime.", "vi", "en"),
        ("Một tô phở bò nóng hổi với rau thơm và chanh.", "en", "vi"),
        ("ส้มตำไทยใส่กุ้งแห้งและถั่วลิสงวางอยู่บนโต๊ะ", "id", "th"),
        ("Sepinggan nasi lemak dengan sambal dan ikan bilis goreng.", "tl", "ms"),
        ("这是一碗越南河粉，上面有牛肉和香菜。", "en", "zh"),
    ],
)
def test_a_short_caption_in_another_language_is_still_flagged(
    check: LanguageCheck, caption: str, asked: str, written_in: str
) -> None:
    detection = check.detect(caption)
    if written_in in MALAY_OR_INDONESIAN:
        assert detection.language in MALAY_OR_INDONESIAN
    else:
        assert detection.language == written_in
    assert check.judge(detection, CaptionLanguage(asked)) is LanguageOutcome.WRONG_LANGUAGE
    assert LanguageOutcome.WRONG_LANGUAGE.language_ok is False


@pytest.mark.parametrize(
    ("caption", "asked"),
    [
        ("Kebaya merah.", CaptionLanguage.INDONESIAN),
        ("Kebaya merah.", CaptionLanguage.ENGLISH),
        ("Nasi lemak.", CaptionLanguage.MALAY),
        ("Adobo at kanin.", CaptionLanguage.TAGALOG),
        ("Phở bò.", CaptionLanguage.VIETNAMESE),
        ("Wat Arun.", CaptionLanguage.ENGLISH),
        ("Beautiful temple.", CaptionLanguage.THAI),  # two words of English: too few to tell
        # enough words once the names are masked ("A man wearing a and at"), but lingua's
        # best guess, English, stays under half: unsure, so neither ok nor wrong
        ("A man wearing a songkok and baju melayu at Hari Raya.", CaptionLanguage.ENGLISH),
        ("A man wearing a songkok and baju melayu at Hari Raya.", CaptionLanguage.MALAY),
    ],
)
def test_a_caption_too_short_or_unsure_to_tell_is_unknown_not_wrong(
    check: LanguageCheck, caption: str, asked: CaptionLanguage
) -> None:
    detection = check.detect(caption)
    assert detection.language is None
    assert 0 <= detection.confidence <= 1  # reported, whatever it is
    outcome = check.judge(detection, asked)
    assert outcome is LanguageOutcome.UNKNOWN and outcome.language_ok is None


def test_below_the_confidence_setting_the_language_is_unknown() -> None:
    caption = "Street vendors grilling satay next to a bowl of laksa."
    sure = LanguageCheck(LanguageCheckSettings(min_confidence=0.5)).detect(caption)
    assert sure.language == "en" and 0.5 <= sure.confidence < 0.99
    unsure = LanguageCheck(LanguageCheckSettings(min_confidence=0.99)).detect(caption)
    assert unsure.language is None and unsure.confidence == sure.confidence
    fewer_words = LanguageCheck(LanguageCheckSettings(min_words=2)).detect("Beautiful temple.")
    assert fewer_words.language == "en"


def test_malay_and_indonesian_accept_each_other_only_when_the_detector_hesitates(
    check: LanguageCheck,
) -> None:
    # one sentence of Malay (sepinggan) that lingua barely tells from Indonesian
    malay = check.detect("Sepinggan nasi lemak dengan sambal dan ikan bilis goreng.")
    assert check.judge(malay, CaptionLanguage.MALAY) is LanguageOutcome.OK
    assert check.judge(malay, CaptionLanguage.INDONESIAN) is LanguageOutcome.OK
    # split between the two, it is still known to be one of them, and not English
    split = check.detect("Dua orang menari di depan candi.")
    assert split.language in MALAY_OR_INDONESIAN and split.confidence < 0.5
    assert check.judge(split, CaptionLanguage.ENGLISH) is LanguageOutcome.WRONG_LANGUAGE
    # three sentences of unmistakable Indonesian are not a Malay caption, nor the reverse
    indonesian = check.detect(REAL_CAPTIONS[CaptionLanguage.INDONESIAN])
    assert indonesian.language == "id" and indonesian.confidence > 0.8
    assert check.judge(indonesian, CaptionLanguage.MALAY) is LanguageOutcome.WRONG_LANGUAGE
    # how close is a setting: with no margin, only the language detected first counts
    hesitant = Detection(language="id", confidence=0.55, confidences={"id": 0.55, "ms": 0.43})
    assert check.judge(hesitant, CaptionLanguage.MALAY) is LanguageOutcome.OK
    strict = LanguageCheck(LanguageCheckSettings(close_language_margin=0))
    assert strict.judge(hesitant, CaptionLanguage.MALAY) is LanguageOutcome.WRONG_LANGUAGE


def test_item_names_and_proper_nouns_are_masked_but_not_the_words_around_them(
    check: LanguageCheck,
) -> None:
    # a name the list does not know, starting the sentence; one mid-sentence; a listed item
    masked = check.masked("Lola Remedios sells puto at the Taytay market. She smiles.")
    assert masked.split() == ["sells", "at", "the", "market.", "She", "smiles."]
    # names match without accents, case, space or hyphen, and only as whole words
    masked = check.masked("Phở, banh-mi and halo halo near a satellite dish.")
    assert masked.split() == [",", "and", "near", "a", "satellite", "dish."]


def test_the_places_the_prompt_named_are_not_judged(book: PromptBook, check: LanguageCheck) -> None:
    choice = book.choose(CaptionOptions(language="en", location="Binangonan, Rizal"))
    assert choice.places == ["Binangonan", "Rizal"]
    caption = "Binangonan at dawn, by the lake."
    assert check.detect(caption).language == "tl"  # the town's name alone reads as Tagalog
    named = check.detect(caption, choice.places)
    assert named.language == "en" and check.judge(named, EN) is LanguageOutcome.OK
    countries = book.choose(CaptionOptions(language="ms", countries=[SeaCountry.MY, SeaCountry.SG]))
    assert countries.places == ["Malaysia", "Singapura"]
    assert book.choose(CaptionOptions(language="en")).places == []
