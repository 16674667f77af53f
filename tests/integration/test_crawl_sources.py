"""The crawl source reader on real files: webdataset tars, `files` folders and plain folders of
images, written as img2dataset writes them (and by img2dataset itself), read from a local folder
and from an S3-protocol server (moto) alike."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from PIL import Image

from services.common.errors import UnavailableError
from services.common.storage import S3Settings, S3Store
from services.gateway.crawl_sources import (
    REASON_BAD_METADATA,
    REASON_CHANGED,
    REASON_GONE,
    REASON_NO_IMAGE,
    REASON_NOT_A_FILE,
    REASON_NOT_A_TAR,
    REASON_TAR_CUT,
    REASON_TOO_LARGE,
    CrawlSample,
    SampleFailure,
    ShardKind,
    ShardRef,
    SourceError,
    iter_samples,
    list_shards,
)
from tests.helpers import encode, free_port, noise_image, photo_bytes, quiet_files_handler, serving

CAT = photo_bytes("chelsea.png")  # JPEG
COFFEE = photo_bytes("coffee.png", "PNG")
ROCKET = photo_bytes("rocket.jpg")
NOT_AN_IMAGE = b"this text was saved as .jpg"
NOT_FOUND = "HTTP Error 404: File not found"


def size_of(image: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(image)) as opened:
        return opened.size


def img2dataset_json(key: str, url: str, caption: str, image: bytes | None) -> bytes:
    """The .json img2dataset writes beside a sample (its fields, in its order)."""
    width, height = size_of(image) if image is not None else (None, None)
    meta = {
        "caption": caption,
        "url": url,
        "key": key,
        "status": "success" if image is not None else "failed_to_download",
        "error_message": None if image is not None else NOT_FOUND,
        "width": width,
        "height": height,
        "original_width": width,
        "original_height": height,
        "exif": "{}" if image is not None else None,
        "sha256": hashlib.sha256(image).hexdigest() if image is not None else None,
    }
    return json.dumps(meta, indent=4).encode()


def url_of(key: str) -> str:
    return f"https://example.org/photos/{key}.jpg"


def sample_members(key: str, caption: str, image: bytes, extension: str = "jpg") -> list[Member]:
    return [
        (f"{key}.{extension}", image),
        (f"{key}.json", img2dataset_json(key, url_of(key), caption, image)),
        (f"{key}.txt", caption.encode()),
    ]


Member = tuple[str, bytes]

# Shard 00000, member by member: what img2dataset writes, and what it might (a json before its
# image, a failed download's json alone, a member of no known kind, no .txt, bytes that are not
# an image under a .jpg name: the reader does not decode, the caller validates).
SHARD_0: list[Member] = [
    *sample_members("000000000", "a cat on a mat", CAT),
    ("000000001.json", img2dataset_json("000000001", url_of("000000001"), "coffee", COFFEE)),
    ("000000001.png", COFFEE),
    ("000000001.txt", b"a cup of coffee"),
    ("000000002.json", img2dataset_json("000000002", url_of("000000002"), "gone", None)),
    ("000000003.cls", b"7"),
    ("000000003.json", img2dataset_json("000000003", url_of("000000003"), "label", ROCKET)),
    ("000000004.jpg", NOT_AN_IMAGE),
    ("000000004.json", img2dataset_json("000000004", url_of("000000004"), "text", ROCKET)),
    ("000000005.jpg", ROCKET),
    ("000000005.json", img2dataset_json("000000005", url_of("000000005"), "a rocket", ROCKET)),
]
SHARD_1: list[Member] = sample_members("000010000", "a rocket again", ROCKET)

Summary = tuple[object, ...]


def summary(item: CrawlSample | SampleFailure) -> Summary:
    if isinstance(item, SampleFailure):
        return ("failure", item.key, item.member, item.reason)
    width, height = item.original_width, item.original_height
    return ("sample", item.key, item.member, item.url, item.caption, width, height)


def sample(key: str, member: str, caption: str, image: bytes) -> Summary:
    return ("sample", key, member, url_of(key), caption, *size_of(image))


SHARD_0_READ: list[Summary] = [
    sample("000000000", "000000000.jpg", "a cat on a mat", CAT),
    sample("000000001", "000000001.png", "a cup of coffee", COFFEE),
    ("failure", "000000002", "000000002.json", NOT_FOUND),
    ("failure", "000000003", "000000003.json", REASON_NO_IMAGE),
    sample("000000004", "000000004.jpg", "text", ROCKET),
    sample("000000005", "000000005.jpg", "a rocket", ROCKET),  # no .txt: the json's caption
]


def write_tar(path: Path, members: list[Member]) -> None:
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o444
            archive.addfile(info, io.BytesIO(data))


def write_shard_sidecars(folder: Path, shard: str, count: int) -> None:
    """The .parquet and _stats.json img2dataset writes beside each shard (never read here)."""
    (folder / f"{shard}.parquet").write_bytes(b"PAR1" + bytes(64) + b"PAR1")
    stats = {"count": count, "successes": count - 1, "failed_to_download": 1}
    (folder / f"{shard}_stats.json").write_text(json.dumps(stats, indent=4))


def webdataset_output(folder: Path) -> Path:
    folder.mkdir()
    for shard, members in (("00000", SHARD_0), ("00001", SHARD_1)):
        write_tar(folder / f"{shard}.tar", members)
        write_shard_sidecars(folder, shard, len(members))
    return folder


def files_output(folder: Path) -> Path:
    folder.mkdir()
    for shard, members in (("00000", SHARD_0), ("00001", SHARD_1)):
        (folder / shard).mkdir()
        for name, data in members:
            (folder / shard / name).write_bytes(data)
        write_shard_sidecars(folder, shard, len(members))
    return folder


@dataclass
class Place:
    """Where a test's crawl output is read from: its local folder, or a copy on S3 (moto)."""

    s3: S3Settings | None

    def publish(self, folder: Path) -> str:
        """`folder` as a source; on S3, every file uploaded (again) under a prefix of its own."""
        if self.s3 is None:
            return str(folder)
        client = S3Store(self.s3).client
        prefix = f"crawls/{folder.name}"
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            client.fput_object(self.s3.bucket, f"{prefix}/{path.relative_to(folder)}", str(path))
        return f"s3://{self.s3.bucket}/{prefix}"

    def file_fingerprint(self, folder: Path, name: str) -> str:
        """What a single file's fingerprint must be: its ETag on S3, else (name, size, mtime)."""
        if self.s3 is None:
            status = (folder / name).stat()
            line = f"{name}\0{status.st_size}\0{status.st_mtime_ns}\n"
            return hashlib.sha256(line.encode()).hexdigest()
        etag = S3Store(self.s3).client.stat_object(self.s3.bucket, f"crawls/{folder.name}/{name}")
        return str(etag.etag).strip('"')


def moto_settings(endpoint: str, bucket: str | None = None, **fields: object) -> S3Settings:
    return S3Settings.model_validate(
        {
            "endpoint": endpoint,
            "access_key": "test",
            "secret_key": "test",
            "bucket": bucket or f"crawl-{uuid.uuid4().hex[:8]}",
            **fields,
        }
    )


@pytest.fixture(params=["folder", "s3"])
def place(request: pytest.FixtureRequest) -> Place:
    if request.param == "folder":
        return Place(None)
    settings = moto_settings(request.getfixturevalue("s3_endpoint"))
    S3Store(settings).client.make_bucket(settings.bucket)
    return Place(settings)


def read(shard: ShardRef, place: Place, **options: int) -> list[CrawlSample | SampleFailure]:
    return list(iter_samples(shard, place.s3, **options))


def test_webdataset_shards_are_the_tars_not_their_parquet_or_stats(
    place: Place, tmp_path: Path
) -> None:
    folder = webdataset_output(tmp_path / "wds")
    source = place.publish(folder)

    shards = list_shards(source, place.s3)

    assert [(s.source, s.name, s.kind) for s in shards] == [
        (source, "00000.tar", ShardKind.WEBDATASET),
        (source, "00001.tar", ShardKind.WEBDATASET),
    ]
    assert [s.size_bytes for s in shards] == [(folder / s.name).stat().st_size for s in shards]
    assert [s.fingerprint for s in shards] == [
        place.file_fingerprint(folder, s.name) for s in shards
    ]


def test_webdataset_samples_with_img2dataset_fields_and_failures(
    place: Place, tmp_path: Path
) -> None:
    shards = list_shards(place.publish(webdataset_output(tmp_path / "wds")), place.s3)

    first, second = (read(shard, place) for shard in shards)

    assert [summary(item) for item in first] == SHARD_0_READ
    samples = {item.key: item for item in first if isinstance(item, CrawlSample)}
    assert samples["000000000"].data == CAT
    assert samples["000000001"].data == COFFEE
    assert samples["000000004"].data == NOT_AN_IMAGE
    assert samples["000000005"].data == ROCKET
    assert samples["000000000"].meta == json.loads(SHARD_0[1][1])
    assert samples["000000000"].meta["sha256"] == hashlib.sha256(CAT).hexdigest()
    assert [summary(item) for item in second] == [
        sample("000010000", "000010000.jpg", "a rocket again", ROCKET)
    ]


def test_files_output_reads_as_the_tars_do(place: Place, tmp_path: Path) -> None:
    folder = files_output(tmp_path / "files")

    shards = list_shards(place.publish(folder), place.s3)

    assert [(s.name, s.kind) for s in shards] == [("00000", ShardKind.FILES), ("00001", "files")]
    assert shards[0].size_bytes == sum(len(data) for _, data in SHARD_0)
    first, second = (read(shard, place) for shard in shards)
    # in a folder the members come in name order: .json before .png is the same sample
    assert [summary(item) for item in first] == [
        (kind, key, f"00000/{member}", *rest) for kind, key, member, *rest in SHARD_0_READ
    ]
    assert [item.data for item in first if isinstance(item, CrawlSample)] == [
        CAT,
        COFFEE,
        NOT_AN_IMAGE,
        ROCKET,
    ]
    assert [(item.key, item.caption) for item in second if isinstance(item, CrawlSample)] == [
        ("000010000", "a rocket again")
    ]


def images_folder(folder: Path) -> dict[str, bytes]:
    """A plain folder of images (nested, with files that are not images, and hidden ones)."""
    images = {
        "b/deep/one.jpg": CAT,
        "a.jpg": ROCKET,
        "a/x.png": COFFEE,
        "c.webp": photo_bytes("chelsea.png", "WEBP"),
        "z.JPEG": CAT,
    }
    others = {"notes.txt": b"not an image", ".hidden.jpg": CAT, ".cache/a.jpg": CAT}
    for name, data in {**images, **others}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return images


def test_a_plain_folder_is_cut_into_pseudo_shards_in_path_order(
    place: Place, tmp_path: Path
) -> None:
    images = images_folder(tmp_path / "photos")

    shards = list_shards(place.publish(tmp_path / "photos"), place.s3, folder_shard_size=2)

    assert [(s.name, s.kind, s.resume_after) for s in shards] == [
        ("images-00000", ShardKind.FOLDER, None),
        ("images-00001", ShardKind.FOLDER, "a/x.png"),
        ("images-00002", ShardKind.FOLDER, "c.webp"),
    ]
    assert [s.size_bytes for s in shards] == [
        len(ROCKET) + len(COFFEE),
        len(CAT) + len(images["c.webp"]),
        len(CAT),
    ]
    read_back = [[summary(item) for item in read(s, place, folder_shard_size=2)] for s in shards]
    assert read_back == [
        [("sample", path, path, None, None, None, None) for path in paths]
        for paths in (["a.jpg", "a/x.png"], ["b/deep/one.jpg", "c.webp"], ["z.JPEG"])
    ]
    second = read(shards[1], place, folder_shard_size=2)
    assert [item.data for item in second if isinstance(item, CrawlSample)] == [
        CAT,
        images["c.webp"],
    ]
    # a shard kept without its resume point (as the gateway's table keeps it) reads the same
    forgotten = replace(shards[2], resume_after=None)
    assert [summary(item) for item in read(forgotten, place, folder_shard_size=2)] == read_back[2]


def test_a_member_over_the_limit_is_refused_and_the_shard_goes_on(
    place: Place, tmp_path: Path
) -> None:
    shards = list_shards(place.publish(webdataset_output(tmp_path / "wds")), place.s3)
    limit = len(COFFEE) - 1
    assert max(len(CAT), len(ROCKET)) < limit

    items = read(shards[0], place, max_member_bytes=limit)

    too_large = ("failure", "000000001", "000000001.png", REASON_TOO_LARGE.format(limit=limit))
    assert [summary(item) for item in items] == [SHARD_0_READ[0], too_large, *SHARD_0_READ[2:]]
    assert str(limit) in too_large[3]


def test_a_folder_image_over_the_limit_is_refused(place: Place, tmp_path: Path) -> None:
    images_folder(tmp_path / "photos")
    shard = list_shards(place.publish(tmp_path / "photos"), place.s3, folder_shard_size=2)[0]
    limit = len(COFFEE) - 1

    items = read(shard, place, folder_shard_size=2, max_member_bytes=limit)

    assert [summary(item) for item in items] == [
        ("sample", "a.jpg", "a.jpg", None, None, None, None),
        ("failure", "a/x.png", "a/x.png", REASON_TOO_LARGE.format(limit=limit)),
    ]


def test_a_sample_without_an_image_or_readable_json_says_why(place: Place, tmp_path: Path) -> None:
    folder = tmp_path / "wds"
    folder.mkdir()
    resize_failed = {"key": "000000001", "status": "failed_to_resize", "error_message": None}
    write_tar(
        folder / "00000.tar",
        [
            ("000000000.json", img2dataset_json("000000000", url_of("000000000"), "gone", None)),
            ("000000001.json", json.dumps(resize_failed).encode()),
            ("000000002.jpg", CAT),
            ("000000002.json", b'{"url": "https://example.org/cut'),
            ("000000003.jpg", CAT),
            ("000000003.json", b'["a list"]'),
            ("000000004.jpg", ROCKET),
        ],
    )
    shard = list_shards(place.publish(folder), place.s3)[0]

    assert [summary(item) for item in read(shard, place)] == [
        ("failure", "000000000", "000000000.json", NOT_FOUND),
        ("failure", "000000001", "000000001.json", "img2dataset status failed_to_resize"),
        ("failure", "000000002", "000000002.json", REASON_BAD_METADATA),
        ("failure", "000000003", "000000003.json", REASON_BAD_METADATA),
        ("sample", "000000004", "000000004.jpg", None, None, None, None),  # no .json at all
    ]


def test_a_shard_gone_since_it_was_listed_is_one_failure(place: Place, tmp_path: Path) -> None:
    folder = webdataset_output(tmp_path / "wds")
    shard = list_shards(place.publish(folder), place.s3)[1]
    if place.s3 is None:
        (folder / "00001.tar").unlink()
    else:
        S3Store(place.s3).client.remove_object(place.s3.bucket, "crawls/wds/00001.tar")

    assert [summary(item) for item in read(shard, place)] == [("failure", None, None, REASON_GONE)]


def member_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """Where each member's header and data start in a tar."""
    with tarfile.open(path) as archive:
        return {info.name: (info.offset, info.offset_data) for info in archive.getmembers()}


def cut(path: Path, at: int) -> None:
    path.write_bytes(path.read_bytes()[:at])


def damage_header(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at : at + tarfile.BLOCKSIZE] = b"\xff" * tarfile.BLOCKSIZE
    path.write_bytes(bytes(data))


Damage = Callable[[Path, dict[str, tuple[int, int]]], None]
INTACT_BEFORE_SAMPLE_2 = SHARD_0_READ[:2]
CUT_BETWEEN_MEMBERS = ("failure", None, None, REASON_TAR_CUT)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        pytest.param(
            lambda path, at: cut(path, at["000000001.png"][1] + 1000),
            [SHARD_0_READ[0], ("failure", "000000001", "000000001.png", REASON_TAR_CUT)],
            id="cut-inside-an-image",
        ),
        pytest.param(
            lambda path, at: cut(path, at["000000003.cls"][1] + 1),
            [*SHARD_0_READ[:3], ("failure", "000000003", "000000003.cls", REASON_TAR_CUT)],
            id="cut-inside-a-member-passed-over",
        ),
        pytest.param(
            lambda path, at: cut(path, at["000000002.json"][0] + 100),
            [*INTACT_BEFORE_SAMPLE_2, CUT_BETWEEN_MEMBERS],
            id="cut-inside-a-header",
        ),
        pytest.param(
            lambda path, at: cut(path, at["000000002.json"][0]),
            [*INTACT_BEFORE_SAMPLE_2, CUT_BETWEEN_MEMBERS],
            id="cut-between-members",
        ),
        pytest.param(
            lambda path, at: damage_header(path, at["000000002.json"][0]),
            [*INTACT_BEFORE_SAMPLE_2, CUT_BETWEEN_MEMBERS],
            id="damaged-header",
        ),
        pytest.param(
            lambda path, at: cut(path, at["000000005.json"][1] + tarfile.BLOCKSIZE),
            [*SHARD_0_READ, CUT_BETWEEN_MEMBERS],
            id="end-of-archive-blocks-lost",
        ),
    ],
)
def test_a_cut_or_damaged_tar_ends_its_shard_with_a_failure(
    damage: Damage, expected: list[Summary], place: Place, tmp_path: Path
) -> None:
    folder = webdataset_output(tmp_path / "wds")
    tar = folder / "00000.tar"
    damage(tar, member_offsets(tar))

    shard = list_shards(place.publish(folder), place.s3)[0]
    items = read(shard, place)

    assert [summary(item) for item in items] == expected


def test_a_shard_is_read_as_a_stream_in_little_memory(tmp_path: Path) -> None:
    """Neither the shard's bytes nor its members' headers pile up (tarfile's stream mode keeps
    every header it read unless told otherwise: 3 MB here, for 6,000 members)."""
    folder = tmp_path / "wds"
    folder.mkdir()
    image = encode(noise_image((32, 32)))
    write_tar(
        folder / "00000.tar",
        [
            member
            for number in range(3000)
            for member in sample_members(f"{number:09d}", f"photo {number}", image)[:2]
        ],
    )
    shard = list_shards(str(folder), None)[0]
    assert shard.size_bytes > 6_000_000

    tracemalloc.start()
    try:
        keys = [item.key for item in iter_samples(shard, None) if isinstance(item, CrawlSample)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert keys == [f"{number:09d}" for number in range(3000)]
    assert peak < 1_000_000


@pytest.mark.parametrize("content", [b"", b"<html>not found</html>" * 40], ids=["empty", "html"])
def test_a_file_that_is_no_tar_is_one_failure(content: bytes, place: Place, tmp_path: Path) -> None:
    folder = tmp_path / "wds"
    folder.mkdir()
    (folder / "00000.tar").write_bytes(content)
    shard = list_shards(place.publish(folder), place.s3)[0]

    assert [summary(item) for item in read(shard, place)] == [
        ("failure", None, None, REASON_NOT_A_TAR)
    ]


def test_tar_member_names_are_never_used_as_paths(tmp_path: Path) -> None:
    folder = tmp_path / "crawl" / "wds"
    folder.mkdir(parents=True)
    with tarfile.open(folder / "00000.tar", "w") as archive:
        for name, data in [
            ("../../escaped.jpg", CAT),
            ("../../escaped.json", img2dataset_json("x", url_of("x"), "x", CAT)),
            ("/tmp/absolute.jpg", ROCKET),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    items = list(iter_samples(list_shards(str(folder), None)[0], None))

    assert [summary(item) for item in items] == [
        ("sample", "../../escaped", "../../escaped.jpg", url_of("x"), "x", *size_of(CAT)),
        ("sample", "/tmp/absolute", "/tmp/absolute.jpg", None, None, None, None),
        ("failure", "link", "link.jpg", REASON_NOT_A_FILE),
    ]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_changed_shard_changes_its_fingerprint_and_a_stale_one_is_not_read(
    place: Place, tmp_path: Path
) -> None:
    folder = webdataset_output(tmp_path / "wds")
    source = place.publish(folder)
    before = list_shards(source, place.s3)
    assert list_shards(source, place.s3) == before

    write_tar(folder / "00001.tar", [*SHARD_1, *sample_members("000010001", "more", CAT)])
    after = list_shards(place.publish(folder), place.s3)

    assert after[0] == before[0]
    assert after[1].fingerprint != before[1].fingerprint
    assert [summary(item) for item in read(before[1], place)] == [
        ("failure", None, None, REASON_CHANGED)
    ]
    assert [item.key for item in read(after[1], place)] == ["000010000", "000010001"]


def test_a_folder_image_added_changes_the_pseudo_shards_it_shifts(
    place: Place, tmp_path: Path
) -> None:
    images_folder(tmp_path / "photos")
    before = list_shards(place.publish(tmp_path / "photos"), place.s3, folder_shard_size=2)

    (tmp_path / "photos" / "b" / "added.jpg").write_bytes(ROCKET)
    after = list_shards(place.publish(tmp_path / "photos"), place.s3, folder_shard_size=2)

    assert after[0] == before[0]
    changed = [s.fingerprint != b.fingerprint for s, b in zip(after, before, strict=True)]
    assert changed == [False, True, True]
    assert [summary(item) for item in read(before[1], place, folder_shard_size=2)] == [
        ("failure", None, None, REASON_CHANGED)
    ]


def test_a_folder_of_img2dataset_parquet_output_is_refused_with_the_reason(
    place: Place, tmp_path: Path
) -> None:
    folder = tmp_path / "parquet"
    folder.mkdir()
    write_shard_sidecars(folder, "00000", 3)

    with pytest.raises(SourceError) as raised:
        list_shards(place.publish(folder), place.s3)

    assert (raised.value.status_code, raised.value.code) == (422, "bad_crawl_source")
    assert "holds 2 files but no img2dataset shards" in raised.value.message
    assert "parquet output, which is not read here" in raised.value.message
    assert "--output_format webdataset or files" in raised.value.message


def source_error(source: str, s3: S3Settings | None = None) -> tuple[int, str, str]:
    with pytest.raises(SourceError) as raised:
        list_shards(source, s3)
    return raised.value.status_code, raised.value.code, raised.value.message


def test_local_sources_that_cannot_be_read(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert source_error(str(missing)) == (
        404,
        "crawl_source_not_found",
        f"{missing} does not exist",
    )
    (tmp_path / "empty").mkdir()
    assert source_error(str(tmp_path / "empty")) == (
        422,
        "bad_crawl_source",
        f"the folder {tmp_path / 'empty'} is empty",
    )
    (tmp_path / "a.tar").write_bytes(b"")
    assert source_error(str(tmp_path / "a.tar"))[:2] == (422, "bad_crawl_source")
    assert "is not a folder" in source_error(str(tmp_path / "a.tar"))[2]
    status, _, message = source_error("gs://bucket/crawl")
    assert (status, message) == (
        422,
        "gs://bucket/crawl is neither a local folder nor s3://bucket/prefix",
    )


def test_s3_sources_that_cannot_be_read(s3_endpoint: str) -> None:
    settings = moto_settings(s3_endpoint)
    status, code, message = source_error("s3://crawls/run", None)
    assert (status, code) == (422, "bad_crawl_source")
    assert "no S3-protocol server is configured" in message
    with pytest.raises(SourceError) as raised:
        iter_samples(ShardRef("s3://crawls/run", "00000.tar", ShardKind.WEBDATASET, 1, "x"), None)
    assert raised.value.status_code == 422

    assert source_error("s3://missing-bucket/run", settings) == (
        404,
        "crawl_source_not_found",
        f"there is no bucket missing-bucket on the S3 server at {s3_endpoint}",
    )
    S3Store(settings).client.make_bucket(settings.bucket)
    assert source_error(f"s3://{settings.bucket}/no/such/prefix", settings) == (
        404,
        "crawl_source_not_found",
        f"nothing is stored under s3://{settings.bucket}/no/such/prefix/ on the S3 server at "
        f"{s3_endpoint}",
    )


def test_an_unreachable_s3_server_is_unavailable_not_a_bad_source() -> None:
    settings = moto_settings(f"127.0.0.1:{free_port()}", "crawls", timeout_seconds=1)
    shard = ShardRef("s3://crawls/run", "00000.tar", ShardKind.WEBDATASET, 1, "etag")

    with pytest.raises(UnavailableError):
        list_shards("s3://crawls/run", settings)
    samples = iter_samples(shard, settings)
    with pytest.raises(UnavailableError):
        next(samples)


@contextmanager
def s3_dropping_mid_object(body: bytes, sent: int, etag: str) -> Iterator[str]:
    """A server answering every GET with `body`'s length and ETag, then closing the connection
    after `sent` bytes (as a crashed or restarted S3 server does)."""

    class Dropping(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", f'"{etag}"')
            self.end_headers()
            self.wfile.write(body[:sent])

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    with serving(Dropping) as port:
        yield f"127.0.0.1:{port}"


def test_s3_dropping_mid_shard_is_unavailable_not_a_cut_tar(tmp_path: Path) -> None:
    write_tar(tmp_path / "00000.tar", SHARD_0)
    body = (tmp_path / "00000.tar").read_bytes()
    # well inside the PNG: tarfile reads ahead by records of 10 KiB
    middle_of_coffee = member_offsets(tmp_path / "00000.tar")["000000001.png"][1] + len(COFFEE) // 2
    shard = ShardRef("s3://crawls/run", "00000.tar", ShardKind.WEBDATASET, len(body), "e1")

    with s3_dropping_mid_object(body, middle_of_coffee, "e1") as endpoint:
        settings = moto_settings(endpoint, "crawls", region="us-east-1", timeout_seconds=2)
        samples = iter_samples(shard, settings)
        assert summary(next(samples)) == SHARD_0_READ[0]
        with pytest.raises(UnavailableError):
            next(samples)


DOWNLOAD_BOTH_FORMATS = """
import sys
from img2dataset import download

urls, out = sys.argv[1], sys.argv[2]
for output_format in ("webdataset", "files"):
    download(
        url_list=urls, input_format="csv", url_col="url", caption_col="caption",
        output_format=output_format, output_folder=f"{out}/{output_format}",
        processes_count=1, thread_count=1, number_sample_per_shard=3, timeout=5,
        resize_mode="no", skip_reencode=True,
    )
"""


TRIO = ("jpg", "json", "txt")  # what img2dataset writes of a sample, in this order


def relative_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_img2dataset_itself_writes_what_this_reader_reads(tmp_path: Path) -> None:
    if importlib.util.find_spec("img2dataset") is None:
        pytest.fail(
            "img2dataset is not installed: this test runs it to check the layout the crawl "
            "reader expects (it is a dev dependency: pip install img2dataset)"
        )
    www = tmp_path / "www"
    www.mkdir()
    served = {"cat.jpg": CAT, "coffee.png": COFFEE, "text.jpg": NOT_AN_IMAGE, "rocket.jpg": ROCKET}
    for name, data in served.items():
        (www / name).write_bytes(data)
    rows = [
        ("cat.jpg", "a cat"),
        ("coffee.png", "a cup of coffee"),
        ("missing.jpg", "gone"),
        ("text.jpg", "text"),
        ("rocket.jpg", "a rocket"),
    ]
    with serving(quiet_files_handler(www)) as port:
        urls = tmp_path / "urls.csv"
        lines = [f"http://127.0.0.1:{port}/{name},{caption}" for name, caption in rows]
        urls.write_text("\n".join(["url,caption", *lines]) + "\n")
        environment = {
            **os.environ,
            "NO_ALBUMENTATIONS_UPDATE": "1",  # no update check over the network on import
            "no_proxy": "127.0.0.1",
            "NO_PROXY": "127.0.0.1",
        }
        finished = subprocess.run(
            [sys.executable, "-c", DOWNLOAD_BOTH_FORMATS, str(urls), str(tmp_path / "out")],
            env=environment,
            capture_output=True,
            timeout=120,
        )
    assert finished.returncode == 0, finished.stderr.decode(errors="replace")[-3000:]

    # 5 URLs, 3 per shard: shard 00000 holds rows 0-2, shard 00001 rows 3-4 (keys 0000xy with
    # x the shard, y the row in it); failed rows (404, not an image) are only in the .parquet
    webdataset = tmp_path / "out" / "webdataset"
    files = tmp_path / "out" / "files"
    sidecars = ["00000.parquet", "00000_stats.json", "00001.parquet", "00001_stats.json"]
    assert relative_files(webdataset) == sorted([*sidecars, "00000.tar", "00001.tar"])
    with tarfile.open(webdataset / "00000.tar") as archive:
        assert archive.getnames() == [f"00000{row}.{ext}" for row in "01" for ext in TRIO]
    with tarfile.open(webdataset / "00001.tar") as archive:
        assert archive.getnames() == [f"000011.{ext}" for ext in TRIO]
    written = [f"00000/00000{row}.{ext}" for row in "01" for ext in TRIO]
    written += [f"00001/000011.{ext}" for ext in TRIO]
    assert relative_files(files) == sorted([*sidecars, "00000", "00001", *written])
    stats = json.loads((webdataset / "00000_stats.json").read_text())
    assert stats["status_dict"] == {"success": 2, NOT_FOUND: 1}

    for output, kind, names in [
        (webdataset, ShardKind.WEBDATASET, ["00000.tar", "00001.tar"]),
        (files, ShardKind.FILES, ["00000", "00001"]),
    ]:
        shards = list_shards(str(output), None)
        assert [(s.name, s.kind) for s in shards] == [(name, kind) for name in names]
        items = [item for shard in shards for item in iter_samples(shard, None)]
        assert all(isinstance(item, CrawlSample) for item in items)
        read_back = [
            (item.key, item.url, item.caption, item.original_width, item.original_height)
            for item in items
            if isinstance(item, CrawlSample)
        ]
        assert read_back == [
            (key, f"http://127.0.0.1:{port}/{name}", caption, *size_of(served[name]))
            for key, (name, caption) in zip(
                ["000000", "000001", "000011"], [rows[0], rows[1], rows[4]], strict=True
            )
        ]
        by_key = {item.key: item for item in items if isinstance(item, CrawlSample)}
        assert by_key["000000"].data == CAT  # a JPEG is kept as sent (skip_reencode)
        assert by_key["000011"].data == ROCKET
        assert size_of(by_key["000001"].data) == size_of(COFFEE)  # the PNG re-encoded as .jpg
        assert by_key["000000"].meta["status"] == "success"
        assert by_key["000000"].meta["sha256"] == hashlib.sha256(CAT).hexdigest()
