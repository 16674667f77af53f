"""The gateway's public API: a route module per resource (a new resource adds a module)."""

from __future__ import annotations

from fastapi import APIRouter

from services.gateway.routes import (
    accounts,
    captions,
    crawls,
    duplicates,
    exports,
    images,
    pages,
    points,
    reference_sets,
    relevance,
    reviews,
    screening,
    sessions,
)


def public_routes() -> APIRouter:
    """Everything the gateway serves: the API for contributors and validators, and the admins'
    reference sets."""
    routes = APIRouter()
    for module in (
        images,
        relevance,
        duplicates,
        captions,
        crawls,
        exports,
        reference_sets,
        accounts,
        sessions,
        reviews,
        points,
        screening,
        pages,
    ):
        routes.include_router(module.router)
    return routes
