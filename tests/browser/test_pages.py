"""The pages by themselves, before anyone signs in: served from the gateway with nothing from
elsewhere, clean in a real browser, labelled, usable on a 360 px phone, in two languages."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.support.ui import Select

from services.common.countries import SeaCountry
from services.common.schemas import Tier
from services.common.states import JobStatus
from services.gateway.auth import Role
from services.gateway.schemas import Category, NativeLanguage
from tests.browser.conftest import MESSAGES, PAGES, PAGES_FOLDER, PHONE, Browser, message
from tests.helpers import photo_bytes

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "messages/en.json": "application/json",
    "messages/id.json": "application/json",
}


# ---------------------------------------------------------------- served by the gateway


def test_each_page_is_served_with_a_policy_that_keeps_other_origins_out(
    gateway_alone: str,
) -> None:
    for name in PAGES:
        answer = httpx.get(f"{gateway_alone}/pages/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert f'data-page="{name}"' in answer.text
    for path, media_type in ASSETS.items():
        answer = httpx.get(f"{gateway_alone}/pages/assets/{path}")
        assert answer.status_code == 200, path
        assert answer.headers["content-type"] == media_type
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert answer.content == (PAGES_FOLDER / path).read_bytes()


def test_the_pages_are_not_part_of_the_api_description(gateway_alone: str) -> None:
    paths = httpx.get(f"{gateway_alone}/openapi.json").json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/pages")]


def test_an_unknown_page_or_asset_is_the_common_json_404(gateway_alone: str) -> None:
    for path in (
        "/pages/nothing",
        "/pages/assets",
        "/pages/assets/nothing.js",
        "/pages/admin.html",
    ):
        answer = httpx.get(f"{gateway_alone}{path}")
        assert answer.status_code == 404, path
        assert answer.json()["error"]["code"] == "not_found", path


def test_only_scripts_styles_and_catalogues_are_assets(gateway_alone: str) -> None:
    """The HTML files are pages, at their own address; nothing else of the folder is served."""
    answer = httpx.get(f"{gateway_alone}/pages/assets/admin.html")
    assert answer.status_code == 404


def test_an_asset_path_cannot_reach_outside_the_pages_folder(
    gateway_alone: str, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"only_for_the_server": 42}')
    upward = os.path.relpath(secret, PAGES_FOLDER)
    assert upward.startswith("..")
    attempts = [
        f"/pages/assets/{upward.replace('..', '%2e%2e').replace('/', '%2f')}",
        f"/pages/assets/{upward.replace('/', '%2F')}",
        f"/pages/assets/messages%2f..%2f{upward.replace('/', '%2f')}",
        f"/pages/assets/%2f{str(secret).lstrip('/').replace('/', '%2f')}",
        f"/pages/assets/{'%2e%2e%2f' * 2}routes%2fpages.py",
        f"/pages/assets/{'%2e%2e%2f' * 3}gateway%2fconfig.py",
    ]
    with httpx.Client(base_url=gateway_alone) as client:
        for attempt in attempts:
            answer = client.get(httpx.URL(gateway_alone + attempt))
            assert answer.status_code == 404, attempt
            assert b"only_for_the_server" not in answer.content, attempt


def test_home_sends_people_to_sign_in_or_to_the_form(gateway_alone: str) -> None:
    signed_out = httpx.get(f"{gateway_alone}/")
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == "/pages/sign-in"
    with_session = httpx.get(f"{gateway_alone}/", cookies={"seavl_session": "a-session"})
    assert with_session.headers["location"] == "/pages/submit"


# ---------------------------------------------------------------- the message catalogue


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", text))


def test_every_english_message_is_in_indonesian_with_the_same_placeholders() -> None:
    english, indonesian = MESSAGES["en"], MESSAGES["id"]
    assert set(english) == set(indonesian)
    for key, text in english.items():
        assert indonesian[key].strip(), key
        assert _placeholders(indonesian[key]) == _placeholders(text), key


def _named_messages() -> set[str]:
    """Every message key the pages' HTML and script name literally."""
    names: set[str] = set()
    for page in PAGES_FOLDER.glob("*.html"):
        names |= set(re.findall(r'data-i18n[a-z-]*="([^"]+)"', page.read_text("utf-8")))
        names |= set(re.findall(r'data-pattern-message="([^"]+)"', page.read_text("utf-8")))
    script = (PAGES_FOLDER / "app.js").read_text("utf-8")
    names |= set(re.findall(r'\bt\(\s*"([^"]+)"', script))
    # messages chosen by a condition: t(flag ? "one" : "other")
    names |= set(re.findall(r'[?:]\s*"([a-z_]+\.[a-z_.]+)"', script))
    return names


def test_every_message_a_page_names_is_in_the_catalogue() -> None:
    named = _named_messages()
    assert len(named) > 150  # the search found the pages' texts
    assert sorted(named - set(MESSAGES["en"])) == []


def test_the_catalogue_names_every_value_the_api_sends() -> None:
    """Countries, categories, languages, statuses, tiers and roles come from the API as codes;
    the pages show each by its name in the catalogue."""
    codes = {
        "country": SeaCountry,
        "category": Category,
        "native": NativeLanguage,
        "status": JobStatus,
        "tier": Tier,
        "role": Role,
    }
    missing = [
        f"{prefix}.{value.value}"
        for prefix, values in codes.items()
        for value in values
        if f"{prefix}.{value.value}" not in MESSAGES["en"]
    ]
    assert missing == []
    pages = ("submit", "mine", "screening", "review", "leaderboard", "admin")
    assert [page for page in pages if f"nav.{page}" not in MESSAGES["en"]] == []


def test_the_catalogue_explains_each_refusal_of_a_sign_in() -> None:
    """The sign-in page shows a refusal by its code (`errorText`): a wrong password and an
    address that must wait are told in the page's language, not in the API's English."""
    for code in ("sign_in_failed", "too_many_sign_ins"):
        assert f"error.{code}" in MESSAGES["en"] and f"error.{code}" in MESSAGES["id"]


# ---------------------------------------------------------------- in Chromium

UNLABELLED_CONTROLS = """
const holder = document.createElement("div");
for (const template of document.querySelectorAll("template")) {
  holder.append(template.content.cloneNode(true));
}
document.body.append(holder);
const unlabelled = [...document.querySelectorAll("input, select, textarea")]
  .filter((control) => control.type !== "hidden")
  .filter((control) => [...control.labels].every((label) => label.textContent.trim() === ""))
  .map((control) => control.outerHTML);
holder.remove();
return unlabelled;
"""
CONTROLS_WITHOUT_ERROR_PLACE = """
return [...document.querySelectorAll("form")].flatMap((form) =>
  [...form.elements]
    .filter((control) => control.name && control.type !== "submit")
    .filter((control) => !form.querySelector(`[data-error-for="${CSS.escape(control.name)}"]`))
    .map((control) => `${form.id}: ${control.name}`));
"""


@pytest.mark.parametrize("page", PAGES)
def test_a_page_loads_clean_labelled_and_fits_a_phone(browser: Browser, page: str) -> None:
    browser.size(PHONE)
    browser.driver.get("about:blank")
    browser.requested_urls()  # what came before this page is not its doing
    browser.console_errors()
    browser.open(f"/pages/{page}")

    assert browser.console_errors() == []
    assert browser.foreign_urls() == []
    entries = browser.resource_entries()
    assert {entry["name"].split("/")[2] for entry in entries} == {browser.origin.split("/")[2]}, (
        entries
    )
    own_files = [e for e in entries if "/pages/" in e["name"]]
    assert {e["name"].rsplit("/pages/", 1)[1] for e in own_files} >= {
        page,
        "assets/app.js",
        "assets/style.css",
        "assets/messages/en.json",
    }
    assert [e for e in own_files if e["status"] != 200] == []

    assert browser.driver.execute_script(UNLABELLED_CONTROLS) == []
    assert browser.driver.execute_script(CONTROLS_WITHOUT_ERROR_PLACE) == []
    assert browser.find("#language-switch").accessible_name == message("nav.language")
    assert browser.driver.title == message(f"{_title_key(page)}")
    assert browser.wider_than_the_screen() == []
    browser.screenshot(f"phone-{page}-signed-out")


def _title_key(page: str) -> str:
    return f"{'signin' if page == 'sign-in' else page}.page_title"


def test_the_language_switcher_shows_the_pages_in_indonesian(browser: Browser) -> None:
    browser.size(PHONE)
    browser.open("/pages/sign-in")
    assert browser.driver.execute_script("return document.documentElement.lang") == "en"
    Select(browser.find("#language-switch")).select_by_value("id")
    browser.wait_until(
        lambda: browser.driver.execute_script("return document.documentElement.lang") == "id"
    )
    browser.wait_ready()
    assert browser.find("h1").text == message("signin.title", "id")
    assert browser.find("label[for=sign-up-password]").text == message("field.new_password", "id")
    assert browser.driver.title == message("signin.page_title", "id")
    assert browser.console_errors() == []
    browser.screenshot("phone-sign-in-indonesian")
    # the choice stays for the next page, until changed back
    browser.open("/pages/leaderboard")
    assert browser.find("h1").text == message("leaderboard.title", "id")
    Select(browser.find("#language-switch")).select_by_value("en")
    browser.wait_until(lambda: browser.find("h1").text == message("leaderboard.title"))


def test_a_photo_over_10_mb_is_refused_before_anything_is_sent(
    browser: Browser, tmp_path: Path
) -> None:
    photo = photo_bytes("coffee.png")
    too_large = tmp_path / "too-large.jpg"
    # a real JPEG, padded after its end marker past the limit: it still opens as a photo
    too_large.write_bytes(photo + b"\0" * (10 * 1024 * 1024 + 1 - len(photo)))
    browser.size(PHONE)
    browser.open("/pages/submit")

    browser.find("#image").send_keys(str(too_large))
    error = message("submit.too_large", max="10")
    browser.wait_until(lambda: browser.text("#image-error") == error)
    assert not browser.find("#image-preview").is_displayed()
    browser.find("#submit-button").click()
    assert browser.text("#image-error") == error
    assert browser.driver.switch_to.active_element == browser.find("#image")
    assert [e for e in browser.resource_entries() if "/v1/images" in e["name"]] == []
    browser.screenshot("phone-submit-too-large")


def test_a_chosen_photo_is_previewed_from_the_device(browser: Browser, tmp_path: Path) -> None:
    path = tmp_path / "coffee.jpg"
    path.write_bytes(photo_bytes("coffee.png"))
    browser.size(PHONE)
    browser.open("/pages/submit")
    browser.find("#image").send_keys(str(path))
    preview = browser.find("#image-preview")
    browser.wait_until(
        lambda: browser.driver.execute_script("return arguments[0].naturalWidth", preview) > 0
    )
    assert str(preview.get_attribute("src")).startswith("blob:")
    assert browser.text("#image-error") == ""
    megabytes = f"{len(path.read_bytes()) / 1024 / 1024:.2f}".rstrip("0").rstrip(".")
    assert browser.text("#image-size") == message("submit.size", size=megabytes, max="10")
    assert browser.wider_than_the_screen() == []
    browser.screenshot("phone-submit-preview")


def test_missing_answers_are_shown_next_to_their_fields(browser: Browser) -> None:
    browser.size(PHONE)
    browser.open("/pages/submit")
    browser.find("#location").send_keys("Yogyakarta")  # no country after a comma
    browser.find("#submit-button").click()
    expected = {
        "image": message("validation.file"),
        "countries": message("validation.choose_one"),
        "location": message("validation.location"),
        "category": message("validation.choose"),
        "native_language": message("validation.choose"),
        "caption_native": message("validation.required"),
        "caption_en": message("validation.required"),
        "consent": message("validation.accept"),
    }
    shown = {field: browser.text(f"#{field}-error") for field in expected}
    assert shown == expected
    assert browser.find("#location").get_attribute("aria-invalid") == "true"
    assert [e for e in browser.resource_entries() if "/v1/images" in e["name"]] == []
    browser.screenshot("phone-submit-missing-answers")
    # answering a field clears its message on the next try
    browser.find("#location").send_keys(", Indonesia")
    browser.find("#submit-button").click()
    assert browser.text("#location-error") == ""


def test_the_catalogues_are_valid_json_objects_of_strings() -> None:
    for language in ("en", "id"):
        loaded = json.loads((PAGES_FOLDER / "messages" / f"{language}.json").read_text("utf-8"))
        assert all(isinstance(value, str) for value in loaded.values())
