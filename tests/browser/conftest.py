"""The pages in a real browser: Debian's Chromium, headless, driven by Selenium through Debian's
chromedriver (installed by scripts/ensure-browser.sh), against seavl's processes on 127.0.0.1.

Every page is screenshotted into var/screenshots/ (whole page, as a person would scroll it).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.conftest import ROOT, start, stop
from tests.helpers import free_port, migrated_sqlite

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "var" / "screenshots"
PAGES_FOLDER = ROOT / "services" / "gateway" / "pages"
PAGES = ("sign-in", "submit", "mine", "review", "leaderboard", "screening", "admin")
PHONE = {"width": 360, "height": 780}
DESKTOP = {"width": 1280, "height": 900}
# Chromium's own calls home (updates, metrics, safe browsing) stay off: the tests' traffic goes to
# 127.0.0.1 only, and what a page asks for is all that the logs hold.
QUIET_CHROMIUM = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-sync",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-default-browser-check",
)

MESSAGES = {
    language: json.loads((PAGES_FOLDER / "messages" / f"{language}.json").read_text("utf-8"))
    for language in ("en", "id")
}


def message(key: str, language: str = "en", **params: object) -> str:
    """A catalogue message as the pages show it, `{name}` filled in."""
    return re.sub(
        r"\{(\w+)\}", lambda found: str(params.get(found[1], found[0])), MESSAGES[language][key]
    )


@dataclass
class Browser:
    """One Chromium, on one origin, with the checks every page has to pass."""

    driver: WebDriver
    base_url: str
    viewport: dict[str, int] = field(default_factory=lambda: DESKTOP)
    screenshots: list[Path] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return self.base_url.rstrip("/")

    def open(self, path: str) -> None:
        """`path` loaded and its script finished (it marks <html data-ready>)."""
        self.driver.get(f"{self.origin}{path}")
        self.wait_ready()

    def wait_ready(self) -> None:
        self.wait_until(
            lambda: (
                self.driver.execute_script("return document.documentElement.dataset.ready")
                == "true"
            )
        )

    def wait_until(self, condition: Any, timeout: float = 20) -> Any:
        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(lambda _: condition())

    def find(self, css: str) -> WebElement:
        return self.driver.find_element("css selector", css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements("css selector", css)

    def text(self, css: str) -> str:
        return str(
            self.driver.execute_script(f"return document.querySelector({css!r}).textContent")
        )

    def size(self, viewport: dict[str, int]) -> None:
        """The viewport of a phone or of a desktop (a phone's: mobile, touch layout)."""
        self.viewport = viewport
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {**viewport, "deviceScaleFactor": 1, "mobile": viewport == PHONE},
        )

    def screenshot(self, name: str) -> Path:
        """The whole page, not only what fits the window, as var/screenshots/<name>.png."""
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        self.screenshots.append(path)
        return path

    def console_errors(self) -> list[dict[str, Any]]:
        """What the page logged as errors since the last call: script errors, console.error,
        refused loads (CSP), failed requests for its own files. Answers of the API (/v1/...)
        are left out: a signed-out visitor's 401 is the page working as it should."""
        api = f"{self.origin}/v1/"
        logged: list[dict[str, Any]] = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        return [
            entry
            for entry in logged
            if entry["level"] == "SEVERE"
            and not (entry.get("source") == "network" and entry["message"].startswith(api))
        ]

    def requested_urls(self) -> list[str]:
        """Every URL the browser asked for since the last call, from its network events."""
        urls = []
        logged: list[dict[str, Any]] = self.driver.get_log("performance")  # type: ignore[no-untyped-call]
        for entry in logged:
            event = json.loads(entry["message"])["message"]
            if event["method"] == "Network.requestWillBeSent":
                urls.append(event["params"]["request"]["url"])
        return urls

    def foreign_urls(self) -> list[str]:
        """URLs asked for that are not this origin's (data: and blob: never leave the page)."""
        own = urlsplit(self.origin)
        return [
            url
            for url in self.requested_urls()
            if urlsplit(url).scheme not in ("data", "blob")
            and (urlsplit(url).scheme, urlsplit(url).netloc) != (own.scheme, own.netloc)
        ]

    def resource_entries(self) -> list[dict[str, Any]]:
        """The page's performance entries: every file and call it loaded, with its status."""
        entries: list[dict[str, Any]] = self.driver.execute_script(
            "return [...performance.getEntriesByType('navigation'), "
            "...performance.getEntriesByType('resource')].map(e => ({name: e.name, "
            "type: e.entryType, initiator: e.initiatorType, status: e.responseStatus}))"
        )
        return entries

    def wider_than_the_screen(self) -> list[str]:
        """What sticks out past the right edge of the viewport it was given (so the page would
        scroll sideways); empty when the page fits. Not measured against `innerWidth`, which a
        phone's browser widens when it zooms out to fit a wide page."""
        found: list[str] = self.driver.execute_script(
            """
            const width = arguments[0];
            if (document.documentElement.clientWidth !== width) return ["the viewport itself"];
            if (document.documentElement.scrollWidth <= width) return [];
            return [...document.body.querySelectorAll("*")]
              .filter((node) => node.getBoundingClientRect().right > width + 0.5)
              .map((node) => `${node.tagName.toLowerCase()}#${node.id}.${node.className}: `
                + `${Math.round(node.getBoundingClientRect().right)}px`);
            """,
            self.viewport["width"],
        )
        return found


@contextmanager
def chromium(base_url: str) -> Iterator[Browser]:
    """Debian's Chromium, headless, with its console and network logged for the checks."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={DESKTOP['width']},{DESKTOP['height']}",
        "--lang=en-US",
        *QUIET_CHROMIUM,
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        browser = Browser(driver, base_url)
        browser.size(DESKTOP)
        yield browser
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def gateway_alone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The gateway by itself, as a process on an embedded database: enough for the pages'
    files, which need no other service."""
    folder = tmp_path_factory.mktemp("gateway")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "SEAVL_GATEWAY_SERVER__PORT": str(port),
        "DATABASE_URL": migrated_sqlite(folder / "seavl.db"),
        "SEAVL_STORAGE_DIR": str(folder / "objects"),
    }
    process = start(["-m", "services.gateway"], env, folder / "gateway.log", url)
    try:
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def browser(gateway_alone: str) -> Iterator[Browser]:
    with chromium(gateway_alone) as opened:
        yield opened
