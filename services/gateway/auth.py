"""API keys: made by `seavl keys create`, stored as sha256 hashes, sent as `Bearer` tokens.

Roles rank contributor < validator < admin; an endpoint names the least role it needs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
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


def authenticate(engine: Engine, authorization: str | None) -> ApiKeyRow:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise _unauthorized("send an API key as 'Authorization: Bearer <key>'")
    key = authorization[7:].strip()
    parts = key.split("_", 2)  # the secret itself may contain "_"
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        raise _unauthorized("the API key is malformed")
    with session_scope(engine) as session:
        row = session.exec(select(ApiKeyRow).where(ApiKeyRow.prefix == parts[1])).first()
    if row is None or row.revoked or not hmac.compare_digest(row.key_hash, hash_key(key)):
        raise _unauthorized("the API key is not valid")
    return row


def require(role: Role) -> Callable[[Request, Engine], ApiKeyRow]:
    """A dependency that admits keys of `role` or higher."""

    def check(
        request: Request, engine: Annotated[Engine, Depends(from_app_state("engine", Engine))]
    ) -> ApiKeyRow:
        key = authenticate(engine, request.headers.get("authorization"))
        if Role(key.role).rank < role.rank:
            raise ServiceError(
                403, "forbidden", f"this needs the {role.value} role; the key is {key.role}"
            )
        return key

    check.__name__ = f"require_{role.value}"
    return check
