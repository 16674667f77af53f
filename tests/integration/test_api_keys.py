"""API keys are checked against the database once and then remembered for a short while, so a
busy client costs no query per request; a key revoked in the database stops working within that
while, and a wrong key is never let through by what was remembered."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import select

from services.common.database import make_engine, session_scope
from services.common.errors import ServiceError
from services.gateway.auth import ApiKeys, Role, create_key
from services.gateway.tables import ApiKeyRow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def revoke(database_url: str, key: str) -> None:
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        row = session.exec(select(ApiKeyRow).where(ApiKeyRow.prefix == key.split("_")[1])).one()
        row.revoked = True
    engine.dispose()


def verify(keys: ApiKeys, key: str) -> ApiKeyRow:
    return asyncio.run(keys.verify(f"Bearer {key}"))


def refused(keys: ApiKeys, authorization: str) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        asyncio.run(keys.verify(authorization))
    assert caught.value.status_code == 401
    return caught.value


def test_a_revoked_key_stops_working_once_it_is_no_longer_remembered(database_url: str) -> None:
    engine = make_engine(database_url)
    clock = Clock()
    keys = ApiKeys(engine, remember_seconds=10, clock=clock)
    key = create_key(engine, Role.VALIDATOR)
    assert verify(keys, key).role == Role.VALIDATOR
    revoke(database_url, key)
    clock.now += 9  # still remembered: no query
    assert verify(keys, key).role == Role.VALIDATOR
    clock.now += 2
    assert "not valid" in refused(keys, f"Bearer {key}").message
    engine.dispose()


def test_remembering_nothing_checks_every_request(database_url: str) -> None:
    engine = make_engine(database_url)
    keys = ApiKeys(engine, remember_seconds=0)
    key = create_key(engine, Role.CONTRIBUTOR)
    assert verify(keys, key).role == Role.CONTRIBUTOR
    revoke(database_url, key)
    refused(keys, f"Bearer {key}")
    engine.dispose()


def test_a_remembered_key_lets_no_other_secret_through(database_url: str) -> None:
    engine = make_engine(database_url)
    keys = ApiKeys(engine, remember_seconds=60)
    key = create_key(engine, Role.ADMIN)
    verify(keys, key)
    prefix = "_".join(key.split("_")[:2])  # seavl_<prefix>_<secret>
    refused(keys, f"Bearer {prefix}_not-the-secret")
    refused(keys, f"Bearer {key[:-1]}")
    refused(keys, "Bearer seavl_nope")
    refused(keys, "Basic abc")
    assert refused(keys, "").headers == {"WWW-Authenticate": "Bearer"}
    engine.dispose()


def test_what_is_remembered_is_bounded(database_url: str) -> None:
    engine = make_engine(database_url)
    keys = ApiKeys(engine, remember_seconds=60, capacity=3)
    made = [create_key(engine, Role.CONTRIBUTOR) for _ in range(5)]
    for key in made:
        verify(keys, key)
    assert keys.remembered == 3
    for key in made:  # the forgotten ones are looked up again and still work
        assert verify(keys, key).role == Role.CONTRIBUTOR
    engine.dispose()
