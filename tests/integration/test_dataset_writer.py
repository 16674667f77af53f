"""The export writer on real parts: a few hundred real JPEG, PNG and WebP images written to a
folder and to an S3-protocol server (moto), then read back by Hugging Face `datasets` (Parquet,
WebDataset, and through the card) and by the `webdataset` library, as a user of the set would."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets.config  # type: ignore[import-untyped]
import numpy as np
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from datasets import Image as ImageFeature
from datasets import load_dataset
from PIL import Image

from services.common.storage import S3Settings, S3Store
from services.gateway.dataset_writer import (
    CaptionEntry,
    DatasetWriter,
    DestinationError,
    ExportRecord,
    ExportRecordError,
    ExportSummary,
)
from tests import helpers
from tests.helpers import encode, has_gps, photo

RECORDS = 300
RECORDS_PER_SHARD = 120  # 120, 120, 60: a partial last shard, and two Parquet row groups
SHARDS = 3
PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png")
FORMATS = ("JPEG", "PNG", "JPEG", "WEBP")
PLACES = ("Hue, Vietnam", "Chiang Mai, Thailand", "Yogyakarta, Indonesia")
# Two numbers with a comma or a space between, as a latitude and longitude are written.
COORDINATES = re.compile(r"-?\d{1,3}\.\d+\s*[, ]\s*-?\d{1,3}\.\d+")
COLUMNS = [
    "key", "sha256", "source", "url", "caption_en", "caption_native", "captions", "countries",
    "best_country", "country_scores", "score", "tier", "accepted", "duplicate_of", "width",
    "height", "location", "native_language", "license", "category", "review_count",
    "flag_quality", "flag_caption_fit", "flag_relevance", "flag_overall", "faces", "plates",
    "blurred", "unsafe_score",
]  # fmt: skip


def make_record(index: int, image: bytes, image_format: str, size: tuple[int, int]) -> ExportRecord:
    """Records of every shape: crowd and crawl, nulls, empty and full lists and maps."""
    sha256 = hashlib.sha256(image).hexdigest()
    crowd = index % 3 != 0
    captions = (
        CaptionEntry("en", f"A street market, photo {index}.", "openai", "qwen2-vl-7b", True),
        CaptionEntry("th", f"ตลาด {index}", "openai", None, None if index % 4 else False),
    )[: index % 3]
    countries = ("TH", "VN", "ID")[: index % 4]
    return ExportRecord(
        key=sha256,
        sha256=sha256,
        format=image_format,
        source="crowd" if crowd else "crawl:laion-2b",
        url=None if crowd else f"https://example.org/{index}.jpg",
        caption_en=f"Photo {index} of a market." if crowd and index % 2 else None,
        caption_native="ภาพตลาด" if crowd and index % 5 == 1 else None,
        captions=captions,
        countries=countries,
        best_country=countries[0] if countries else None,
        country_scores={
            c: 0.5 + rank / 100 + index / 10_000 for rank, c in enumerate(countries[:2])
        },
        score=None if index % 7 == 0 else 0.5 + (index % 60) / 1000,
        tier=None if index % 7 == 0 else ("Bronze", "Gold", "Diamond")[index % 3],
        accepted=None if index % 7 == 0 else index % 3 == 2,
        duplicate_of=f"{index - 1:064x}" if index % 11 == 0 else None,
        width=size[0],
        height=size[1],
        location=PLACES[index // 3 % 3] if crowd and index % 4 else None,
        native_language="tha" if crowd else None,
        license="CC-BY-SA-4.0" if crowd else "CC-BY-4.0",
        category="cuisine" if crowd and index % 2 else None,
        review_count=index % 4 if crowd else 0,
        flag_quality=(None, True, False)[index % 3] if crowd else None,
        flag_caption_fit=(True, None, False)[index % 3] if crowd else None,
        flag_relevance=(False, True, None)[index % 3] if crowd else None,
        flag_overall=None if index % 4 < 2 else index % 5 != 0,
        faces=index % 3 if index % 5 else None,
        plates=index % 2 if index % 5 else None,
        blurred=bool(index % 3) if index % 5 else None,
        unsafe_score=index / 100 if index % 7 else None,
    )


@pytest.fixture(scope="module")
def records() -> list[tuple[ExportRecord, bytes]]:
    """Distinct real photographs: five scenes at many sizes, as JPEG, PNG and WebP."""
    scenes = [photo(name) for name in PHOTOS]
    made = []
    for index in range(RECORDS):
        size = (48 + index % 37, 40 + index // 37)
        image_format = FORMATS[index % len(FORMATS)]
        image = encode(scenes[index % len(scenes)].resize(size), image_format)
        made.append((make_record(index, image, image_format, size), image))
    assert len({record.key for record, _ in made}) == RECORDS
    return made


def write(
    destination: str, s3: S3Settings | None, records: list[tuple[ExportRecord, bytes]]
) -> ExportSummary:
    with DatasetWriter(destination, s3, RECORDS_PER_SHARD, name="SEA test") as writer:
        for record, image in records:
            writer.add(record, image)
    return writer.close()


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, records: list[tuple[ExportRecord, bytes]]
) -> tuple[Path, ExportSummary]:
    """The records exported once to a folder, read by most tests."""
    destination = tmp_path_factory.mktemp("exports") / "sea"
    return destination, write(str(destination), None, records)


@pytest.fixture(scope="module")
def export(exported: tuple[Path, ExportSummary]) -> Path:
    return exported[0]


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-cache")


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def pixels(image: Image.Image | bytes) -> np.ndarray[Any, Any]:
    opened = Image.open(io.BytesIO(image)) if isinstance(image, bytes) else image
    return np.asarray(opened.convert("RGB"))


def card_parts(folder: Path) -> tuple[dict[str, Any], str]:
    """The card's front matter, and its body."""
    _, front_matter, body = (folder / "README.md").read_text().split("---\n", 2)
    return yaml.safe_load(front_matter), body


def run_card_example(folder: Path, hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The card's Python, as a reader would paste it, with DEST the export's folder."""
    _, body = card_parts(folder)
    found = re.search(r"```python\n(.*?)```", body, re.DOTALL)
    assert found is not None
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_cache)
    namespace: dict[str, Any] = {}
    exec(found.group(1).replace("DEST", str(folder)), namespace)
    return namespace


def test_layout_summary_and_card(
    exported: tuple[Path, ExportSummary], records: list[tuple[ExportRecord, bytes]]
) -> None:
    destination, summary = exported

    names = sorted(files_of(destination))
    assert names == [
        "README.md",
        *(f"parquet/{shard:05d}.parquet" for shard in range(SHARDS)),
        *(f"webdataset/{shard:05d}.tar" for shard in range(SHARDS)),
    ]  # and no staging folder left behind
    assert sorted(path.name for path in destination.iterdir()) == [
        "README.md",
        "parquet",
        "webdataset",
    ]
    assert (summary.shards, summary.records) == (SHARDS, RECORDS)
    assert summary.bytes == sum(len(data) for data in files_of(destination).values())
    assert summary.image_bytes == sum(len(image) for _, image in records)
    tiers = Counter(record.tier or "none" for record, _ in records)
    countries = Counter(c for record, _ in records for c in record.countries or ("none",))
    sources = Counter(record.source for record, _ in records)
    assert summary.by_tier == dict(tiers)
    assert summary.by_country == dict(countries)
    assert summary.by_source == dict(sources)
    assert summary.by_license == {"CC-BY-SA-4.0": 200, "CC-BY-4.0": 100}

    metadata, body = card_parts(destination)
    assert metadata["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "parquet/*.parquet"}]}
    ]
    assert metadata["license"] == ["cc-by-4.0", "cc-by-sa-4.0"]
    assert metadata["pretty_name"] == "SEA test"
    words = " ".join(body.split())
    assert "under CC-BY-SA-4.0" in words and "keep the licence of the crawl" in words
    for value, count in [*tiers.items(), *countries.items(), *sources.items()]:
        assert f"| {value} | {count} |" in body
    assert "{00000..00002}.tar" in body


def test_tars_hold_each_record_as_written(
    export: Path, records: list[tuple[ExportRecord, bytes]]
) -> None:
    members: list[tarfile.TarInfo] = []
    contents: dict[str, bytes] = {}
    for shard in range(SHARDS):
        with tarfile.open(export / f"webdataset/{shard:05d}.tar") as tar:
            for member in tar.getmembers():
                members.append(member)
                extracted = tar.extractfile(member)
                assert extracted is not None
                contents[member.name] = extracted.read()

    expected_names = []
    for record, image in records:
        extension = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[record.format]
        names = sorted([f"{record.key}.{extension}", f"{record.key}.json", f"{record.key}.txt"])
        expected_names += names
        assert contents[f"{record.key}.{extension}"] == image
        assert json.loads(contents[f"{record.key}.json"]) == record.columns()
        assert contents[f"{record.key}.txt"].decode() == record.text()
    assert [member.name for member in members] == expected_names  # in order, sorted per record
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "", 0o644)}
    assert list(json.loads(contents[f"{records[0][0].key}.json"])) == COLUMNS


def test_parquet_alone_is_the_dataset(
    export: Path, records: list[tuple[ExportRecord, bytes]], hf_cache: Path
) -> None:
    loaded = load_dataset(
        "parquet",
        data_files=str(export / "parquet/*.parquet"),
        split="train",
        cache_dir=str(hf_cache),
    )
    assert len(loaded) == RECORDS
    assert isinstance(loaded.features["image"], ImageFeature)
    for row, (record, image) in zip(loaded, records, strict=True):
        assert isinstance(row["image"], Image.Image)
        assert row["image"].size == (record.width, record.height)
        assert np.array_equal(pixels(row["image"]), pixels(image))
        assert {name: value for name, value in row.items() if name != "image"} == record.columns()
        scores = {pair["country"]: pair["score"] for pair in row["country_scores"]}
        assert scores == record.country_scores
    raw = loaded.cast_column("image", ImageFeature(decode=False))
    assert [row["image"]["bytes"] for row in raw] == [image for _, image in records]
    row_groups = [pq.ParquetFile(path).num_row_groups for path in sorted(export.glob("parquet/*"))]
    assert row_groups == [2, 2, 1]  # 100-image groups: the writer's memory bound


# webdataset leaves its tar files to the garbage collector (its bug, not the export's)
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_cards_loading_code_works(
    export: Path,
    records: list[tuple[ExportRecord, bytes]],
    hf_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = run_card_example(export, hf_cache, monkeypatch)

    through_card = loaded["records"]  # load_dataset(DEST): the card's default config
    assert len(through_card) == RECORDS
    assert isinstance(through_card.features["image"], ImageFeature)
    assert through_card[5]["key"] == records[5][0].key
    assert np.array_equal(pixels(through_card[5]["image"]), pixels(records[5][1]))

    samples = loaded["samples"]  # load_dataset("webdataset", data_files=..., features=...)
    assert len(samples) == RECORDS
    for sample, (record, image) in zip(samples, records, strict=True):
        extension = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[record.format]
        present = [name for name in ("jpg", "png", "webp", "gif") if sample[name] is not None]
        assert present == [extension]
        assert np.array_equal(pixels(sample[extension]), pixels(image))
        assert sample["__key__"] == record.key
        assert sample["json"] == record.columns()
        assert sample["txt"] == record.text()

    shards = list(loaded["shards"])  # webdataset.WebDataset(urls).decode("pil")
    assert len(shards) == RECORDS
    for sample, (record, image) in zip(shards, records, strict=True):
        extension = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[record.format]
        assert isinstance(sample[extension], Image.Image)
        assert np.array_equal(pixels(sample[extension]), pixels(image))
        assert sample["json"] == record.columns()
        assert sample["txt"] == record.text()


def test_no_coordinates_in_an_export(
    export: Path, records: list[tuple[ExportRecord, bytes]]
) -> None:
    """Locations are place names and images carry no EXIF GPS: the writer adds no location."""
    places = set()
    for shard in range(SHARDS):
        with tarfile.open(export / f"webdataset/{shard:05d}.tar") as tar:
            for member in tar.getmembers():
                extracted = tar.extractfile(member)
                assert extracted is not None
                data = extracted.read()
                if member.name.endswith((".json", ".txt")):
                    assert not COORDINATES.search(data.decode()), member.name
                    if member.name.endswith(".json"):
                        places.add(json.loads(data)["location"])
                else:
                    assert not has_gps(data)
        table = pq.read_table(export / f"parquet/{shard:05d}.parquet", columns=["location"])
        places |= set(table.column("location").to_pylist())
    assert places == {None, *PLACES}
    assert not COORDINATES.search((export / "README.md").read_text())


def test_s3_export_is_the_same_files(
    s3_endpoint: str,
    export: Path,
    records: list[tuple[ExportRecord, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same records to s3://bucket/prefix give byte-identical objects, one shard at a time
    on local disk."""
    settings = helpers.s3_settings(s3_endpoint)
    client = S3Store(settings).client
    bucket = f"exports-{uuid.uuid4().hex[:8]}"
    client.make_bucket(bucket)
    client.put_object(bucket, "other/keep.txt", io.BytesIO(b"x"), length=1)  # another prefix
    staging_root = tmp_path / "temp"
    staging_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging_root))

    most_staged_tars = 0
    with DatasetWriter(
        f"s3://{bucket}/releases/v1", settings, records_per_shard=RECORDS_PER_SHARD, name="SEA test"
    ) as writer:
        for record, image in records:
            writer.add(record, image)
            staged_tars = len(list(staging_root.rglob("*.tar")))
            most_staged_tars = max(most_staged_tars, staged_tars)
    summary = writer.close()

    assert most_staged_tars == 1
    assert list(staging_root.iterdir()) == []  # the staging folder is gone
    assert summary.records == RECORDS
    expected = files_of(export)
    names = sorted(
        item.object_name for item in client.list_objects(bucket, prefix="releases/", recursive=True)
    )
    assert names == [f"releases/v1/{name}" for name in sorted(expected)]
    for name, data in expected.items():
        response = client.get_object(bucket, f"releases/v1/{name}")
        try:
            assert response.read() == data, name
        finally:
            response.close()
            response.release_conn()


def test_an_export_of_nothing_is_a_card(tmp_path: Path) -> None:
    with DatasetWriter(str(tmp_path / "empty"), None) as writer:
        pass
    summary = writer.close()
    assert (summary.records, summary.shards, summary.bytes, summary.by_tier) == (
        0,
        0,
        summary.bytes,
        {},
    )
    assert list(files_of(tmp_path / "empty")) == ["README.md"]
    assert summary.bytes == (tmp_path / "empty" / "README.md").stat().st_size
    assert "0 image-text records" in card_parts(tmp_path / "empty")[1]


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[tuple[S3Settings, str]]:
    settings = helpers.s3_settings(s3_endpoint)
    bucket = f"exports-{uuid.uuid4().hex[:8]}"
    S3Store(settings).client.make_bucket(bucket)
    yield settings, bucket


def test_destinations_that_cannot_take_an_export(
    tmp_path: Path, s3_bucket: tuple[S3Settings, str]
) -> None:
    settings, bucket = s3_bucket
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    a_file = tmp_path / "file.tar"
    a_file.write_bytes(b"")
    S3Store(settings).client.put_object(bucket, "old/README.md", io.BytesIO(b"x"), length=1)
    cases = {
        str(taken): (None, "not empty"),
        str(a_file): (None, "is a file"),
        "": (None, "no destination"),
        "https://example.org/exports": (None, "local folder or s3://"),
        f"s3://{bucket}/new": (None, "no S3 server is configured"),
        "s3:///prefix": (settings, "s3://bucket/prefix"),
        f"s3://missing-{bucket}/new": (settings, f"no bucket 'missing-{bucket}'"),
        "s3://Not_A_Bucket/new": (settings, "invalid bucket name Not_A_Bucket"),
        f"s3://{bucket}/old": (settings, "objects already exist"),
        f"s3://{bucket}": (settings, "objects already exist"),
    }
    for destination, (s3, problem) in cases.items():
        with pytest.raises(DestinationError) as raised:
            DatasetWriter(destination, s3)
        assert raised.value.status_code == 422, destination
        assert raised.value.code == "bad_export_destination"
        assert problem in raised.value.message, destination
    assert files_of(taken) == {"notes.txt": b"mine"}  # untouched
    DatasetWriter(f"s3://{bucket}/old2", settings).close()  # a sibling prefix is free


def test_a_bad_record_stops_the_export_without_a_card(
    tmp_path: Path, records: list[tuple[ExportRecord, bytes]]
) -> None:
    (record, image), other = records[0], records[1][0]  # a JPEG, a PNG
    bad = {
        "sha256": (record, records[2][1], "do not have the record's sha256"),
        "format": (other, image, "the record says PNG but the bytes are JPEG"),
        "key": (ExportRecord(**{**vars(record), "key": "a.b"}), image, "no dot"),
        "duplicate": (records[2][0], records[2][1], "already written in this shard"),
    }
    for case, (bad_record, bad_image, problem) in bad.items():
        destination = tmp_path / case
        with (
            pytest.raises(ExportRecordError) as raised,
            DatasetWriter(str(destination), None, 2) as writer,
        ):
            for good, good_image in records[:3]:
                writer.add(good, good_image)
            writer.add(bad_record, bad_image)
        assert (raised.value.status_code, raised.value.code) == (422, "bad_export_record")
        assert problem in raised.value.message
        # The finished shard stays; the unfinished one, the staging folder and the card do not.
        assert sorted(files_of(destination)) == ["parquet/00000.parquet", "webdataset/00000.tar"]
        assert sorted(path.name for path in destination.iterdir()) == ["parquet", "webdataset"]


MODEL_ENGLISH = CaptionEntry("en", "Model English.", "openai", "qwen2-vl-7b", None)
MODEL_THAI = CaptionEntry("th", "ไทย", "openai", "qwen2-vl-7b", True)
MODEL_VIETNAMESE = CaptionEntry("vi", "Tiếng Việt", "openai", "qwen2-vl-7b", True)
WRONG_LANGUAGE = CaptionEntry("en", "Wrong language.", "openai", "qwen2-vl-7b", False)


@pytest.mark.parametrize(
    ("caption_en", "captions", "caption_native", "text"),
    [
        ("Human English.", (MODEL_ENGLISH,), "ภาษาไทย", "Human English."),
        (None, (MODEL_THAI, MODEL_ENGLISH), "ภาษาไทย", "Model English."),
        (" ", (WRONG_LANGUAGE,), "ภาษาไทย", "ภาษาไทย"),
        (None, (WRONG_LANGUAGE, MODEL_VIETNAMESE), None, "Tiếng Việt"),
        (None, (WRONG_LANGUAGE,), None, "Wrong language."),
        (None, (), None, ""),
    ],
)
def test_the_txt_caption_is_the_best_one_available(
    records: list[tuple[ExportRecord, bytes]],
    caption_en: str | None,
    captions: tuple[CaptionEntry, ...],
    caption_native: str | None,
    text: str,
) -> None:
    fields = {**vars(records[0][0]), "caption_en": caption_en, "captions": captions}
    assert ExportRecord(**(fields | {"caption_native": caption_native})).text() == text


def test_a_later_try_writes_over_an_unfinished_try_and_nothing_else(
    tmp_path: Path, records: list[tuple[ExportRecord, bytes]], export: Path
) -> None:
    """A try that died left its finished shards and no card: the export's next try (`again`)
    writes the same files over them; a folder holding anything else is still refused."""
    destination = tmp_path / "retried"
    with (
        pytest.raises(RuntimeError),
        DatasetWriter(str(destination), None, RECORDS_PER_SHARD) as writer,
    ):
        for record, image in records[: RECORDS_PER_SHARD + 1]:
            writer.add(record, image)
        raise RuntimeError("the worker died")
    assert sorted(files_of(destination)) == ["parquet/00000.parquet", "webdataset/00000.tar"]
    with pytest.raises(DestinationError):  # a first try never writes over anything
        DatasetWriter(str(destination), None, RECORDS_PER_SHARD)
    summary = write_again(str(destination), records)
    assert summary.records == len(records)
    assert files_of(destination) == files_of(export)  # the same files as a try that never died
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DestinationError):
        DatasetWriter(str(tmp_path / "other"), None, RECORDS_PER_SHARD, again=True)


def write_again(destination: str, records: list[tuple[ExportRecord, bytes]]) -> ExportSummary:
    with DatasetWriter(destination, None, RECORDS_PER_SHARD, "SEA test", again=True) as writer:
        for record, image in records:
            writer.add(record, image)
    return writer.close()
