"""The web pages for people: served by the gateway itself, every asset included (no CDN).

The pages are static files (`services/gateway/pages/`): HTML, one ES module, one stylesheet and
the message catalogues. They talk to the API with the session cookie; nothing they load comes
from another origin, and the Content-Security-Policy makes sure of it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse

from services.common.errors import ServiceError
from services.gateway.accounts import SESSION_COOKIE

PAGES_FOLDER = Path(__file__).resolve().parent.parent / "pages"
ASSET_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
}
# Everything from this origin, images also from the page's own previews (blob:) and data: URLs;
# no frame may embed the pages (another site cannot overlay the review buttons).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # the pages change with the gateway: a browser checks before using its copy
    "Cache-Control": "no-cache",
}


class Page(StrEnum):
    """The pages there are; each is `<name>.html` in the pages folder."""

    SIGN_IN = "sign-in"
    SUBMIT = "submit"
    MINE = "mine"
    REVIEW = "review"
    LEADERBOARD = "leaderboard"
    SCREENING = "screening"
    ADMIN = "admin"


router = APIRouter(include_in_schema=False)


def _not_found(what: str) -> ServiceError:
    return ServiceError(404, "not_found", f"no {what}")


@router.get("/")
async def home(request: Request) -> RedirectResponse:
    """Someone with a session goes to the submission form, anyone else to sign in (a stale
    session is told so on the form's page)."""
    page = Page.SUBMIT if SESSION_COOKIE in request.cookies else Page.SIGN_IN
    return RedirectResponse(f"/pages/{page.value}", status_code=303)


@router.get("/pages/{name}")
async def page(name: str) -> FileResponse:
    try:
        known = Page(name)
    except ValueError:
        raise _not_found(f"page {name!r}") from None
    return FileResponse(
        PAGES_FOLDER / f"{known.value}.html",
        media_type="text/html; charset=utf-8",
        headers=SECURITY_HEADERS,
    )


@router.get("/pages/assets/{path:path}")
async def asset(path: str) -> FileResponse:
    """A script, stylesheet or catalogue of the pages folder; nothing outside it, whatever
    `..`, encoded slashes or links the path holds."""
    media_type = ASSET_MEDIA_TYPES.get(Path(path).suffix)
    try:
        file = (PAGES_FOLDER / path).resolve()
    except (ValueError, OSError):  # a NUL byte, a loop of links
        raise _not_found(f"asset {path!r}") from None
    if media_type is None or not file.is_relative_to(PAGES_FOLDER) or not file.is_file():
        raise _not_found(f"asset {path!r}")
    return FileResponse(file, media_type=media_type, headers=SECURITY_HEADERS)
