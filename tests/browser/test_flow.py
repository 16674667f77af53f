"""The crowdsourcing loop in a real browser, on the whole system as processes on 127.0.0.1: a
contributor signs up on a phone and submits a real photo, an admin makes one validator and a
second one passes the screening, both review the photo, and the contributor sees the flags and
the points move on the leaderboard. Every page is screenshotted on the way."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from tests.browser.conftest import DESKTOP, PHONE, Browser, chromium, message
from tests.conftest import POSTGRES_URL, migrated_postgres
from tests.e2e.conftest import ROOT, start, stop
from tests.helpers import free_port, photo_bytes

SERVICES = ("embedder", "filter", "dedup", "gateway")
PASSWORD = "a long passphrase"


@dataclass(frozen=True)
class Person:
    name: str
    email: str
    country: str
    language: str = "en"


CONTRIBUTOR = Person("Sari Wulandari", "sari@seavl.test", "ID", "id")
ADMIN = Person("Ada Admin", "ada@seavl.test", "SG")
FIRST_VALIDATOR = Person("Vina Nguyen", "vina@seavl.test", "VN")
SECOND_VALIDATOR = Person("Budi Santoso", "budi@seavl.test", "MY")


@pytest.fixture
def system(models_dir: Path, tmp_path: Path) -> Iterator[str]:
    """The embedder, the filter (a "default" reference set of one real photo), dedup and the
    gateway, each its own process on PostgreSQL and one object folder; the first admin made with
    `seavl users create`. Yields the gateway's URL."""
    migrated_postgres()
    ports = {name: free_port() for name in SERVICES}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = {
        **{f"SEAVL_{name.upper()}_SERVER__PORT": str(port) for name, port in ports.items()},
        "DATABASE_URL": POSTGRES_URL,
        "SEAVL_EMBEDDER_MODELS_DIR": str(models_dir),
        "SEAVL_STORAGE_DIR": str(tmp_path / "objects"),
        "SEAVL_DEDUP_QDRANT_PATH": str(tmp_path / "qdrant"),
        "SEAVL_FILTER_EMBEDDER__URL": urls["embedder"],
        "SEAVL_GATEWAY_EMBEDDER__URL": urls["embedder"],
        "SEAVL_GATEWAY_FILTER__URL": urls["filter"],
        "SEAVL_GATEWAY_DEDUP__URL": urls["dedup"],
    }
    log = tmp_path / "system.log"
    processes = []
    try:
        for name in SERVICES:
            processes.append(start(["-m", f"services.{name}"], env, log, urls[name]))
        with httpx.Client(base_url=urls["filter"], timeout=60) as filter_service:
            filter_service.post(
                "/v1/reference-sets", json={"name": "default", "model": "efficientnet-lite0"}
            ).raise_for_status()
            reference = base64.b64encode(photo_bytes("chelsea.png")).decode()
            filter_service.post(
                "/v1/reference-sets/default/references",
                json={"references": [{"image": reference, "country": "ID"}]},
            ).raise_for_status()
        subprocess.run(
            [sys.executable, "-m", "services.cli", "users", "create", "--email", ADMIN.email,
             "--name", ADMIN.name, "--country", ADMIN.country, "--role", "admin",
             "--password-stdin"],
            input=f"{PASSWORD}\n",
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )  # fmt: skip
        yield urls["gateway"]
    finally:
        for process in reversed(processes):
            stop(process)


@pytest.fixture
def browser(system: str) -> Iterator[Browser]:
    with chromium(system) as opened:
        yield opened


def api_as(browser: Browser) -> httpx.Client:
    """The API as the person signed in to the browser (their session cookie); reads only."""
    cookie = browser.driver.get_cookie("seavl_session")
    assert cookie is not None, "nobody is signed in"
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    return httpx.Client(
        base_url=browser.origin, cookies={"seavl_session": cookie["value"]}, timeout=30
    )


def visit(browser: Browser, page: str, shot: str) -> None:
    """A page opened, checked for errors and the phone's width, and screenshotted."""
    browser.open(f"/pages/{page}")
    assert browser.console_errors() == [], page
    assert browser.foreign_urls() == [], page
    browser.screenshot(shot)


def fill(browser: Browser, fields: dict[str, str]) -> None:
    for css, value in fields.items():
        target = browser.find(css)
        if target.tag_name == "select":
            Select(target).select_by_value(value)
        else:
            target.clear()
            target.send_keys(value)


def sign_in(browser: Browser, person: Person, lands_on: str) -> None:
    browser.open("/pages/sign-in")
    fill(browser, {"#sign-in-email": person.email, "#sign-in-password": PASSWORD})
    browser.find("#sign-in-button").click()
    browser.wait_until(lambda: browser.driver.current_url.endswith(f"/pages/{lands_on}"))
    browser.wait_ready()
    assert browser.find("#whoami").text.startswith(person.name)


def sign_out(browser: Browser) -> None:
    browser.find("#sign-out").click()
    browser.wait_until(lambda: browser.driver.current_url.endswith("/pages/sign-in"))
    browser.wait_ready()
    assert browser.driver.get_cookie("seavl_session") is None
    assert browser.find_all("#sign-out") == []


def leaderboard_row(browser: Browser, account_id: int) -> dict[str, Any] | None:
    browser.open("/pages/leaderboard")
    rows = browser.find_all(f'#leaderboard-rows tr[data-account-id="{account_id}"]')
    if not rows:
        return None
    cells = rows[0].find_elements("css selector", "td")
    return {
        "points": float(str(cells[3].get_attribute("data-points"))),
        "submissions": cells[4].text,
        "reviews": cells[5].text,
    }


def sign_up_on_a_phone(browser: Browser) -> int:
    browser.size(PHONE)
    browser.driver.get(browser.origin + "/")
    browser.wait_until(lambda: browser.driver.current_url.endswith("/pages/sign-in"))
    browser.wait_ready()
    fill(
        browser,
        {
            "#sign-up-name": CONTRIBUTOR.name,
            "#sign-up-email": CONTRIBUTOR.email,
            "#sign-up-password": PASSWORD,
            "#sign-up-country": CONTRIBUTOR.country,
            "#sign-up-language": CONTRIBUTOR.language,
        },
    )
    browser.screenshot("phone-sign-up-filled")
    browser.find("#sign-up-button").click()
    browser.wait_until(lambda: browser.driver.current_url.endswith("/pages/submit"))
    browser.wait_ready()
    # the account's language: Indonesian
    assert browser.find("h1").text == message("submit.title", "id")
    with api_as(browser) as api:
        me = api.get("/v1/me").json()["account"]
    assert (me["name"], me["role"], me["language"]) == (CONTRIBUTOR.name, "contributor", "id")
    return int(me["id"])


def submit_a_photo(browser: Browser, tmp_path: Path) -> dict[str, Any]:
    photo = tmp_path / "kucing.jpg"
    photo.write_bytes(photo_bytes("chelsea.png"))
    visit(browser, "submit", "phone-submit-empty")
    assert browser.find("#country-ID").is_selected()  # the contributor's own country, ticked
    browser.find("#image").send_keys(str(photo))
    browser.wait_until(lambda: browser.find("#image-preview").is_displayed())
    fill(
        browser,
        {
            "#location": "Yogyakarta, Indonesia",
            "#category": "plant_animal",
            "#native_language": "ind",
            "#caption_native": "Seekor kucing oranye beristirahat di atas karpet.",
            "#caption_en": "An orange tabby cat resting on a rug.",
        },
    )
    browser.find("#country-MY").click()
    browser.find("#consent").click()
    assert browser.wider_than_the_screen() == []
    browser.screenshot("phone-submit-filled")
    browser.find("#submit-button").click()
    browser.wait_until(
        lambda: browser.find("#result-status").get_attribute("data-value") == "done", timeout=180
    )
    with api_as(browser) as api:
        mine = api.get("/v1/images", params={"mine": "true"}).json()
    assert mine["total"] == 1
    image: dict[str, Any] = mine["items"][0]
    assert image["countries"] == ["ID", "MY"]
    assert (image["category"], image["native_language"]) == ("plant_animal", "ind")
    assert image["accepted"] is True  # the reference is this very photo
    score = f"{image['score'] * 100:.1f}".replace(".", ",")  # Indonesian decimals
    assert browser.text("#result-score") == message("result.score_value", "id", score=score)
    assert browser.text("#result-tier") == message(f"tier.{image['tier']}", "id")
    assert browser.text("#result-accepted") == message("result.relevant", "id")
    assert browser.console_errors() == []
    browser.screenshot("phone-submit-result")
    return image


def make_a_validator_as_admin(browser: Browser, validator_id: int, tmp_path: Path) -> None:
    browser.size(DESKTOP)
    sign_in(browser, ADMIN, lands_on="admin")
    assert browser.console_errors() == []
    assert browser.find_all(f'#accounts-rows tr[data-account-id="{validator_id}"]')
    Select(browser.find(f"#role-{validator_id}")).select_by_value("validator")
    browser.wait_until(
        lambda: browser.text(f"#role-{validator_id}-status") == message("admin.role_saved")
    )
    with api_as(browser) as api:
        accounts = api.get("/v1/accounts").json()["items"]
    assert {a["id"]: a["role"] for a in accounts}[validator_id] == "validator"

    # a screening question: a real photo and its right answers
    question = tmp_path / "coffee.jpg"
    question.write_bytes(photo_bytes("coffee.png"))
    browser.find("#screening-image").send_keys(str(question))
    fill(
        browser,
        {
            "#screening-caption": "A cup of coffee on a saucer.",
            "#screening-quality": "1",
            "#screening-relevance": "2",
            "#screening-caption-fit": "yes",
        },
    )
    browser.find("#screening-add").click()
    browser.wait_until(lambda: len(browser.find_all("#screening-items-list li")) == 1)
    assert "A cup of coffee on a saucer." in browser.find("#screening-items-list li").text
    # the reference set the system was started with
    default_set = browser.find('#reference-sets-rows tr[data-set-name="default"]')
    assert default_set.find_elements("css selector", "td")[3].text == "1"
    assert browser.console_errors() == []
    browser.screenshot("desktop-admin")
    browser.size(PHONE)
    browser.open("/pages/admin")
    assert browser.wider_than_the_screen() == []
    browser.screenshot("phone-admin")
    browser.size(DESKTOP)
    sign_out(browser)


def pass_the_screening(browser: Browser) -> None:
    sign_in(browser, SECOND_VALIDATOR, lands_on="submit")
    visit(browser, "screening", "desktop-screening")
    item = browser.find("#screening-items li")
    for name, value in (("quality", "1"), ("relevance", "2"), ("caption_fit", "yes")):
        item.find_element("css selector", f'input[name^="{name}-"][value="{value}"]').click()
    browser.find("#screening-send").click()
    browser.wait_until(
        lambda: browser.find("#screening-outcome").get_attribute("data-passed") == "true"
    )
    assert browser.find_all('.site-header a[href="/pages/review"]')  # the header says so
    browser.screenshot("desktop-screening-passed")


def review_with_the_keyboard(browser: Browser, image: dict[str, Any]) -> None:
    visit(browser, "review", "desktop-review")
    picture = browser.find("#review-image")
    assert picture.get_attribute("data-image-id") == image["id"]
    browser.wait_until(
        lambda: browser.driver.execute_script("return arguments[0].naturalWidth", picture) > 0
    )
    assert browser.text("#review-caption-en") == image["caption_en"]
    assert browser.text("#review-caption-native") == image["caption_native"]
    assert browser.text("#review-countries") == "Indonesia, Malaysia"
    # what the privacy pass found before storing, so validators flag what it missed
    privacy = image["privacy"]
    found = message("privacy.found", faces=privacy["faces"], plates=privacy["plates"])
    blurred = message("privacy.blurred" if privacy["blurred"] else "privacy.flagged")
    assert browser.text("#review-privacy") == (
        message("privacy.none_found")
        if privacy["faces"] == privacy["plates"] == 0
        else f"{found} · {blurred}"
    )
    ActionChains(browser.driver).send_keys("q", "1", "y", "p", "p").perform()
    assert browser.find('input[name="quality"][value="1"]').is_selected()
    assert browser.find('input[name="relevance"][value="5"]').is_selected()
    assert browser.find('input[name="caption_fit"][value="yes"]').is_selected()
    assert not browser.find("#review-pii").is_selected()  # p twice: on, then off again
    browser.screenshot("desktop-review-answered")
    ActionChains(browser.driver).send_keys(Keys.ENTER).perform()
    # the next image at once: none is left for this validator
    browser.wait_until(lambda: browser.find("#review-empty").is_displayed())
    assert browser.text("#review-status") == message("review.sent")
    assert browser.console_errors() == []
    browser.screenshot("desktop-review-nothing-left")


def review_with_clicks(browser: Browser, image: dict[str, Any]) -> None:
    browser.open("/pages/review")
    assert browser.find("#review-image").get_attribute("data-image-id") == image["id"]
    browser.find("#review-send").click()  # nothing answered: told next to each question
    assert browser.text("#quality-error") == message("validation.choose")
    assert browser.text("#relevance-error") == message("validation.choose")
    for css in (
        'input[name="quality"][value="1"]',
        'input[name="relevance"][value="4"]',
        'input[name="caption_fit"][value="yes"]',
    ):
        browser.find(css).click()
    browser.find("#review-send").click()
    browser.wait_until(lambda: browser.find("#review-empty").is_displayed())
    assert browser.console_errors() == []


@pytest.mark.timeout(900)
def test_a_photo_goes_from_a_phone_through_two_reviews_to_points(
    browser: Browser, system: str, tmp_path: Path
) -> None:
    contributor_id = sign_up_on_a_phone(browser)
    image = submit_a_photo(browser, tmp_path)
    before = leaderboard_row(browser, contributor_id)
    assert before is None or before["points"] == 0
    browser.screenshot("phone-leaderboard-before-reviews")
    sign_out(browser)

    # the same email again: told next to the email field
    fill(
        browser,
        {
            "#sign-up-name": "Someone Else",
            "#sign-up-email": CONTRIBUTOR.email,
            "#sign-up-password": PASSWORD,
            "#sign-up-country": "TH",
        },
    )
    browser.find("#sign-up-button").click()
    browser.wait_until(lambda: browser.text("#sign-up-email-error") == message("error.email_taken"))
    browser.screenshot("phone-sign-up-email-taken")
    # a name of spaces passes the browser's check, not the API's: its 422 names the field
    fill(browser, {"#sign-up-name": "   ", "#sign-up-email": "someone@seavl.test"})
    browser.find("#sign-up-button").click()
    browser.wait_until(lambda: browser.text("#sign-up-name-error") != "")
    assert "name" in browser.text("#sign-up-name-error")
    assert browser.text("#sign-up-email-error") == ""
    assert browser.text("#sign-up-form .form-error") == ""

    with httpx.Client(base_url=system, timeout=30) as anyone:
        made = {}
        for person in (FIRST_VALIDATOR, SECOND_VALIDATOR):
            answer = anyone.post(
                "/v1/accounts",
                json={
                    "name": person.name,
                    "email": person.email,
                    "password": PASSWORD,
                    "country": person.country,
                    "language": person.language,
                },
            )
            assert answer.status_code == 201, answer.text
            made[person.email] = int(answer.json()["id"])

    make_a_validator_as_admin(browser, made[FIRST_VALIDATOR.email], tmp_path)
    pass_the_screening(browser)
    review_with_the_keyboard(browser, image)
    sign_out(browser)
    sign_in(browser, FIRST_VALIDATOR, lands_on="review")
    review_with_clicks(browser, image)
    sign_out(browser)

    browser.size(PHONE)
    sign_in(browser, CONTRIBUTOR, lands_on="submit")
    visit(browser, "mine", "phone-mine")
    assert browser.wider_than_the_screen() == []
    item = browser.find(f'#submissions li[data-image-id="{image["id"]}"]')
    flags = {
        flag: item.find_element("css selector", f'[data-flag="{flag}"]').get_attribute("data-value")
        for flag in ("quality", "relevance", "caption_fit", "overall")
    }
    assert flags == {
        "quality": "true",
        "relevance": "true",
        "caption_fit": "true",
        "overall": "true",
    }
    assert item.find_element("css selector", '[data-slot="reviews"]').text == message(
        "review.progress", "id", count="2", needed="2"
    )
    with api_as(browser) as api:
        earned = api.get(f"/v1/images/{image['id']}").json()["points"]
        mine = api.get("/v1/me/points").json()
    assert earned > 0
    assert mine["points"] == earned

    after = leaderboard_row(browser, contributor_id)
    assert after is not None and after["points"] == earned > 0
    assert after["submissions"] == "1"
    for validator in (FIRST_VALIDATOR, SECOND_VALIDATOR):
        standing = leaderboard_row(browser, made[validator.email])
        assert standing is not None and standing["points"] > 0 and standing["reviews"] == "1"
    assert browser.wider_than_the_screen() == []
    assert browser.console_errors() == []
    browser.screenshot("phone-leaderboard-after-reviews")
