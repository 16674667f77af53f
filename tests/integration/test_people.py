"""The crowdsourcing side over real HTTP, on SQLite and PostgreSQL: accounts and sign-in (cookie
sessions with CSRF, keys of accounts), submissions that belong to their contributor, reviews
handed out on leases, the paper's flags with 0 to 3 reviews, the 80% rule, and the points
ledger with its leaderboard."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from services.common.database import session_scope, utcnow
from services.gateway import points
from services.gateway.auth import Role
from services.gateway.points_rules import PointKind, PointTable
from services.gateway.tables import PointRow, ReviewSlotRow, SignInAttemptRow
from tests.helpers import encode, photo, wait_for
from tests.integration.gateway_stack import Stack, running_stack

PASSWORD = "correct horse battery"
FORM = {
    "countries": "TH",
    "location": "Bangkok, Thailand",
    "category": "cuisine",
    "native_language": "tha",
    "caption_native": "ผัดไทยที่ตลาด",
    "caption_en": "Pad thai at a night market",
    "consent": "true",
}
AGREE = {"quality": 1, "relevance": 5, "caption_fit": "yes", "pii": False, "unsafe": False}


@dataclass
class Person:
    """A signed-in browser: the session cookie and the CSRF token the pages send back."""

    client: httpx.Client
    account: dict[str, Any]
    csrf: str

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, headers={"X-CSRF-Token": self.csrf}, **kwargs)

    def submit(self, data: bytes, **fields: str) -> httpx.Response:
        return self.post(
            "/v1/images", files={"image": ("photo.jpg", data)}, data={**FORM, **fields}
        )

    def review(self, image_id: str, **answers: Any) -> httpx.Response:
        return self.post(f"/v1/images/{image_id}/reviews", json={**AGREE, **answers})


@pytest.fixture
def stack(database_url: str, tmp_path: Path, live_embedder: str) -> Iterator[Stack]:
    with running_stack(
        database_url,
        tmp_path,
        live_embedder,
        key_remember_seconds=0,
        people={"review_lease_minutes": 0.1},  # 6 s: long enough to hold, short to expire
        crawl={"roots": [str(tmp_path)]},  # where exports may be written
    ) as running:
        yield running
        while SIGNED_IN:
            SIGNED_IN.pop().close()


SIGNED_IN: list[httpx.Client] = []  # the test's browsers, closed after it


def admin(stack: Stack) -> dict[str, str]:
    return stack.as_role(Role.ADMIN)


def person(stack: Stack, name: str, role: Role = Role.CONTRIBUTOR, country: str = "ID") -> Person:
    """Signs up (as every person does), is given `role` by an admin, and signs in."""
    email = f"{name}@example.org"
    made = stack.gateway.post(
        "/v1/accounts",
        json={"name": name, "email": email, "password": PASSWORD, "country": country},
    )
    assert made.status_code == 201, made.text
    if role != Role.CONTRIBUTOR:
        changed = stack.gateway.patch(
            f"/v1/accounts/{made.json()['id']}", json={"role": role.value}, headers=admin(stack)
        )
        assert changed.status_code == 200, changed.text
    client = httpx.Client(base_url=str(stack.gateway.base_url), timeout=60)
    SIGNED_IN.append(client)
    signed = client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    assert signed.status_code == 200, signed.text
    return Person(client, signed.json()["account"], signed.json()["csrf_token"])


def picture(name: str, turn: int = 0) -> bytes:
    """A real photograph (a different one per name: no two are near-duplicates)."""
    return encode(photo(name).rotate(turn), "JPEG", quality=90)


def processed(stack: Stack, image_id: str) -> dict[str, Any]:
    """The record once the pipeline has finished with it (read by an admin)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        record = stack.gateway.get(f"/v1/images/{image_id}", headers=admin(stack)).json()
        if record["status"] in ("done", "failed"):
            assert record["status"] == "done", record
            return dict(record)
        time.sleep(0.2)
    raise TimeoutError(f"{image_id} was not processed")


def submitted(stack: Stack, contributor: Person, name: str) -> str:
    response = contributor.submit(picture(name))
    assert response.status_code == 202, response.text
    image_id = str(response.json()["id"])
    processed(stack, image_id)
    return image_id


def ledger(stack: Stack) -> list[tuple[int, str, str, float]]:
    with Session(stack.engine) as session:
        rows = session.exec(select(PointRow).order_by(PointRow.id)).all()  # type: ignore[arg-type]
        return [(r.account_id, r.kind, r.image_id, r.points) for r in rows]


# Accounts and sign-in


def test_a_session_signs_in_changes_only_with_its_csrf_token_and_signs_out(stack: Stack) -> None:
    ana = person(stack, "ana")
    me = ana.client.get("/v1/me")
    assert me.status_code == 200 and me.json()["account"]["email"] == "ana@example.org"
    assert me.json()["csrf_token"] == ana.csrf
    cookie = ana.client.cookies.jar
    assert any(c.name == "seavl_session" and c.has_nonstandard_attr("HttpOnly") for c in cookie)
    unprotected = ana.client.post(
        "/v1/images", files={"image": ("a.jpg", picture("rocket.jpg"))}, data=FORM
    )
    assert unprotected.status_code == 403
    assert unprotected.json()["error"]["code"] == "csrf_failed"
    wrong = ana.client.post(
        "/v1/images",
        files={"image": ("a.jpg", picture("rocket.jpg"))},
        data=FORM,
        headers={"X-CSRF-Token": "not-it"},
    )
    assert wrong.status_code == 403
    assert ana.submit(picture("rocket.jpg")).status_code == 202
    assert ana.client.delete("/v1/sessions", headers={"X-CSRF-Token": ana.csrf}).status_code == 204
    after = ana.client.get("/v1/me")
    assert after.status_code == 401


def test_sign_in_refuses_alike_a_wrong_password_and_an_unknown_email(stack: Stack) -> None:
    person(stack, "ben")
    wrong = stack.gateway.post("/v1/sessions", json={"email": "ben@example.org", "password": "x"})
    nobody = stack.gateway.post("/v1/sessions", json={"email": "no@example.org", "password": "x"})
    assert wrong.status_code == nobody.status_code == 401
    assert wrong.json()["error"] == nobody.json()["error"]
    again = stack.gateway.post(
        "/v1/accounts",
        json={"name": "B", "email": "BEN@example.org", "password": PASSWORD, "country": "ID"},
    )
    assert again.status_code == 409 and again.json()["error"]["field"] == "email"
    short = stack.gateway.post(
        "/v1/accounts",
        json={"name": "C", "email": "c@example.org", "password": "short", "country": "ID"},
    )
    assert short.status_code == 422 and short.json()["error"]["field"] == "password"
    unknown_country = stack.gateway.post(
        "/v1/accounts",
        json={"name": "C", "email": "c@example.org", "password": PASSWORD, "country": "FR"},
    )
    assert unknown_country.status_code == 422


def sign_in(stack: Stack, email: str, password: str) -> httpx.Response:
    return stack.gateway.post("/v1/sessions", json={"email": email, "password": password})


def test_sign_ins_past_the_allowance_wait_whatever_the_password(stack: Stack) -> None:
    """No guessing a password at Argon2's pace: past `sign_in_attempts` within the window, an
    address's sign-ins are refused with 429 and Retry-After, the right password too; an unknown
    address alike (no telling which exist); other addresses unaffected; a success starts over."""
    person(stack, "dee")
    person(stack, "eve")
    allowed = stack.settings.people.sign_in_attempts
    for address in ("dee@example.org", "nobody@example.org"):
        for _ in range(allowed):
            assert sign_in(stack, address, "guess").status_code == 401
        refused = sign_in(stack, address, PASSWORD)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "too_many_sign_ins"
        window = stack.settings.people.sign_in_window_minutes * 60
        assert 0 < int(refused.headers["Retry-After"]) <= window
    assert sign_in(stack, "DEE@example.org ", PASSWORD).status_code == 429  # the same address
    # another address is unaffected, and a success starts its count over
    for _ in range(allowed - 1):
        assert sign_in(stack, "eve@example.org", "guess").status_code == 401
    assert sign_in(stack, "eve@example.org", PASSWORD).status_code == 200
    for _ in range(allowed - 1):
        assert sign_in(stack, "eve@example.org", "guess").status_code == 401
    assert sign_in(stack, "eve@example.org", PASSWORD).status_code == 200
    # once the window has passed (moved back here, not waited for), the address signs in again
    with session_scope(stack.engine) as session:
        session.execute(
            update(SignInAttemptRow)
            .where(col(SignInAttemptRow.email) == "dee@example.org")
            .values(first_at=utcnow() - timedelta(minutes=window / 60 + 1))
        )
    assert sign_in(stack, "dee@example.org", PASSWORD).status_code == 200


def test_concurrent_guesses_get_no_more_than_the_allowance(stack: Stack) -> None:
    """The attempt is counted before the password is checked, so guesses sent at once are not
    each let through by a count that the others have not raised yet."""
    person(stack, "fay")
    allowed = stack.settings.people.sign_in_attempts
    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(lambda _: sign_in(stack, "fay@example.org", "guess").status_code, range(16))
        )
    assert sorted(statuses) == [401] * allowed + [429] * (16 - allowed)


def test_admins_list_accounts_change_roles_and_revoke_the_keys_of_accounts(stack: Stack) -> None:
    cai = person(stack, "cai")
    made = cai.post("/v1/api-keys", json={"name": "uploader"})
    assert made.status_code == 201, made.text
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    assert stack.gateway.get("/v1/reviews/next", headers=key).status_code == 403
    assert cai.client.get("/v1/accounts").status_code == 403  # a contributor is no admin
    listed = stack.gateway.get("/v1/accounts", headers=admin(stack)).json()
    assert [a["email"] for a in listed["items"]] == ["cai@example.org"]
    promoted = stack.gateway.patch(
        f"/v1/accounts/{cai.account['id']}", json={"role": "validator"}, headers=admin(stack)
    )
    assert promoted.json()["role"] == "validator"
    # the key acts with its account's role, as it is now
    assert stack.gateway.get("/v1/reviews/next", headers=key).status_code == 204
    keys = stack.gateway.get("/v1/api-keys", headers=admin(stack)).json()["items"]
    mine = [k for k in keys if k["account_id"] == cai.account["id"]]
    assert len(mine) == 1
    revoked = stack.gateway.delete(f"/v1/api-keys/{mine[0]['id']}", headers=admin(stack))
    assert revoked.status_code == 204
    assert stack.gateway.get("/v1/reviews/next", headers=key).status_code == 401
    # the service keys made before accounts keep working
    assert stack.gateway.get("/v1/images", headers=stack.as_role(Role.VALIDATOR)).status_code == 200


# Submissions


def test_a_submission_needs_the_whole_form_and_consent(stack: Stack) -> None:
    dee = person(stack, "dee")
    missing = dee.submit(picture("rocket.jpg"), category="", caption_en="")
    assert missing.status_code == 422
    assert missing.json()["error"]["field"] == "category"
    assert "caption_en" in missing.json()["error"]["message"]
    no_consent = dee.submit(picture("rocket.jpg"), consent="false")
    assert no_consent.status_code == 422
    assert no_consent.json()["error"]["code"] == "consent_required"
    bad_category = dee.submit(picture("rocket.jpg"), category="weather")
    assert bad_category.status_code == 422
    assert bad_category.json()["error"]["field"] == "category"
    accepted = dee.submit(picture("rocket.jpg"))
    assert accepted.status_code == 202
    body = accepted.json()
    assert (body["category"], body["countries"], body["review"]["count"]) == ("cuisine", ["TH"], 0)


def test_contributors_see_only_their_own_submissions(stack: Stack) -> None:
    eka, fay = person(stack, "eka"), person(stack, "fay")
    data = picture("rocket.jpg")
    first = eka.submit(data)
    assert first.status_code == 202
    image_id = first.json()["id"]
    assert eka.submit(data).status_code == 200  # the same person again: their record
    taken = fay.submit(data)
    assert taken.status_code == 409
    assert taken.json()["error"]["code"] == "duplicate_submission"
    assert image_id not in taken.text and "eka" not in taken.text
    assert fay.client.get(f"/v1/images/{image_id}").status_code == 404
    assert fay.client.get(f"/v1/images/{image_id}/content").status_code == 404
    assert eka.client.get(f"/v1/images/{image_id}/content").status_code == 200
    fay_image = fay.submit(picture("astronaut.png")).json()["id"]
    assert [i["id"] for i in eka.client.get("/v1/images").json()["items"]] == [image_id]
    assert [i["id"] for i in fay.client.get("/v1/images").json()["items"]] == [fay_image]
    everyone = stack.gateway.get("/v1/images", headers=stack.as_role(Role.VALIDATOR)).json()
    assert everyone["total"] == 2


def test_a_near_copy_of_another_persons_image_is_a_duplicate_without_naming_it(
    stack: Stack,
) -> None:
    gus, hal = person(stack, "gus"), person(stack, "hal")
    original = submitted(stack, gus, "chelsea.png")
    copy = hal.submit(encode(photo("chelsea.png"), "JPEG", quality=70))
    assert copy.status_code == 202
    processed(stack, copy.json()["id"])
    seen_by_hal = hal.client.get(f"/v1/images/{copy.json()['id']}").json()
    assert (seen_by_hal["is_duplicate"], seen_by_hal["duplicate_of"]) == (True, None)
    seen_by_admin = stack.gateway.get(f"/v1/images/{copy.json()['id']}", headers=admin(stack))
    assert seen_by_admin.json()["duplicate_of"] == original


# Reviews and flags


def flags(record: dict[str, Any]) -> tuple[Any, ...]:
    review = record["review"]
    return (
        review["count"],
        review["needed"],
        review["quality"],
        review["caption_fit"],
        review["relevance"],
        review["overall"],
        record["accepted"],
    )


def test_flags_with_zero_one_two_and_three_reviews(stack: Stack) -> None:
    ida = person(stack, "ida", country="TH")
    vals = [person(stack, f"val{n}", Role.VALIDATOR) for n in range(3)]
    image_id = submitted(stack, ida, "astronaut.png")
    record = ida.client.get(f"/v1/images/{image_id}").json()
    assert flags(record)[:6] == (0, 2, None, None, None, None)
    first = vals[0].review(image_id)
    assert first.status_code == 201, first.text
    assert flags(first.json()["image"]) == (1, 2, None, None, None, None, None)
    # the second disagrees on caption fit and PII: 3 of 5 questions, under 80% -> a third
    second = vals[1].review(image_id, caption_fit="no", pii=True, relevance=3)
    assert flags(second.json()["image"]) == (2, 3, True, False, True, False, False)
    assert ida.client.get(f"/v1/images/{image_id}").json()["points"] == 0
    third = vals[2].review(image_id, relevance=4)
    # caption fit mean (1 + 0 + 1) / 3 > 0.5: accepted now
    assert flags(third.json()["image"]) == (3, 3, True, True, True, True, True)
    mine = ida.client.get(f"/v1/images/{image_id}").json()
    assert mine["points"] == 1.0  # phase 2, Thailand: 1 point per accepted image
    accepted = stack.gateway.get(
        "/v1/images", params={"overall": "true", "min_reviews": 3}, headers=admin(stack)
    ).json()
    assert [i["id"] for i in accepted["items"]] == [image_id]
    undecided = stack.gateway.get("/v1/images", params={"overall": "none"}, headers=admin(stack))
    assert undecided.json()["total"] == 0


def test_two_agreeing_validators_accept_and_points_move_on_the_leaderboard(stack: Stack) -> None:
    jo = person(stack, "jo", country="LA")
    kim, lee = person(stack, "kim", Role.VALIDATOR), person(stack, "lee", Role.VALIDATOR)
    image_id = submitted(stack, jo, "coffee.png")
    laos = jo.submit(picture("rocket.jpg"), countries="LA,ID")
    assert laos.status_code == 202
    processed(stack, laos.json()["id"])
    for image in (image_id, laos.json()["id"]):
        assert kim.review(image).status_code == 201
        assert lee.review(image, relevance=4).status_code == 201
    board = kim.client.get("/v1/leaderboard").json()
    assert board["phase"] == 2
    assert [t["points"] for t in board["thresholds"]] == [200, 300]
    by_name = {i["name"]: i for i in board["items"]}
    # phase 2: TH 1 point, LA+ID the higher of 3 and 0.5; each review 1 point
    assert by_name["jo"]["points"] == 4.0 and by_name["jo"]["submissions"] == 2
    assert (by_name["kim"]["points"], by_name["kim"]["reviews"]) == (2.0, 2)
    assert board["items"][0]["name"] == "jo" and board["items"][0]["rank"] == 1
    mine = jo.client.get("/v1/me/points").json()
    assert mine["points"] == 4.0 and mine["next_threshold"]["points"] == 200


def test_a_review_counts_once_however_often_it_is_sent(stack: Stack) -> None:
    max_ = person(stack, "max")
    ned = person(stack, "ned", Role.VALIDATOR)
    image_id = submitted(stack, max_, "coffee.png")
    assert ned.review(image_id).status_code == 201
    before = ledger(stack)
    again = ned.review(image_id)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_reviewed"
    assert ledger(stack) == before == [(ned.account["id"], "review", image_id, 1.0)]


def test_validators_never_get_their_own_image_nor_one_they_reviewed(stack: Stack) -> None:
    oli = person(stack, "oli", Role.VALIDATOR)
    pat = person(stack, "pat", Role.VALIDATOR)
    own = submitted(stack, oli, "coffee.png")
    assert oli.client.get("/v1/reviews/next").status_code == 204
    refused = oli.review(own)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "own_image"
    handed = pat.client.get("/v1/reviews/next")
    assert handed.json()["image"]["id"] == own
    assert pat.client.get("/v1/reviews/next").json()["image"]["id"] == own  # the same lease
    assert pat.review(own).status_code == 201
    assert pat.client.get("/v1/reviews/next").status_code == 204


def test_fewest_reviews_first_and_leases_hold_places_until_they_expire(stack: Stack) -> None:
    quinn = person(stack, "quinn")
    vals = [person(stack, f"v{n}", Role.VALIDATOR) for n in range(3)]
    older = submitted(stack, quinn, "coffee.png")
    newer = submitted(stack, quinn, "astronaut.png")
    assert vals[2].review(older).status_code == 201  # older has one review now
    # fewest reviews first: the newer image (0 reviews) before the older (1)
    assert vals[0].client.get("/v1/reviews/next").json()["image"]["id"] == newer
    assert vals[1].client.get("/v1/reviews/next").json()["image"]["id"] == newer
    # newer's places are both held: the next validator gets older's last place
    third = person(stack, "v3", Role.VALIDATOR)
    assert third.client.get("/v1/reviews/next").json()["image"]["id"] == older
    fourth = person(stack, "v4", Role.VALIDATOR)
    assert fourth.client.get("/v1/reviews/next").status_code == 204  # every place is held
    late = fourth.review(newer)
    assert late.status_code == 409 and late.json()["error"]["code"] == "review_not_needed"
    time.sleep(6.2)  # the leases run out
    assert fourth.client.get("/v1/reviews/next").json()["image"]["id"] == newer


def test_two_validators_racing_for_the_last_place_fill_it_once(stack: Stack) -> None:
    rio = person(stack, "rio")
    first = person(stack, "first", Role.VALIDATOR)
    racers = [person(stack, f"racer{n}", Role.VALIDATOR) for n in range(2)]
    image_id = submitted(stack, rio, "coffee.png")
    assert first.review(image_id).status_code == 201
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda p: p.review(image_id), racers))
    assert sorted(a.status_code for a in answers) == [201, 409]
    record = stack.gateway.get(f"/v1/images/{image_id}", headers=admin(stack)).json()
    assert record["review"]["count"] == 2
    with Session(stack.engine) as session:
        reviews = session.exec(select(func.count()).select_from(PointRow)).one()
    assert reviews == 3  # two reviews and the accepted submission


def test_exports_carry_the_flags_and_keep_only_the_reviewed_when_asked(
    stack: Stack, tmp_path: Path
) -> None:
    sam = person(stack, "sam")
    tia, uma = person(stack, "tia", Role.VALIDATOR), person(stack, "uma", Role.VALIDATOR)
    reviewed = submitted(stack, sam, "coffee.png")
    submitted(stack, sam, "astronaut.png")  # never reviewed
    assert tia.review(reviewed).status_code == 201
    assert uma.review(reviewed).status_code == 201
    asked = stack.gateway.post(
        "/v1/exports",
        json={"destination": str(tmp_path / "out"), "filters": {"min_reviews": 2}},
        headers=admin(stack),
    )
    assert asked.status_code == 202, asked.text
    url = f"/v1/exports/{asked.json()['id']}"
    wait_for(
        lambda: stack.gateway.get(url, headers=admin(stack)).json()["status"] == "done",
        timeout=120,
    )
    table = pq.read_table(next((tmp_path / "out").rglob("*.parquet"))).to_pylist()
    assert [row["key"] for row in table] == [reviewed]
    row = table[0]
    assert (row["category"], row["review_count"], row["flag_overall"], row["accepted"]) == (
        "cuisine",
        2,
        True,
        True,
    )
    assert (row["flag_quality"], row["flag_caption_fit"], row["flag_relevance"]) == (
        True,
        True,
        True,
    )


# Validator screening


def add_screening_item(stack: Stack, name: str, **answers: str) -> dict[str, Any]:
    response = stack.gateway.post(
        "/v1/screening/items",
        files={"image": (name, picture(name))},
        data={"caption_en": f"a photo: {name}", **answers},
        headers=admin(stack),
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_a_contributor_who_passes_the_screening_becomes_a_validator(stack: Stack) -> None:
    vic, wyn = person(stack, "vic"), person(stack, "wyn")
    assert vic.client.get("/v1/screening").json()["items"] == []
    empty = vic.post("/v1/screening/answers", json={"answers": []})
    assert empty.status_code == 409 and empty.json()["error"]["code"] == "no_screening"
    food = add_screening_item(stack, "coffee.png", quality="1", relevance="3", caption_fit="yes")
    space = add_screening_item(stack, "astronaut.png", quality="1", relevance="1", caption_fit="no")
    refused = vic.post(
        "/v1/screening/items",
        files={"image": ("x.png", picture("rocket.jpg"))},
        data={"caption_en": "x", "quality": "1", "relevance": "3", "caption_fit": "yes"},
    )
    assert refused.status_code == 403
    taken = vic.client.get("/v1/screening").json()
    assert taken["pass_score"] == 0.8
    assert [set(i) for i in taken["items"]] == [{"id", "caption_en", "image_url"}] * 2  # no answers
    assert vic.client.get(taken["items"][0]["image_url"]).headers["content-type"] == "image/jpeg"
    # relevance within one step counts as right: 4 for 3 and 2 for 1
    right = [
        {"item_id": food["id"], "quality": 1, "relevance": 4, "caption_fit": "yes"},
        {"item_id": space["id"], "quality": 1, "relevance": 2, "caption_fit": "no"},
    ]
    passed = vic.post("/v1/screening/answers", json={"answers": right})
    assert passed.json() == {"score": 1.0, "passed": True, "role": "validator"}
    assert vic.client.get("/v1/reviews/next").status_code == 204  # a validator now
    # one item wrong on two questions, the other left out: 1/6, a fail
    wrong = [{"item_id": food["id"], "quality": 0, "relevance": 1, "caption_fit": "yes"}]
    failed = wyn.post("/v1/screening/answers", json={"answers": wrong})
    assert failed.json()["passed"] is False and failed.json()["role"] == "contributor"
    assert abs(failed.json()["score"] - 1 / 6) < 1e-9
    unknown = wyn.post(
        "/v1/screening/answers",
        json={"answers": [{"item_id": 999, "quality": 1, "relevance": 3, "caption_fit": "yes"}]},
    )
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "answers"
    removed = stack.gateway.delete(f"/v1/screening/items/{food['id']}", headers=admin(stack))
    assert removed.status_code == 204
    assert len(stack.gateway.get("/v1/screening/items", headers=admin(stack)).json()["items"]) == 1


def test_seavl_users_create_makes_the_first_admin(stack: Stack) -> None:
    def create(password: str, email: str = "root@example.org") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "users", "create", "--email", email]
            + ["--name", "Root", "--country", "SG", "--password-stdin"],
            input=password + "\n",
            capture_output=True,
            text=True,
            env={**os.environ, "DATABASE_URL": stack.settings.database_url},
            timeout=120,
            check=False,
        )

    made = create(PASSWORD)
    assert made.returncode == 0, made.stderr
    assert "root@example.org (admin)" in made.stdout
    short = create("short", "other@example.org")
    assert short.returncode != 0 and "10 characters" in short.stderr
    again = create(PASSWORD)
    assert again.returncode != 0 and "has an account already" in again.stderr
    signed = stack.gateway.post(
        "/v1/sessions", json={"email": "root@example.org", "password": PASSWORD}
    )
    assert signed.json()["account"]["role"] == "admin"


def test_the_ledger_keeps_one_entry_per_account_kind_and_image(stack: Stack) -> None:
    table = PointTable.load(2)
    with session_scope(stack.engine) as session:
        for _ in range(3):  # a retried transaction, a flag computed again
            points.award(session, table, 7, PointKind.REVIEW, "a" * 64, table.review)
            points.settle_submission(session, table, 8, "a" * 64, ["KH"], accepted=True)
    assert sorted(ledger(stack)) == [(7, "review", "a" * 64, 1.0), (8, "submission", "a" * 64, 3.0)]
    with session_scope(stack.engine) as session:  # no longer accepted: the entry goes
        points.settle_submission(session, table, 8, "a" * 64, ["KH"], accepted=False)
    assert ledger(stack) == [(7, "review", "a" * 64, 1.0)]


def test_the_screening_is_not_for_guessing_attempts_are_counted(stack: Stack) -> None:
    xia = person(stack, "xia")
    item = add_screening_item(stack, "coffee.png", quality="1", relevance="5", caption_fit="yes")
    wrong = {
        "answers": [{"item_id": item["id"], "quality": 0, "relevance": 1, "caption_fit": "no"}]
    }
    for _ in range(stack.settings.people.screening_attempts):
        assert xia.post("/v1/screening/answers", json=wrong).json()["passed"] is False
    right = {
        "answers": [{"item_id": item["id"], "quality": 1, "relevance": 5, "caption_fit": "yes"}]
    }
    spent = xia.post("/v1/screening/answers", json=right)
    assert spent.status_code == 409 and spent.json()["error"]["code"] == "no_attempts_left"
    assert xia.client.get("/v1/reviews/next").status_code == 403  # still a contributor


def test_a_validator_holds_one_place_of_an_image_at_most(stack: Stack) -> None:
    yan = person(stack, "yan")
    zed = person(stack, "zed", Role.VALIDATOR)
    image_id = submitted(stack, yan, "coffee.png")
    with session_scope(stack.engine) as session:  # as a second tab's lease would try
        session.add(ReviewSlotRow(image_id=image_id, slot=0, reviewer_id=zed.account["id"]))
    with pytest.raises(IntegrityError), session_scope(stack.engine) as session:
        session.add(ReviewSlotRow(image_id=image_id, slot=1, reviewer_id=zed.account["id"]))


def test_the_last_admin_stays_an_admin(stack: Stack) -> None:
    boss = person(stack, "boss", Role.ADMIN)
    demoted = stack.gateway.patch(
        f"/v1/accounts/{boss.account['id']}", json={"role": "contributor"}, headers=admin(stack)
    )
    assert demoted.status_code == 409 and demoted.json()["error"]["code"] == "last_admin"
    second = person(stack, "second", Role.ADMIN)
    assert (
        boss.client.patch(
            f"/v1/accounts/{second.account['id']}",
            json={"role": "validator"},
            headers={"X-CSRF-Token": boss.csrf},
        ).json()["role"]
        == "validator"
    )


def test_odd_input_is_refused_with_a_4xx(stack: Stack) -> None:
    nul = stack.gateway.post(
        "/v1/accounts",
        json={
            "name": "a\u0000b",
            "email": "nul@example.org",
            "password": PASSWORD,
            "country": "ID",
        },
    )
    assert nul.status_code == 422, nul.text
    huge = stack.gateway.patch(
        f"/v1/accounts/{2**70}", json={"role": "validator"}, headers=admin(stack)
    )
    assert huge.status_code in (404, 422), huge.text
    assert stack.gateway.get(
        f"/v1/screening/items/{2**70}/image", headers=admin(stack)
    ).status_code in (404, 422)
    assert stack.gateway.get("/pages/assets/x%00.js").status_code == 404


def test_sending_ones_own_bytes_again_names_no_one_elses_image(stack: Stack) -> None:
    ada, bo = person(stack, "ada"), person(stack, "bo")
    submitted(stack, ada, "chelsea.png")
    copy = encode(photo("chelsea.png"), "JPEG", quality=70)
    processed(stack, bo.submit(copy).json()["id"])
    again = bo.submit(copy)
    assert again.status_code == 200
    assert (again.json()["is_duplicate"], again.json()["duplicate_of"]) == (True, None)


def test_a_value_the_database_cannot_store_is_a_422(stack: Stack) -> None:
    """A NUL in free text: PostgreSQL refuses to store it, SQLite keeps it; never a 500."""
    cy = person(stack, "cy")
    val = person(stack, "val", Role.VALIDATOR)
    image_id = submitted(stack, cy, "coffee.png")
    answer = val.review(image_id, comment="fine\u0000")
    expected = 422 if stack.engine.dialect.name == "postgresql" else 201
    assert answer.status_code == expected, answer.text
    if expected == 422:
        assert answer.json()["error"]["code"] == "invalid_request"
        assert val.review(image_id).status_code == 201  # nothing half-written was left
