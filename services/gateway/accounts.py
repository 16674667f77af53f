"""People: accounts with a password (Argon2id hashes), the browser sessions they sign in with,
and the roles that decide what they may do.

A session is a random token in an HttpOnly cookie, kept here only as its sha256; beside it a
CSRF token that the pages echo in `X-CSRF-Token` on every change (a cookie alone never changes
anything, so another site cannot act for a signed-in person).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from services.common.database import as_utc, insert_if_new, session_scope, utcnow
from services.common.errors import ServiceError
from services.gateway.tables import AccountRow, ApiKeyRow, SessionRow, SignInAttemptRow

SESSION_COOKIE = "seavl_session"
CSRF_HEADER = "X-CSRF-Token"
# Argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile): about 50 ms a check.
PASSWORDS = PasswordHasher()
# Checked when the email is unknown, so a wrong email takes as long as a wrong password.
_NOBODY = PASSWORDS.hash(secrets.token_urlsafe(16))


class Role(StrEnum):
    CONTRIBUTOR = "contributor"
    VALIDATOR = "validator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)


class PageLanguage(StrEnum):
    """The languages the pages' message catalogue has."""

    ENGLISH = "en"
    INDONESIAN = "id"


def normalise_email(email: str) -> str:
    return email.strip().lower()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_account(
    engine: Engine,
    *,
    name: str,
    email: str,
    password: str,
    country: str,
    role: Role = Role.CONTRIBUTOR,
    language: PageLanguage = PageLanguage.ENGLISH,
) -> AccountRow:
    """A new account; 409 `email_taken` when the address has one already."""
    row = AccountRow(
        email=normalise_email(email),
        name=name.strip(),
        country=country,
        role=role.value,
        language=language.value,
        password_hash=PASSWORDS.hash(password),
    )
    try:
        with session_scope(engine) as session:
            session.add(row)
    except IntegrityError as exc:
        raise ServiceError(
            409, "email_taken", f"{row.email} has an account already: sign in", field="email"
        ) from exc
    return row


def _password_matches(stored: str, password: str) -> bool:
    try:
        return PASSWORDS.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class SignInLimit:
    """How many sign-ins one email address gets within a window (PeopleSettings)."""

    attempts: int
    window: timedelta


def _count_attempt(engine: Engine, email: str, limit: SignInLimit) -> None:
    """Counts a sign-in for `email` before its password is checked (so that guesses sent at
    once cannot each pass a count the others have not raised yet); 429 `too_many_sign_ins`,
    before any password is hashed, past the allowance. Windows that have ended are cleared on
    the way, whatever their address."""
    now = utcnow()
    with session_scope(engine) as session:
        session.execute(
            delete(SignInAttemptRow).where(col(SignInAttemptRow.first_at) < now - limit.window)
        )
        session.execute(
            insert_if_new(engine, SignInAttemptRow).values(email=email, attempts=0, first_at=now)
        )
        counted = session.execute(
            update(SignInAttemptRow)
            .where(col(SignInAttemptRow.email) == email)
            .values(attempts=SignInAttemptRow.attempts + 1)
            .returning(col(SignInAttemptRow.attempts), col(SignInAttemptRow.first_at))
        ).one()
    attempts, first_at = counted
    if attempts <= limit.attempts:
        return
    wait = max(1, math.ceil((as_utc(first_at) + limit.window - now).total_seconds()))
    raise ServiceError(
        429,
        "too_many_sign_ins",
        f"too many sign-ins for this email address: try again in {math.ceil(wait / 60)} minute(s)",
        field="email",
        retry_after_seconds=wait,
    )


def check_password(engine: Engine, email: str, password: str, limit: SignInLimit) -> AccountRow:
    """The account whose password this is; 401 `sign_in_failed` otherwise (the same answer,
    taking the same time, for an unknown email and a wrong password), and 429 for an address
    past `limit` (known or not alike)."""
    address = normalise_email(email)
    _count_attempt(engine, address, limit)
    with session_scope(engine) as session:
        row = session.exec(select(AccountRow).where(AccountRow.email == address)).first()
        if row is None:
            _password_matches(_NOBODY, password)
        elif _password_matches(row.password_hash, password):
            if PASSWORDS.check_needs_rehash(row.password_hash):
                row.password_hash = PASSWORDS.hash(password)
                session.add(row)
            session.execute(delete(SignInAttemptRow).where(col(SignInAttemptRow.email) == address))
            return row
    raise ServiceError(401, "sign_in_failed", "the email or the password is wrong")


@dataclass(frozen=True)
class SignedIn:
    account: AccountRow
    token: str  # for the cookie, never stored
    csrf_token: str


def start_session(engine: Engine, account: AccountRow, hours: float) -> SignedIn:
    """A new session for `account`; expired sessions are cleared on the way."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    with session_scope(engine) as session:
        session.execute(delete(SessionRow).where(col(SessionRow.expires_at) < now))
        session.add(
            SessionRow(
                token_hash=token_hash(token),
                account_id=account.id or 0,
                csrf_token=csrf,
                expires_at=now + timedelta(hours=hours),
            )
        )
    return SignedIn(account, token, csrf)


def session_account(engine: Engine, token: str) -> tuple[AccountRow, SessionRow] | None:
    """The account signed in with `token`, and its session; None if unknown or expired."""
    with session_scope(engine) as session:
        found = session.exec(
            select(AccountRow, SessionRow)
            .join(SessionRow, col(SessionRow.account_id) == col(AccountRow.id))
            .where(SessionRow.token_hash == token_hash(token))
            .where(col(SessionRow.expires_at) > utcnow())
        ).first()
    return None if found is None else (found[0], found[1])


def csrf_matches(session: SessionRow, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(session.csrf_token, sent)


def end_session(engine: Engine, token: str) -> None:
    with session_scope(engine) as session:
        session.execute(delete(SessionRow).where(col(SessionRow.token_hash) == token_hash(token)))


def account(engine: Engine, account_id: int) -> AccountRow:
    with session_scope(engine) as session:
        row = session.get(AccountRow, account_id)
    if row is None:
        raise ServiceError(404, "unknown_account", f"no account {account_id}")
    return row


def accounts_page(engine: Engine, limit: int, offset: int) -> tuple[list[AccountRow], int]:
    with session_scope(engine) as session:
        total = session.exec(select(func.count()).select_from(AccountRow)).one()
        rows = session.exec(
            select(AccountRow).order_by(col(AccountRow.id)).limit(limit).offset(offset)
        ).all()
    return list(rows), int(total)


def set_role(engine: Engine, account_id: int, role: Role) -> AccountRow:
    """Gives the account `role`; 409 `last_admin` rather than leave no admin account (the
    admins are read under a lock, so two admins demoting each other cannot both succeed)."""
    with session_scope(engine) as session:
        admins = session.exec(
            select(AccountRow.id).where(AccountRow.role == Role.ADMIN).with_for_update()
        ).all()
        row = session.get(AccountRow, account_id)
        if row is None:
            raise ServiceError(404, "unknown_account", f"no account {account_id}")
        if role != Role.ADMIN and list(admins) == [account_id]:
            raise ServiceError(
                409, "last_admin", "this is the last admin account: make another first"
            )
        row.role = role.value
        session.add(row)
    return row


def api_keys(engine: Engine, account_id: int | None = None) -> list[ApiKeyRow]:
    """Every key (for admins), or the keys of one account."""
    query = select(ApiKeyRow).order_by(col(ApiKeyRow.id))
    if account_id is not None:
        query = query.where(ApiKeyRow.account_id == account_id)
    with session_scope(engine) as session:
        return list(session.exec(query).all())


def revoke_key(engine: Engine, key_id: int, owner: int | None) -> None:
    """Revokes a key; `owner`: only if it belongs to that account (None: an admin, any key).
    404 for a key that is not there or not theirs (whose it is stays unsaid)."""
    with session_scope(engine) as session:
        row = session.get(ApiKeyRow, key_id)
        if row is None or (owner is not None and row.account_id != owner):
            raise ServiceError(404, "unknown_key", f"no API key {key_id}")
        row.revoked = True
        session.add(row)
