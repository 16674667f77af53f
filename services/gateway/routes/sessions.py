"""Signing in and out (a cookie session for the pages), and who the caller is."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import APIRouter, Request, Response, status

from services.common.errors import ServiceError
from services.gateway import accounts
from services.gateway.accounts import SESSION_COOKIE
from services.gateway.dependencies import (
    PUBLIC_ERRORS,
    Contributor,
    EngineDep,
    SettingsDep,
    documented_errors,
)
from services.gateway.people_schemas import AccountOut, SessionOut, SignIn

router = APIRouter(prefix="/v1", tags=["people"], responses=PUBLIC_ERRORS)


@router.post(
    "/sessions",
    response_model=SessionOut,
    summary="Sign in (sets the session cookie)",
    responses=documented_errors(429),
)
async def sign_in(
    body: SignIn, response: Response, settings: SettingsDep, engine: EngineDep
) -> SessionOut:
    """429 `too_many_sign_ins`, with Retry-After, for an email address past
    `people.sign_in_attempts` sign-ins within `people.sign_in_window_minutes`."""
    people = settings.people
    limit = accounts.SignInLimit(
        people.sign_in_attempts, timedelta(minutes=people.sign_in_window_minutes)
    )
    account = await asyncio.to_thread(
        accounts.check_password, engine, body.email, body.password, limit
    )
    signed_in = await asyncio.to_thread(
        accounts.start_session, engine, account, settings.people.session_hours
    )
    response.set_cookie(
        SESSION_COOKIE,
        signed_in.token,
        max_age=int(settings.people.session_hours * 3600),
        path="/",
        secure=settings.people.secure_cookies,
        httponly=True,
        samesite="strict",
    )
    return SessionOut(account=AccountOut.model_validate(account), csrf_token=signed_in.csrf_token)


@router.delete("/sessions", status_code=status.HTTP_204_NO_CONTENT, summary="Sign out")
async def sign_out(request: Request, _: Contributor, engine: EngineDep) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await asyncio.to_thread(accounts.end_session, engine, token)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/me", response_model=SessionOut, summary="The signed-in account")
async def me(caller: Contributor, engine: EngineDep) -> SessionOut:
    """The account, and the CSRF token of the session the call came with (empty for a key)."""
    if caller.account_id is None:
        raise ServiceError(404, "no_account", "this API key belongs to no account")
    account = await asyncio.to_thread(accounts.account, engine, caller.account_id)
    return SessionOut(
        account=AccountOut.model_validate(account), csrf_token=caller.csrf_token or ""
    )
