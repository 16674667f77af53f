"""API keys: made by `seavl keys create`, stored as sha256 hashes, sent as `Bearer` tokens.

Roles rank contributor < validator < admin; an endpoint names the least role it needs. A valid
key is remembered for `key_remember_seconds`, so a busy client costs no query per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlmodel import select

from services.common.database import session_scope
from services.common.errors import ServiceError
from services.common.service import from_app_state
from services.gateway.tables import ApiKeyRow

KEY_PREFIX = "seavl"


class Role(StrEnum):
    CONTRIBUTOR = "contributor"
    VALIDATOR = "validator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(engine: Engine, role: Role, name: str = "") -> str:
    """A new key, shown once: `seavl_<prefix>_<secret>`; only its hash is kept."""
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    with session_scope(engine) as session:
        session.add(ApiKeyRow(prefix=prefix, key_hash=hash_key(key), role=role.value, name=name))
    return key


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
        self._valid: OrderedDict[str, tuple[ApiKeyRow, float]] = OrderedDict()

    @property
    def remembered(self) -> int:
        return len(self._valid)

    async def verify(self, authorization: str | None) -> ApiKeyRow:
        """The key's row; 401 unless the header holds a key that exists and is not revoked."""
        key, prefix = _parts(authorization)
        key_hash = hash_key(key)
        now = self.clock()
        known = self._valid.get(key_hash)
        if known is not None and known[1] > now:
            return known[0]
        row = await asyncio.to_thread(self._look_up, prefix)
        if row is None or row.revoked or not hmac.compare_digest(row.key_hash, key_hash):
            self._valid.pop(key_hash, None)
            raise _unauthorized("the API key is not valid")
        if self.remember_seconds > 0:
            self._valid[key_hash] = (row, now + self.remember_seconds)
            self._valid.move_to_end(key_hash)
            while len(self._valid) > self.capacity:
                self._valid.popitem(last=False)
        return row

    def _look_up(self, prefix: str) -> ApiKeyRow | None:
        with session_scope(self.engine) as session:
            return session.exec(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)).first()


def require(role: Role) -> Callable[[Request, ApiKeys], Awaitable[ApiKeyRow]]:
    """A dependency that admits keys of `role` or higher."""

    async def check(
        request: Request, keys: Annotated[ApiKeys, Depends(from_app_state("keys", ApiKeys))]
    ) -> ApiKeyRow:
        key = await keys.verify(request.headers.get("authorization"))
        if Role(key.role).rank < role.rank:
            raise ServiceError(
                403, "forbidden", f"this needs the {role.value} role; the key is {key.role}"
            )
        return key

    check.__name__ = f"require_{role.value}"
    return check
