"""Who is calling: an API key (`Bearer`, made by `seavl keys create` or by a person for their
account, stored as a sha256 hash) or a signed-in browser (the session cookie, with its CSRF
token on every change).

Roles rank contributor < validator < admin; an endpoint names the least role it needs. A key of
an account acts with the account's role. A valid key is remembered for `key_remember_seconds`,
so a busy client costs no query per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from services.common.database import session_scope
from services.common.errors import ServiceError
from services.common.service import from_app_state
from services.gateway import accounts
from services.gateway.accounts import CSRF_HEADER, SESSION_COOKIE
from services.gateway.accounts import Role as Role  # re-exported: callers name roles from here
from services.gateway.tables import AccountRow, ApiKeyRow

KEY_PREFIX = "seavl"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: a role, and the account and key it came through (a service
    key has no account; a browser session has no key)."""

    role: Role
    account_id: int | None = None
    key_id: int | None = None
    csrf_token: str | None = None  # a browser session's, for the pages to send back

    @property
    def sees_everything(self) -> bool:
        """Validators and admins read every record; a contributor only their own."""
        return self.role.rank >= Role.VALIDATOR.rank

    def owns(self, account_id: int | None, uploaded_by: int | None) -> bool:
        """Whether a record is this caller's: their account's, or (for a service key) sent with
        this very key."""
        if self.account_id is not None:
            return account_id == self.account_id
        return self.key_id is not None and uploaded_by == self.key_id


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(
    engine: Engine, role: Role, name: str = "", account_id: int | None = None
) -> tuple[str, ApiKeyRow]:
    """A new key, shown once: `seavl_<prefix>_<secret>`, and its row; only its hash is kept. A
    key of an account acts with the account's role (`role` is kept only for the record)."""
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKeyRow(
        prefix=prefix, key_hash=hash_key(key), role=role.value, name=name, account_id=account_id
    )
    with session_scope(engine) as session:
        session.add(row)
    return key, row


def create_key(engine: Engine, role: Role, name: str = "", account_id: int | None = None) -> str:
    """A new key (see `issue_key`), for whoever keeps only the key."""
    return issue_key(engine, role, name, account_id)[0]


def _unauthorized(message: str) -> ServiceError:
    error = ServiceError(401, "unauthorized", message)
    error.headers = {"WWW-Authenticate": "Bearer"}
    return error


def _parts(authorization: str | None) -> tuple[str, str]:
    """The key of a `Bearer` header and its prefix; 401 when it is missing or malformed."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise _unauthorized("send an API key as 'Authorization: Bearer <key>'")
    key = authorization[7:].strip()
    parts = key.split("_", 2)  # the secret itself may contain "_"
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        raise _unauthorized("the API key is malformed")
    return key, parts[1]


class ApiKeys:
    """Checks keys against the database, and remembers a valid one for `remember_seconds` so a
    busy client costs no query per request (a key revoked meanwhile works until then; 0 checks
    every request). Only valid keys are remembered, by their hash, at most `capacity` of them."""

    def __init__(
        self,
        engine: Engine,
        remember_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        capacity: int = 10_000,
    ) -> None:
        self.engine = engine
        self.remember_seconds = remember_seconds
        self.clock = clock
        self.capacity = capacity
        self._valid: OrderedDict[str, tuple[Caller, float]] = OrderedDict()

    @property
    def remembered(self) -> int:
        return len(self._valid)

    async def verify(self, authorization: str | None) -> Caller:
        """The key's caller; 401 unless the header holds a key that exists and is not revoked."""
        key, prefix = _parts(authorization)
        key_hash = hash_key(key)
        now = self.clock()
        known = self._valid.get(key_hash)
        if known is not None and known[1] > now:
            return known[0]
        found = await asyncio.to_thread(self._look_up, prefix)
        row = found[0] if found is not None else None
        if row is None or row.revoked or not hmac.compare_digest(row.key_hash, key_hash):
            self._valid.pop(key_hash, None)
            raise _unauthorized("the API key is not valid")
        owner = found[1] if found is not None else None
        if row.account_id is not None and owner is None:  # its account is gone
            raise _unauthorized("the API key is not valid")
        caller = Caller(Role(owner.role if owner else row.role), row.account_id, row.id)
        if self.remember_seconds > 0:
            self._valid[key_hash] = (caller, now + self.remember_seconds)
            self._valid.move_to_end(key_hash)
            while len(self._valid) > self.capacity:
                self._valid.popitem(last=False)
        return caller

    def _look_up(self, prefix: str) -> tuple[ApiKeyRow, AccountRow | None] | None:
        with session_scope(self.engine) as session:
            found = session.exec(
                select(ApiKeyRow, AccountRow)
                .join(AccountRow, col(AccountRow.id) == col(ApiKeyRow.account_id), isouter=True)
                .where(ApiKeyRow.prefix == prefix)
            ).first()
        return None if found is None else (found[0], found[1])


async def session_caller(request: Request, engine: Engine, token: str) -> Caller:
    """The caller of a signed-in browser; 401 for a session that ended, 403 `csrf_failed` for
    a change without the session's CSRF token."""
    found = await asyncio.to_thread(accounts.session_account, engine, token)
    if found is None:
        raise ServiceError(401, "signed_out", "the session has ended: sign in again")
    account, session = found
    if request.method not in SAFE_METHODS and not accounts.csrf_matches(
        session, request.headers.get(CSRF_HEADER)
    ):
        raise ServiceError(
            403, "csrf_failed", f"send the session's CSRF token in the {CSRF_HEADER} header"
        )
    return Caller(Role(account.role), account.id, csrf_token=session.csrf_token)


async def identify(request: Request, keys: ApiKeys) -> Caller:
    """The caller of any request: the API key when one is sent, else the session cookie."""
    authorization = request.headers.get("authorization")
    token = request.cookies.get(SESSION_COOKIE)
    if authorization is None and token:
        return await session_caller(request, keys.engine, token)
    return await keys.verify(authorization)


def require(role: Role) -> Callable[[Request, ApiKeys], Awaitable[Caller]]:
    """A dependency that admits callers of `role` or higher."""

    async def check(
        request: Request, keys: Annotated[ApiKeys, Depends(from_app_state("keys", ApiKeys))]
    ) -> Caller:
        caller = await identify(request, keys)
        if caller.role.rank < role.rank:
            raise ServiceError(
                403, "forbidden", f"this needs the {role.value} role; yours is {caller.role}"
            )
        return caller

    check.__name__ = f"require_{role.value}"
    return check
