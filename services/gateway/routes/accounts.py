"""Accounts: signing up, the admins' list and roles, and API keys that belong to accounts."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status

from services.common.errors import ServiceError
from services.common.http import RowId
from services.gateway import accounts
from services.gateway.accounts import Role
from services.gateway.auth import Caller, issue_key
from services.gateway.dependencies import (
    PUBLIC_ERRORS,
    Admin,
    Contributor,
    EngineDep,
    PageLimit,
    PageOffset,
    SettingsDep,
    page_size,
)
from services.gateway.people_schemas import (
    AccountIn,
    AccountOut,
    AccountPage,
    KeyIn,
    KeyList,
    KeyOut,
    NewKey,
    RoleChange,
)

router = APIRouter(prefix="/v1", tags=["people"], responses=PUBLIC_ERRORS)


@router.post(
    "/accounts",
    status_code=status.HTTP_201_CREATED,
    response_model=AccountOut,
    summary="Sign up as a contributor",
)
async def sign_up(body: AccountIn, settings: SettingsDep, engine: EngineDep) -> AccountOut:
    if len(body.password) < settings.people.password_min_length:
        raise ServiceError(
            422,
            "invalid_request",
            f"the password needs {settings.people.password_min_length} characters or more",
            field="password",
        )
    row = await asyncio.to_thread(
        accounts.create_account,
        engine,
        name=body.name,
        email=body.email,
        password=body.password,
        country=body.country.value,
        language=body.language,
    )
    return AccountOut.model_validate(row)


@router.get("/accounts", response_model=AccountPage, summary="Every account (admins)")
def list_accounts(
    _: Admin,
    settings: SettingsDep,
    engine: EngineDep,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> AccountPage:
    rows, total = accounts.accounts_page(engine, page_size(settings, limit), offset)
    return AccountPage(
        items=[AccountOut.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.patch("/accounts/{account_id}", response_model=AccountOut, summary="Change a role")
def change_role(
    account_id: RowId, body: RoleChange, caller: Admin, engine: EngineDep
) -> AccountOut:
    if account_id == caller.account_id:
        raise ServiceError(
            409, "own_role", "admins do not change their own role (another admin can)"
        )
    return AccountOut.model_validate(accounts.set_role(engine, account_id, body.role))


def _keys_seen_by(caller: Caller) -> int | None:
    """Whose keys `caller` manages: an admin every key (None), anyone else their account's (a
    service key belongs to no account: 0, which matches no key)."""
    return None if caller.role == Role.ADMIN else caller.account_id or 0


@router.get("/api-keys", response_model=KeyList, summary="API keys: an admin's all, else yours")
def list_keys(caller: Contributor, engine: EngineDep) -> KeyList:
    owner = _keys_seen_by(caller)
    return KeyList(items=[KeyOut.model_validate(r) for r in accounts.api_keys(engine, owner)])


@router.post(
    "/api-keys",
    status_code=status.HTTP_201_CREATED,
    response_model=NewKey,
    summary="A new API key for your account (for the bulk uploader)",
)
def new_key(body: KeyIn, caller: Contributor, engine: EngineDep) -> NewKey:
    if caller.account_id is None:
        raise ServiceError(422, "no_account", "only a signed-in person makes keys here")
    key, row = issue_key(engine, caller.role, body.name, caller.account_id)
    return NewKey(**KeyOut.model_validate(row).model_dump(), key=key)


@router.delete(
    "/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke an API key"
)
def revoke_key(key_id: RowId, caller: Contributor, engine: EngineDep) -> Response:
    owner = _keys_seen_by(caller)
    if key_id == caller.key_id:
        raise ServiceError(
            409,
            "key_in_use",
            "this is the key you are calling with: revoke it signed in, or with another key",
        )
    accounts.revoke_key(engine, key_id, owner)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
