"""The gateway end to end on embedded defaults (in-process jobs, a local folder, SQLite or
PostgreSQL), with the real embedder, filter and dedup services behind it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlmodel import Session, func, select

from services.common.database import make_engine
from services.gateway.app import create_app
from services.gateway.auth import Role, create_key
from services.gateway.tables import ImageRow
from tests.helpers import (
    encode,
    free_port,
    has_gps,
    live_server,
    noise_image,
    photo,
    photo_bytes,
    photo_with_gps,
    solid,
)
from tests.integration.gateway_stack import Stack, running_stack, settings_for


@pytest.fixture
def stack(database_url: str, tmp_path: Path, live_embedder: str) -> Iterator[Stack]:
    with running_stack(database_url, tmp_path, live_embedder) as running:
        STORED_BEFORE[id(running)] = stored(running)
        yield running


def records(stack: Stack) -> int:
    with Session(stack.engine) as session:
        return int(session.exec(select(func.count()).select_from(ImageRow)).one())


def stored(stack: Stack) -> set[Path]:
    return {p for p in stack.settings.storage.dir.rglob("*") if p.is_file()}


# the run's store is shared by every test (images move by key, so the test embedder reads it)
STORED_BEFORE: dict[int, set[Path]] = {}


def objects(stack: Stack) -> int:
    """Objects stored since the stack started."""
    return len(stored(stack) - STORED_BEFORE[id(stack)])


def unique_photo() -> bytes:
    """An image no other test stores."""
    return encode(noise_image((96, 96), seed=int.from_bytes(os.urandom(4), "big")), "JPEG")


def test_upload_is_scored_and_deduplicated(stack: Stack) -> None:
    cat = photo_bytes("chelsea.png")
    response = stack.upload(
        cat,
        countries="TH,VN",
        location="Bangkok, Thailand",
        native_language="tha",
        caption_en="A cat on a mat.",
    )
    assert response.status_code == 202, response.text
    first = response.json()
    assert first["status"] in ("queued", "processing", "done")
    done = stack.wait_done(first["id"])
    assert done["status"] == "done", done
    direct = stack.gateway.post(
        "/v1/relevance", files={"image": ("cat.jpg", cat)}, headers=stack.as_role(Role.CONTRIBUTOR)
    ).json()
    assert done["score"] == pytest.approx(direct["score"], abs=1e-5) and done["score"] > 0.5
    assert (done["tier"], done["accepted"]) == (direct["tier"], direct["accepted"])
    assert done["best_country"] == "TH"  # the cat among the references is Thai
    assert (done["duplicate_of"], done["is_duplicate"]) == (None, False)
    assert (done["countries"], done["location"], done["native_language"]) == (
        ["TH", "VN"],
        "Bangkok, Thailand",
        "tha",
    )
    copy = encode(photo("chelsea.png"), "JPEG", quality=80)  # other bytes, same picture
    second = stack.wait_done(stack.upload(copy).json()["id"])
    assert second["duplicate_of"] == first["id"] and second["is_duplicate"] is True


def test_the_same_bytes_twice_make_one_object_and_one_record(stack: Stack) -> None:
    data = unique_photo()
    first = stack.upload(data)
    again = stack.upload(data)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    stack.wait_done(first.json()["id"])
    assert (records(stack), objects(stack)) == (1, 1)


@pytest.mark.parametrize(
    "data, fields, status, code",
    [
        (b"", {}, 400, "empty_image"),
        (b"just some text", {}, 415, "unsupported_image_type"),
        (b"\xff\xd8\xff\xe0" + b"junk" * 40, {}, 422, "corrupt_image"),
        (encode(noise_image((256, 256)), "JPEG")[:3000], {}, 422, "truncated_image"),
        (photo_bytes("coffee.png"), {"countries": "FR"}, 422, "invalid_request"),
        (photo_bytes("coffee.png"), {"native_language": "klingon"}, 422, "invalid_request"),
        (photo_bytes("coffee.png"), {"gps": "13.7,100.5"}, 422, "invalid_request"),
    ],
)
def test_bad_uploads_leave_no_record_and_no_object(
    stack: Stack, data: bytes, fields: dict[str, str], status: int, code: str
) -> None:
    response = stack.upload(data, **fields)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert (records(stack), objects(stack)) == (0, 0)


def test_oversized_upload_is_refused_while_streaming(stack: Stack) -> None:
    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n\r\n'
        for _ in range(12):  # 12 MB in 1-MB chunks; the 413 comes before the end
            yield b"\xff" * (1024 * 1024)
        yield b"\r\n--b--\r\n"

    response = stack.gateway.post(
        "/v1/images",
        content=body(),
        headers={
            **stack.as_role(Role.CONTRIBUTOR),
            "content-type": "multipart/form-data; boundary=b",
        },
    )
    assert (response.status_code, response.json()["error"]["code"]) == (413, "request_too_large")
    assert (records(stack), objects(stack)) == (0, 0)


@pytest.mark.parametrize(
    "side, code",
    [
        (450, "image_too_large"),  # ~0.6 MB: the body fits, the image part is over its limit
        (600, "request_too_large"),  # ~1.1 MB: past the body limit, refused while it streams
    ],
)
def test_an_image_part_over_the_limit(
    database_url: str, tmp_path: Path, live_embedder: str, side: int, code: str
) -> None:
    """The body limit is the image limit plus room for the form fields: an image over its limit
    but within that room is named `image_too_large`; a body past it, `request_too_large`."""
    max_bytes = 500_000
    big = encode(noise_image((side, side)), "PNG")
    with running_stack(
        database_url,
        tmp_path / "small",
        live_embedder,
        with_references=False,
        images={"max_bytes": max_bytes},
    ) as small:
        STORED_BEFORE[id(small)] = stored(small)
        body_limit = max_bytes + small.settings.metadata_allowance_bytes
        assert len(big) > max_bytes and (len(big) > body_limit) == (code == "request_too_large")
        response = small.upload(big)
        assert (response.status_code, response.json()["error"]["code"]) == (413, code)
        assert (records(small), objects(small)) == (0, 0)


def test_an_upload_spooled_to_disk_is_read_whole(stack: Stack) -> None:
    """Starlette keeps a form's file in memory up to 1 MB and rolls a larger one to disk; both
    are read whole (the image part is read on the event loop only from memory)."""
    data = encode(noise_image((1100, 1100), seed=11), "JPEG", quality=95)
    assert 1024 * 1024 < len(data) < stack.settings.images.max_bytes
    response = stack.upload(data)
    assert response.status_code == 202, response.text
    served = stack.gateway.get(
        f"/v1/images/{response.json()['id']}/content", headers=stack.as_role(Role.VALIDATOR)
    )
    assert served.content == data
    stack.wait_done(response.json()["id"])


def test_location_data_is_never_served(stack: Stack) -> None:
    data = photo_with_gps("rocket.jpg")
    assert has_gps(data)
    image_id = stack.upload(data).json()["id"]
    served = stack.gateway.get(
        f"/v1/images/{image_id}/content", headers=stack.as_role(Role.VALIDATOR)
    )
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
    assert not has_gps(served.content)
    assert served.content != data
    stack.wait_done(image_id)


def test_listing_filters_and_pages(stack: Stack) -> None:
    cat = stack.upload(photo_bytes("chelsea.png"), countries="TH").json()["id"]
    coffee = stack.upload(photo_bytes("coffee.png"), countries="VN").json()["id"]
    copy = stack.upload(encode(photo("chelsea.png"), "JPEG", quality=70), countries="TH").json()[
        "id"
    ]
    for image_id in (cat, coffee, copy):
        stack.wait_done(image_id)
    headers = stack.as_role(Role.VALIDATOR)

    def ids(**params: object) -> set[str]:
        page = stack.gateway.get("/v1/images", params=params, headers=headers)
        assert page.status_code == 200, page.text
        return {item["id"] for item in page.json()["items"]}

    assert ids() == {cat, coffee, copy}
    assert ids(country="TH") == {cat, copy}
    assert ids(duplicate="true") == {copy} and ids(duplicate="false") == {cat, coffee}
    assert ids(status="done") == {cat, coffee, copy} and ids(status="failed") == set()
    cat_tier = stack.image(cat)["tier"]
    assert cat in ids(tier=cat_tier) and cat not in ids(
        tier="Rejected" if cat_tier != "Rejected" else "Bronze"
    )
    first = stack.gateway.get("/v1/images", params={"limit": 2}, headers=headers).json()
    rest = stack.gateway.get("/v1/images", params={"limit": 2, "offset": 2}, headers=headers).json()
    assert first["total"] == 3 and len(first["items"]) == 2 and len(rest["items"]) == 1
    bad = stack.gateway.get("/v1/images", params={"tier": "Mythic"}, headers=headers)
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_request")
    # a page larger than the gateway serves is refused, not silently cut to its size
    most = stack.settings.max_page_size
    too_many = stack.gateway.get("/v1/images", params={"limit": most + 1}, headers=headers)
    assert too_many.status_code == 422, too_many.text
    assert too_many.json()["error"]["field"] == "limit"
    assert f"limit is at most {most}" in too_many.json()["error"]["message"]
    assert stack.gateway.get("/v1/images", params={"limit": most}, headers=headers).is_success


def test_authentication_and_roles(stack: Stack) -> None:
    missing = stack.gateway.get("/v1/images/abc")
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    forged = stack.gateway.get("/v1/images/abc", headers={"Authorization": "Bearer seavl_0000_x"})
    assert (forged.status_code, forged.json()["error"]["code"]) == (401, "unauthorized")
    tampered_key = stack.keys[Role.ADMIN][:-2] + "xx"
    tampered = stack.gateway.get("/v1/images", headers={"Authorization": f"Bearer {tampered_key}"})
    assert (tampered.status_code, tampered.json()["error"]["code"]) == (401, "unauthorized")
    forbidden = stack.gateway.get("/v1/reviews/next", headers=stack.as_role(Role.CONTRIBUTOR))
    assert (forbidden.status_code, forbidden.json()["error"]["code"]) == (403, "forbidden")
    own_only = stack.gateway.get("/v1/images", headers=stack.as_role(Role.CONTRIBUTOR))
    assert own_only.status_code == 200 and own_only.json()["total"] == 0  # none of theirs yet
    assert stack.gateway.get("/v1/images", headers=stack.as_role(Role.VALIDATOR)).status_code == 200
    assert stack.gateway.get("/v1/images", headers=stack.as_role(Role.ADMIN)).status_code == 200
    assert stack.upload(photo_bytes("coffee.png"), role=Role.VALIDATOR).status_code == 202
    assert records(stack) == 1


def test_synchronous_relevance_and_dedup(stack: Stack) -> None:
    headers = stack.as_role(Role.CONTRIBUTOR)
    cat = photo_bytes("chelsea.png")
    relevance = stack.gateway.post(
        "/v1/relevance", files={"image": ("cat.jpg", cat)}, headers=headers
    )
    assert relevance.status_code == 200, relevance.text
    body = relevance.json()
    assert body["score"] > 0.5 and body["best_country"] == "TH"
    assert body["country_scores"]["TH"] > body["country_scores"]["VN"]
    reference_set = stack.gateway.get(
        "/v1/reference-sets/default", headers=stack.as_role(Role.ADMIN)
    ).json()
    # the default model's sets start on `shares` boundaries; ρ is their Platinum bound
    assert reference_set["rho_source"] == "platinum boundary"
    assert body["accepted"] == (body["score"] >= reference_set["rho"])
    assert (body["tier_source"], body["tiers_version"]) == ("shares", 1)
    nothing = stack.gateway.post(
        "/v1/dedup", files={"image": ("cat.jpg", cat)}, headers=headers
    ).json()
    assert nothing == {
        "by_embedding": [],
        "by_phash": [],
        "is_duplicate": False,
        "duplicate_of": None,
    }
    stored = stack.wait_done(stack.upload(cat).json()["id"])
    by_image = stack.gateway.post(
        "/v1/dedup", files={"image": ("c.jpg", cat)}, headers=headers
    ).json()
    assert by_image["is_duplicate"] and by_image["by_embedding"][0]["id"] == stored["id"]
    assert by_image["duplicate_of"]["id"] == stored["id"]
    # a grayscale copy: its embedding is only near, its pixels say copy (the pipeline's decision)
    grey = encode(photo("chelsea.png").convert("L").convert("RGB"), "JPEG", quality=85)
    by_pixels = stack.gateway.post(
        "/v1/dedup", files={"image": ("grey.jpg", grey)}, headers=headers
    ).json()
    assert by_pixels["is_duplicate"]
    assert by_pixels["duplicate_of"]["id"] == stored["id"]
    assert by_pixels["duplicate_of"]["by"] == "pixels"
    by_phash = stack.gateway.post(
        "/v1/dedup", json={"phash": stored["phash"]}, headers=headers
    ).json()
    assert by_phash["is_duplicate"] and by_phash["by_phash"] == [
        {"id": stored["id"], "distance": 0}
    ]
    assert by_phash["duplicate_of"] == {
        "id": stored["id"],
        "by": "phash",
        "score": None,
        "distance": 0,
    }
    assert records(stack) == 1  # the synchronous endpoints store nothing
    bad = stack.gateway.post("/v1/dedup", json={"phash": "zz"}, headers=headers)
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_request")


def test_the_pipeline_finds_copies_by_their_pixels_and_keeps_a_different_view(
    stack: Stack,
) -> None:
    """Through POST /v1/images as people and crawls send them: copies whose embedding the
    default model puts below ε are found, a view of the same scene that shares no pixel is not."""
    cat = photo("chelsea.png")
    original = stack.wait_done(stack.upload(encode(cat, "JPEG", quality=95)).json()["id"])
    assert original["duplicate_of"] is None
    width, height = cat.size
    copies = {
        "grayscale": encode(cat.convert("L").convert("RGB"), "JPEG", quality=85),
        "flipped crop": encode(
            cat.crop((width // 8, height // 8, width - width // 8, height - height // 8)).transpose(
                Image.Transpose.FLIP_LEFT_RIGHT
            ),
            "JPEG",
        ),
        "JPEG quality 25": encode(cat, "JPEG", quality=25),
    }
    for kind, data in copies.items():
        done = stack.wait_done(stack.upload(data).json()["id"])
        assert done["status"] == "done", (kind, done)
        assert done["duplicate_of"] == original["id"], kind
    # two halves of another photo: one scene, one light, no shared pixel
    coffee = photo("coffee.png")
    width, height = coffee.size
    left_half = stack.wait_done(
        stack.upload(encode(coffee.crop((0, 0, width // 2, height)), "JPEG")).json()["id"]
    )
    right_half = stack.wait_done(
        stack.upload(encode(coffee.crop((width // 2, 0, width, height)), "JPEG")).json()["id"]
    )
    assert left_half["duplicate_of"] is None and right_half["duplicate_of"] is None


def test_without_a_reference_set_images_are_kept_unscored(
    database_url: str, tmp_path: Path, live_embedder: str
) -> None:
    with running_stack(database_url, tmp_path, live_embedder, with_references=False) as bare:
        done = bare.wait_done(bare.upload(photo_bytes("coffee.png")).json()["id"])
        assert done["status"] == "done" and done["score"] is None
        assert "unknown_set" in done["notes"]


def test_dependencies_down_give_503_on_synchronous_calls(database_url: str, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = settings_for(database_url, tmp_path, dead, dead, dead)
    with live_server(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as client:
        engine = make_engine(database_url)
        key = create_key(engine, Role.CONTRIBUTOR)
        engine.dispose()
        image = encode(solid((1, 2, 3)), "PNG")
        for path in ("/v1/relevance", "/v1/dedup"):
            response = client.post(
                path, files={"image": ("a.png", image)}, headers={"Authorization": f"Bearer {key}"}
            )
            assert (response.status_code, response.json()["error"]["code"]) == (503, "unavailable")
            assert int(response.headers["retry-after"]) > 0


def test_copies_uploaded_together_keep_exactly_one(stack: Stack) -> None:
    """The copies are processed in one pipeline batch: each is checked against the others."""
    copies = [
        encode(photo("motorcycle_left.png"), "JPEG", quality=q) for q in (95, 90, 85, 80, 75, 70)
    ]
    with ThreadPoolExecutor(6) as threads:
        ids = [r.json()["id"] for r in threads.map(stack.upload, copies)]
    done = [stack.wait_done(image_id) for image_id in ids]
    originals = [d for d in done if d["duplicate_of"] is None]
    assert len(originals) == 1
    assert {d["duplicate_of"] for d in done if d["duplicate_of"]} == {originals[0]["id"]}
