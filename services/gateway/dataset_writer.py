"""Publishing the curated set as a dataset (issue 11): WebDataset tars, Parquet and a card.

An export is a folder, or a prefix of an S3 bucket, laid out as a Hugging Face dataset repository:

    README.md                 card: YAML (configs, features, licence) + counts
    parquet/00000.parquet     one per shard: every column and the image (bytes + path)
    webdataset/00000.tar      one per shard: {key}.{jpg|png|webp|gif}, {key}.json, {key}.txt

so `datasets.load_dataset(DEST)` gives the Parquet with PIL images, `load_dataset(DEST,
"webdataset")` the tars, and `webdataset.WebDataset(".../webdataset/{00000..N}.tar")` the tars
without Hugging Face. Records stream through: one shard's files are open at a time, and at most
one Parquet row group of images is held in memory.

Locations are place names ("Hue, Vietnam") and images are written as stored, which the gateway
already stripped of EXIF location; the writer parses neither. A caller that puts coordinates in
`location` publishes them: that is the caller's bug, not something this module detects.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from minio.helpers import check_bucket_name

from services.common.errors import ServiceError
from services.common.images import sniff_format
from services.common.schemas import Tier
from services.common.storage import S3Settings, S3Store

WEBDATASET_FOLDER = "webdataset"
PARQUET_FOLDER = "parquet"
CARD_NAME = "README.md"
CROWD_LICENSE = "CC-BY-SA-4.0"
# The extension of an image member, by the Pillow format the record names.
IMAGE_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}
FORMAT_ALIASES = {"JPG": "JPEG"}
# WebDataset groups a sample's files by the name before the first dot: no dot, no slash.
RECORD_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# Tars are reproducible: the same records give the same bytes (no clock, no owner).
TAR_MTIME = 0
# A Parquet row group holds this many images at most (the Hub's viewer reads ~100-row groups),
# or this many image bytes, whichever comes first: the writer's memory bound.
ROW_GROUP_ROWS = 100
ROW_GROUP_BYTES = 64 * 1024 * 1024
# Marked in Parquet's schema metadata so `datasets` reads `image` as Image (PIL), not a struct.
HF_IMAGE_FEATURE = {"info": {"features": {"image": {"_type": "Image"}}}}
NO_VALUE = "none"

CAPTION_TYPE = pa.struct(
    [
        ("language", pa.string()),
        ("text", pa.string()),
        ("backend", pa.string()),
        ("model", pa.string()),
        ("language_ok", pa.bool_()),
    ]
)
# Parquet maps do not load in `datasets` (no feature type): country -> score is a list of pairs.
COUNTRY_SCORE_TYPE = pa.struct([("country", pa.string()), ("score", pa.float64())])
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
# The columns of each record's .json and of the Parquet (which adds `image` after `key`).
RECORD_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("sha256", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("caption_en", pa.string()),
        ("caption_native", pa.string()),
        ("captions", pa.list_(CAPTION_TYPE)),
        ("countries", pa.list_(pa.string())),
        ("best_country", pa.string()),
        ("country_scores", pa.list_(COUNTRY_SCORE_TYPE)),
        ("score", pa.float64()),
        ("tier", pa.string()),
        ("accepted", pa.bool_()),
        ("duplicate_of", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("location", pa.string()),
        ("native_language", pa.string()),
        ("license", pa.string()),
        ("category", pa.string()),
        ("review_count", pa.int64()),
        ("flag_quality", pa.bool_()),
        ("flag_caption_fit", pa.bool_()),
        ("flag_relevance", pa.bool_()),
        ("flag_overall", pa.bool_()),
        ("faces", pa.int64()),
        ("plates", pa.int64()),
        ("blurred", pa.bool_()),
        ("unsafe_score", pa.float64()),
    ]
)
PARQUET_SCHEMA = RECORD_SCHEMA.insert(1, pa.field("image", IMAGE_TYPE)).with_metadata(
    {"huggingface": json.dumps(HF_IMAGE_FEATURE)}
)
# Image bytes are already compressed; the other columns are small text.
PARQUET_COMPRESSION = dict.fromkeys(RECORD_SCHEMA.names, "zstd") | {
    "image.bytes": "none",
    "image.path": "zstd",
}


class DestinationError(ServiceError):
    """An export destination that cannot take an export: said before any image is read."""

    def __init__(self, destination: str, problem: str) -> None:
        super().__init__(
            422,
            "bad_export_destination",
            f"cannot export to {destination!r}: {problem}",
            field="destination",
        )


class ExportRecordError(ServiceError):
    """A record the dataset cannot hold as given (a caller's bug: it comes from our tables)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(422, "bad_export_record", f"record {key!r}: {problem}", field="records")


@dataclass(frozen=True)
class CaptionEntry:
    language: str
    text: str
    backend: str | None
    model: str | None
    language_ok: bool | None


@dataclass(frozen=True)
class ExportRecord:
    key: str
    sha256: str
    format: str
    source: str
    url: str | None
    caption_en: str | None
    caption_native: str | None
    captions: tuple[CaptionEntry, ...]
    countries: tuple[str, ...]
    best_country: str | None
    country_scores: dict[str, float]
    score: float | None
    tier: str | None
    accepted: bool | None
    duplicate_of: str | None
    width: int
    height: int
    location: str | None  # a place name, never coordinates (see the module's docstring)
    native_language: str | None
    license: str
    # what validators made of a person's submission (the paper's flags, appendix B)
    category: str | None = None
    review_count: int = 0
    flag_quality: bool | None = None
    flag_caption_fit: bool | None = None
    flag_relevance: bool | None = None
    flag_overall: bool | None = None
    # the privacy and safety pass before storing (None: not run)
    faces: int | None = None
    plates: int | None = None
    blurred: bool | None = None
    unsafe_score: float | None = None

    def columns(self) -> dict[str, Any]:
        """The record as its .json and its Parquet row say it (RECORD_SCHEMA's order)."""
        return {
            "key": self.key,
            "sha256": self.sha256,
            "source": self.source,
            "url": self.url,
            "caption_en": self.caption_en,
            "caption_native": self.caption_native,
            "captions": [
                {
                    "language": entry.language,
                    "text": entry.text,
                    "backend": entry.backend,
                    "model": entry.model,
                    "language_ok": entry.language_ok,
                }
                for entry in self.captions
            ],
            "countries": list(self.countries),
            "best_country": self.best_country,
            "country_scores": [
                {"country": country, "score": score}
                for country, score in sorted(self.country_scores.items())
            ],
            "score": self.score,
            "tier": self.tier,
            "accepted": self.accepted,
            "duplicate_of": self.duplicate_of,
            "width": self.width,
            "height": self.height,
            "location": self.location,
            "native_language": self.native_language,
            "license": self.license,
            "category": self.category,
            "review_count": self.review_count,
            "flag_quality": self.flag_quality,
            "flag_caption_fit": self.flag_caption_fit,
            "flag_relevance": self.flag_relevance,
            "flag_overall": self.flag_overall,
            "faces": self.faces,
            "plates": self.plates,
            "blurred": self.blurred,
            "unsafe_score": self.unsafe_score,
        }

    def text(self) -> str:
        """The .txt caption: the English one a person wrote, else the best one a model wrote.

        A model caption flagged as being in the wrong language comes only after every other.
        """
        trusted = [entry for entry in self.captions if entry.language_ok is not False]
        english = [entry.text for entry in trusted if entry.language == "en"]
        others = [entry.text for entry in trusted if entry.language != "en"]
        flagged = [entry.text for entry in self.captions if entry.language_ok is False]
        candidates = [self.caption_en, *english, self.caption_native, *others, *flagged]
        return next((text for text in candidates if text and text.strip()), "")


@dataclass(frozen=True)
class ExportSummary:
    """What was published; `bytes` counts every file (tars, Parquet, card)."""

    shards: int
    records: int
    bytes: int
    image_bytes: int
    webdataset_bytes: int
    parquet_bytes: int
    by_tier: dict[str, int]
    by_country: dict[str, int]
    by_source: dict[str, int]
    by_license: dict[str, int]


def image_extension(record: ExportRecord, image: bytes) -> str:
    """The image member's extension, once the bytes are known to be what the record says."""
    if not RECORD_KEY.fullmatch(record.key):
        raise ExportRecordError(
            record.key, "a key is 1-128 letters, digits, '-' or '_' (no dot, no slash)"
        )
    named = FORMAT_ALIASES.get(record.format.upper(), record.format.upper())
    if named not in IMAGE_EXTENSIONS:
        accepted = ", ".join(IMAGE_EXTENSIONS)
        raise ExportRecordError(record.key, f"format {record.format!r} is not one of {accepted}")
    found = sniff_format(image)
    if found != named:
        raise ExportRecordError(record.key, f"the record says {named} but the bytes are {found}")
    if hashlib.sha256(image).hexdigest() != record.sha256:
        raise ExportRecordError(record.key, "the image bytes do not have the record's sha256")
    numbers = [record.score, *record.country_scores.values()]
    if any(number is not None and not math.isfinite(number) for number in numbers):
        raise ExportRecordError(record.key, "a score is not a finite number")
    return IMAGE_EXTENSIONS[named]


# Destinations


class Destination(Protocol):
    """Where finished files go; shards are written to `staging` first."""

    staging: Path

    def publish(self, staged: Path, name: str) -> None: ...

    def publish_bytes(self, data: bytes, name: str) -> None: ...

    def discard(self) -> None: ...


class FolderDestination:
    """A local folder; files are staged in a hidden folder inside it, then renamed in place."""

    def __init__(self, destination: str, again: bool = False) -> None:
        self.root = self.checked(destination, again)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=".seavl-export-", dir=self.root))
        except OSError as exc:
            raise DestinationError(destination, f"the folder cannot be made: {exc}") from exc

    @staticmethod
    def checked(destination: str, again: bool = False) -> Path:
        """The folder, when an export may be written there: new, empty, or (`again`) holding
        only the shards of an unfinished try of the same export."""
        root = Path(destination).expanduser()
        if root.exists() and not root.is_dir():
            raise DestinationError(destination, "it is a file, not a folder")
        if root.is_dir():
            found = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
            if any(not (again and earlier_try(name)) for name in found):
                raise DestinationError(destination, "the folder is not empty")
        return root

    def publish(self, staged: Path, name: str) -> None:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)

    def publish_bytes(self, data: bytes, name: str) -> None:
        staged = self.staging / Path(name).name
        staged.write_bytes(data)
        self.publish(staged, name)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


class BucketDestination:
    """A prefix of an existing S3 bucket; each shard is staged in a temporary folder, then
    uploaded and deleted, so one shard at a time is on local disk."""

    def __init__(self, destination: str, settings: S3Settings | None, again: bool = False) -> None:
        self.bucket, self.prefix, self.store = self.checked(destination, settings, again)
        self.staging = Path(tempfile.mkdtemp(prefix="seavl_export_"))

    @staticmethod
    def checked(
        destination: str, settings: S3Settings | None, again: bool = False
    ) -> tuple[str, str, S3Store]:
        """The bucket, prefix and store, when an export may be written there: a bucket that
        exists, a prefix with nothing under it (or, `again`, only an unfinished try's shards)."""
        if settings is None:
            raise DestinationError(destination, "no S3 server is configured for s3:// exports")
        bucket, _, prefix = destination.removeprefix("s3://").partition("/")
        if not bucket:
            raise DestinationError(destination, "an S3 destination is s3://bucket/prefix")
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError as exc:
            raise DestinationError(destination, f"{exc} (S3's bucket naming rules)") from exc
        prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        store = S3Store(settings)
        with store._unavailable_on_failure():
            if not store.client.bucket_exists(bucket):
                raise DestinationError(destination, f"there is no bucket {bucket!r}")
            for found in store.client.list_objects(bucket, prefix=prefix, recursive=True):
                name = (found.object_name or "").removeprefix(prefix)
                if not (again and earlier_try(name)):
                    raise DestinationError(destination, "objects already exist under that prefix")
        return bucket, prefix, store

    def publish(self, staged: Path, name: str) -> None:
        with self.store._unavailable_on_failure():
            self.store.client.fput_object(
                self.bucket, self.prefix + name, str(staged), content_type=content_type(name)
            )
        staged.unlink()

    def publish_bytes(self, data: bytes, name: str) -> None:
        with self.store._unavailable_on_failure():
            self.store.client.put_object(
                self.bucket,
                self.prefix + name,
                io.BytesIO(data),
                length=len(data),
                content_type=content_type(name),
            )

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def content_type(name: str) -> str:
    suffix = Path(name).suffix
    return {
        ".tar": "application/x-tar",
        ".parquet": "application/vnd.apache.parquet",
        ".md": "text/markdown; charset=utf-8",
    }.get(suffix, "application/octet-stream")


def earlier_try(name: str) -> bool:
    """A file an unfinished try of an export leaves (a published shard; no card yet), which
    the next try of the same export writes again under the same name."""
    return bool(re.fullmatch(r"(webdataset/\d{5}\.tar|parquet/\d{5}\.parquet)", name)) or (
        name.startswith(".seavl-export-")
    )


def _scheme_checked(destination: str) -> None:
    if not destination.strip():
        raise DestinationError(destination, "no destination given")
    if "://" in destination and not destination.startswith("s3://"):
        raise DestinationError(destination, "a destination is a local folder or s3://bucket/prefix")


def open_destination(destination: str, s3: S3Settings | None, again: bool = False) -> Destination:
    """A local folder (made if missing, refused if not empty) or `s3://bucket/prefix`; `again`:
    an earlier try of the same export may have left its shards there."""
    _scheme_checked(destination)
    if destination.startswith("s3://"):
        return BucketDestination(destination, s3, again)
    return FolderDestination(destination, again)


def check_destination(destination: str, s3: S3Settings | None) -> None:
    """What `open_destination` would refuse, refused now, making nothing (before an export's
    job is queued)."""
    _scheme_checked(destination)
    if destination.startswith("s3://"):
        BucketDestination.checked(destination, s3)
    else:
        FolderDestination.checked(destination)


# Shards


class Shard:
    """One shard's tar and Parquet file, open while its records are added."""

    def __init__(self, staging: Path, index: int) -> None:
        self.name = f"{index:05d}"
        self.tar_path = staging / f"{self.name}.tar"
        self.parquet_path = staging / f"{self.name}.parquet"
        self.files = ExitStack()
        self.tar = self.files.enter_context(
            tarfile.TarFile(self.tar_path, "w", format=tarfile.PAX_FORMAT)
        )
        self.parquet = self.files.enter_context(
            pq.ParquetWriter(self.parquet_path, PARQUET_SCHEMA, compression=PARQUET_COMPRESSION)
        )
        self.records = 0
        self.keys: set[str] = set()
        self.pending_rows: list[dict[str, Any]] = []
        self.pending_bytes = 0

    def add(self, record: ExportRecord, image: bytes, extension: str) -> None:
        if record.key in self.keys:  # one sample per key; across shards the caller's keys differ
            raise ExportRecordError(record.key, "the key was already written in this shard")
        columns = record.columns()
        members = {
            f"{record.key}.{extension}": image,
            f"{record.key}.json": json.dumps(columns, ensure_ascii=False).encode(),
            f"{record.key}.txt": record.text().encode(),
        }
        for name in sorted(members):
            self._add_member(name, members[name])
        image_cell = {"bytes": image, "path": f"{record.key}.{extension}"}
        self.pending_rows.append(columns | {"image": image_cell})
        self.pending_bytes += len(image)
        self.keys.add(record.key)
        self.records += 1
        if len(self.pending_rows) >= ROW_GROUP_ROWS or self.pending_bytes >= ROW_GROUP_BYTES:
            self._write_row_group()

    def _add_member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = TAR_MTIME
        info.mode = 0o644
        info.uname = info.gname = ""
        self.tar.addfile(info, io.BytesIO(data))

    def _write_row_group(self) -> None:
        if self.pending_rows:
            self.parquet.write_table(pa.Table.from_pylist(self.pending_rows, PARQUET_SCHEMA))
        self.pending_rows = []
        self.pending_bytes = 0

    def finish(self) -> None:
        self._write_row_group()
        self.files.close()

    def abandon(self) -> None:
        self.files.close()


# The writer


class DatasetWriter:
    """Writes records as they come into shards of `records_per_shard`, then the card.

    Used as a context manager: leaving it normally closes the export; leaving it by an
    exception drops the unfinished shard and writes no card, so an export without README.md is
    one that did not finish (its finished shards stay).
    """

    def __init__(
        self,
        destination: str,
        s3: S3Settings | None,
        records_per_shard: int = 1000,
        name: str = "seavl export",
        again: bool = False,
    ) -> None:
        if records_per_shard < 1:
            raise ServiceError(
                422, "invalid_records_per_shard", "a shard holds at least one record"
            )
        self.destination = open_destination(destination, s3, again)
        self.records_per_shard = records_per_shard
        self.name = " ".join(name.split()) or "seavl export"
        self.shard: Shard | None = None
        self.shards = 0
        self.records = 0
        self.image_bytes = 0
        self.webdataset_bytes = 0
        self.parquet_bytes = 0
        self.counts: dict[str, Counter[str]] = {
            "tier": Counter(),
            "country": Counter(),
            "source": Counter(),
            "license": Counter(),
        }
        self.summary: ExportSummary | None = None

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self.abort()

    def add(self, record: ExportRecord, image: bytes) -> None:
        """One record and its image bytes as stored; the shard is published once it is full."""
        if self.summary is not None:
            raise RuntimeError("the export is closed: no record can be added")
        extension = image_extension(record, image)
        if self.shard is None:
            self.shard = Shard(self.destination.staging, self.shards)
        self.shard.add(record, image, extension)
        self.records += 1
        self.image_bytes += len(image)
        self.counts["tier"][record.tier or NO_VALUE] += 1
        self.counts["country"].update(record.countries or (NO_VALUE,))
        self.counts["source"][record.source] += 1
        self.counts["license"][record.license] += 1
        if self.shard.records >= self.records_per_shard:
            self._publish_shard(self.shard)

    def _publish_shard(self, shard: Shard) -> None:
        self.shard = None
        shard.finish()
        self.webdataset_bytes += shard.tar_path.stat().st_size
        self.parquet_bytes += shard.parquet_path.stat().st_size
        self.destination.publish(shard.tar_path, f"{WEBDATASET_FOLDER}/{shard.name}.tar")
        self.destination.publish(shard.parquet_path, f"{PARQUET_FOLDER}/{shard.name}.parquet")
        self.shards += 1

    def close(self) -> ExportSummary:
        """Publishes the last shard and the card; closing twice gives the same summary.

        An export of no records is a card alone (`datasets` refuses an empty split anyway).
        """
        if self.summary is not None:
            return self.summary
        if self.shard is not None:
            self._publish_shard(self.shard)
        counts = {kind: dict(counter) for kind, counter in self.counts.items()}
        card = dataset_card(self.name, self.shards, self.records, counts).encode()
        self.destination.publish_bytes(card, CARD_NAME)
        self.destination.discard()
        self.summary = ExportSummary(
            shards=self.shards,
            records=self.records,
            bytes=self.webdataset_bytes + self.parquet_bytes + len(card),
            image_bytes=self.image_bytes,
            webdataset_bytes=self.webdataset_bytes,
            parquet_bytes=self.parquet_bytes,
            by_tier=counts["tier"],
            by_country=counts["country"],
            by_source=counts["source"],
            by_license=counts["license"],
        )
        return self.summary

    def abort(self) -> None:
        """Drops the unfinished shard and the staged files; finished shards stay."""
        if self.shard is not None:
            self.shard.abandon()
            self.shard = None
        self.destination.discard()


# The dataset card


def yaml_lines(value: Any, indent: int = 0) -> Iterator[str]:
    """Block-style YAML of dicts, lists and JSON scalars (JSON's quoting is valid YAML)."""
    pad = " " * indent
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, Mapping | list) and item:
                yield f"{pad}{key}:"
                yield from yaml_lines(item, indent + (2 if isinstance(item, Mapping) else 0))
            else:
                yield f"{pad}{key}: {json.dumps(item)}"
    elif isinstance(value, list):
        for item in value:
            lines = list(yaml_lines(item, indent + 2))
            yield f"{pad}- {lines[0].lstrip()}"
            yield from lines[1:]
    else:
        yield f"{pad}{json.dumps(value)}"


def size_category(records: int) -> str:
    """The Hub's `size_categories` bucket."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if records < limit:
            return label
    return "100K<n<1M" if records < 1_000_000 else "1M<n<10M"


def card_metadata(name: str, records: int, licenses: Iterable[str]) -> dict[str, Any]:
    """The front matter. One config: `datasets` picks one builder for a whole repository (from
    the first config's files), so a second config of tars would be read as Parquet."""
    return {
        "pretty_name": name,
        "license": sorted({license.lower() for license in licenses}) or [CROWD_LICENSE.lower()],
        "task_categories": ["image-to-text"],
        "size_categories": [size_category(records)],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": f"{PARQUET_FOLDER}/*.parquet"}],
            }
        ],
    }


FEATURE_NAMES = {
    pa.string(): "text",
    pa.float64(): "number",
    pa.int64(): "integer",
    pa.bool_(): "flag",
}


def feature_expression(arrow_type: Any) -> str:
    """A column's `datasets` feature as Python, for the card (lists as `[item]`, which every
    version of `datasets` reads)."""
    if pa.types.is_struct(arrow_type):
        fields = ", ".join(f'"{f.name}": {feature_expression(f.type)}' for f in arrow_type)
        return f"{{{fields}}}"
    if pa.types.is_list(arrow_type):
        return f"[{feature_expression(arrow_type.value_type)}]"
    return FEATURE_NAMES[arrow_type]


def loading_example(shards: int) -> str:
    """Python that loads an export at DEST (a folder, or a Hub repository once uploaded)."""
    last = f"{max(shards - 1, 0):05d}"
    columns = "\n".join(
        f'    "{column.name}": {feature_expression(column.type)},' for column in RECORD_SCHEMA
    )
    images = ", ".join(f'"{extension}": image' for extension in sorted(IMAGE_EXTENSIONS.values()))
    return f"""from datasets import Features, Image, Value, load_dataset
import webdataset as wds

# Parquet, through this card: every column, and `image` as a PIL image
records = load_dataset("DEST", split="train")

# The tars with `datasets`: samples differ in image type and in which columns are null, so
# the features are given rather than guessed from the first samples
text, number, integer, flag = Value("string"), Value("float64"), Value("int64"), Value("bool")
image = Image()
columns = {{
{columns}
}}
features = Features({{"__key__": text, "__url__": text, {images}, "json": columns, "txt": text}})
samples = load_dataset(
    "webdataset", data_files="DEST/{WEBDATASET_FOLDER}/*.tar", features=features, split="train"
)

# The tars with `webdataset`: sample["jpg"] (or png, webp, gif), sample["json"], sample["txt"]
shards = wds.WebDataset("DEST/{WEBDATASET_FOLDER}/{{00000..{last}}}.tar", shardshuffle=False)
shards = shards.decode("pil")
"""


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def count_table(title: str, counts: Mapping[str, int], order: list[str] | None = None) -> str:
    ranked = sorted(counts, key=lambda value: (-counts[value], value))
    if order is not None:
        ranked = [value for value in order if value in counts] + [
            value for value in ranked if value not in order
        ]
    rows = "\n".join(f"| {cell(value)} | {counts[value]} |" for value in ranked)
    return f"| {title} | records |\n|---|---:|\n{rows}\n"


def dataset_card(
    name: str, shards: int, records: int, counts: Mapping[str, Mapping[str, int]]
) -> str:
    """README.md: front matter that `load_dataset(DEST)` reads, then what a reader needs."""
    front_matter = "\n".join(yaml_lines(card_metadata(name, records, counts["license"])))
    tiers = [tier.value for tier in reversed(Tier)]
    return f"""---
{front_matter}
---

# {cell(name)}

{records} image-text records from Southeast Asia, curated with seavl (the SEA-VL method: crowd
submissions and filtered, deduplicated crawls, captioned by vision-language models), in {shards}
shards, each written in two formats holding the same records.

## Layout

| path | what |
|---|---|
| `{PARQUET_FOLDER}/NNNNN.parquet` | every column, and `image` (bytes and file name) |
| `{WEBDATASET_FOLDER}/NNNNN.tar` | per record: `KEY.jpg` (or png, webp, gif), `.json`, `.txt` |

## Loading

DEST is this folder (or, once uploaded, the Hub repository; its files are then under
`hf://datasets/OWNER/NAME/`).

```python
{loading_example(shards)}```

## Columns

- `key`, `sha256`: the record and its image's sha256; `source`, `url`: where it came from.
- `caption_en`, `caption_native`: the submitter's captions (crowd); `captions`: model captions
  (`language`, `text`, `backend`, `model`, `language_ok`: whether the text is in `language`).
- `countries`, `best_country`, `score`, `tier`, `accepted`: cultural relevance (SEA-VL tiers);
  `country_scores`: the score per country, as a list of `{{country, score}}` pairs (a map that
  every Parquet reader loads).
- `duplicate_of`: the key of the record this one duplicates, if any.
- `category`, `review_count`, `flag_quality`, `flag_caption_fit`, `flag_relevance`,
  `flag_overall`: a crowdsourced submission's category and what its validators decided (each
  flag true when its threshold is met by two reviews or more, null when by fewer, false when
  missed; `accepted` follows `flag_overall` once reviewed).
- `faces`, `plates`, `blurred`, `unsafe_score`: what seavl's privacy pass found before the
  image was stored, and whether it was blurred then (the image published is the stored one);
  null for images stored without the pass. Images held as unsafe are never exported.
- `location`: the place name given with the image ("City, Country"), never coordinates; images
  are published as stored, without EXIF location.
- `.txt`: `caption_en`, else an English model caption, else `caption_native`, else another
  caption.

## Licence

Crowdsourced submissions are published under {CROWD_LICENSE}; crawled images keep the licence
of the crawl they came from. Each record's licence is in its `license` column.

{count_table("licence", counts["license"])}
## Counts

{count_table("tier", counts["tier"], tiers)}
{count_table("country", counts["country"])}
{count_table("source", counts["source"])}"""
