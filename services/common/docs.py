"""`/docs` (Swagger UI) and `/redoc` served whole by the service, so that they work offline.

FastAPI's own pages load their scripts from a CDN (and ReDoc its fonts from Google): with no
network they stay blank. The scripts, styles and icon come from the fastapi-offline package
(Swagger UI 5, Apache-2.0; ReDoc 2, MIT; the package MIT), which is all it is used for here; the
pages are FastAPI's, set up its documented way (docs_url=None, get_swagger_ui_html, StaticFiles).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_ASSETS_PACKAGE = ("fastapi_offline", "static")
DOCS_ASSETS_PATH = "/docs-assets"
SWAGGER_UI_PATH = "/docs"
REDOC_PATH = "/redoc"


def add_offline_docs(app: FastAPI) -> None:
    """Swagger UI and ReDoc pages for an app made with `docs_url=None, redoc_url=None`."""
    app.mount(
        DOCS_ASSETS_PATH,
        StaticFiles(packages=[DOCS_ASSETS_PACKAGE]),
        name="docs-assets",
    )
    openapi_path = app.openapi_url or "/openapi.json"

    def under_root(request: Request, path: str) -> str:
        # behind a proxy that mounts the service under a prefix, the browser asks for that prefix
        return f"{request.scope.get('root_path', '')}{path}"

    def asset(request: Request, name: str) -> str:
        return under_root(request, f"{DOCS_ASSETS_PATH}/{name}")

    @app.get(SWAGGER_UI_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=under_root(request, openapi_path),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=asset(request, "swagger-ui.css"),
            swagger_favicon_url=asset(request, "favicon.png"),
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=under_root(request, openapi_path),
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset(request, "redoc.standalone.js"),
            redoc_favicon_url=asset(request, "favicon.png"),
            with_google_fonts=False,
        )
