"""Reads what img2dataset writes, shard by shard, as a stream (crawl ingest, issue 11).

A source is a local folder or `s3://bucket/prefix` on the configured S3-protocol server. It holds
img2dataset's `webdataset` output (`00000.tar` with `{key}.jpg/.json/.txt` members), its `files`
output (folders `00000/` of such files), or a plain folder of images, cut into pseudo-shards.
The `.parquet` and `_stats.json` written beside each shard repeat its json and are not read.

Nothing is extracted and no shard is held whole: a tar is read in stream mode from the file or the
object's response, and only one sample's members are in memory at a time. Member names are only
compared and reported, never used as paths. Images are not decoded here: the caller validates them.

A shard's fingerprint is a cheap identity, read from a listing without reading the data: the
object's ETag for a tar on S3; otherwise the sha256 of each file's (name, size, mtime_ns), or of
each object's (name, size, ETag), of the shard. A shard whose fingerprint changed since it was
listed is not read (one `SampleFailure` says so), so a fingerprint always names what was read.

Failure reasons are short and stable (img2dataset's own `error_message`, or one of this module's
`REASON_…`), so the caller can count them by reason; the key and member say which sample.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from enum import Enum, StrEnum
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import IO, Protocol, cast

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from services.common.errors import ServiceError, UnavailableError
from services.common.storage import S3Settings, S3Store

DEFAULT_FOLDER_SHARD_SIZE = 1000
DEFAULT_MAX_MEMBER_BYTES = 50 * 1024 * 1024
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp"})
FOLDER_SHARD_PREFIX = "images-"
S3_SCHEME = "s3://"
# img2dataset names shards by number: `00000.tar`, `00000/` (oom_shard_count digits)
SHARD_NUMBER = re.compile(r"[0-9]+")
FOLDER_SHARD_NUMBER = re.compile(re.escape(FOLDER_SHARD_PREFIX) + r"([0-9]+)")
# formats img2dataset can write that hold no per-sample files to read here
UNREAD_OUTPUT_FORMATS = frozenset({"parquet", "tfrecord"})
READ_CHUNK_BYTES = 64 * 1024

REASON_NO_IMAGE = "no image (.jpg, .jpeg, .png, .webp) in the sample"
REASON_TOO_LARGE = "a member is larger than the limit of {limit} bytes"
REASON_NOT_A_FILE = "a member is a link or a device, not a file"
REASON_BAD_METADATA = "the sample's .json is not a JSON object"
REASON_NOT_A_TAR = "the shard is not a readable tar"
REASON_TAR_CUT = "the tar is cut off or corrupt here; the rest of the shard is not read"
REASON_CHANGED = "the shard changed since it was listed; list the source again"
REASON_GONE = "the shard is no longer in the source"


class ShardKind(StrEnum):
    WEBDATASET = "webdataset"
    FILES = "files"
    FOLDER = "folder"


@dataclass(frozen=True)
class ShardRef:
    """One unit of crawl work. `name` is the shard's path under the source (`00000.tar`,
    `00000`, or `images-00000` for a plain folder's pseudo-shard); `fingerprint` is described in
    the module's docstring. `resume_after` (pseudo-shards only) is the path of the previous
    pseudo-shard's last image: with it a shard is read without listing the folder from its
    start; without it (None) the images before the shard are listed and skipped."""

    source: str
    name: str
    kind: ShardKind
    size_bytes: int
    fingerprint: str
    resume_after: str | None = None


class SourceError(ServiceError):
    """A crawl source that cannot be read as given: 404 when nothing is there, 422 otherwise."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        if not_found:
            super().__init__(404, "crawl_source_not_found", message, field="source")
        else:
            super().__init__(422, "bad_crawl_source", message, field="source")


@dataclass(frozen=True)
class CrawlSample:
    """One image of a shard, with what img2dataset wrote about it (its .json as `meta`)."""

    key: str
    member: str
    data: bytes
    url: str | None
    caption: str | None
    original_width: int | None
    original_height: int | None
    meta: dict[str, object]


@dataclass(frozen=True)
class SampleFailure:
    """A sample (or, with no key, a part of a shard) that could not be read, and why."""

    key: str | None
    member: str | None
    reason: str


class _Entry(Protocol):
    """A file or object under a source: its path relative to the source's root, its size, and
    what changes when its content does (mtime_ns of a file, ETag of an object)."""

    @property
    def path(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def stamp(self) -> str: ...


@dataclass(frozen=True)
class _Listed:
    """An entry as a listing or a stat gave it."""

    path: str
    size: int
    stamp: str


class _FoundFile:
    """A file met while walking a folder, stat'ed only when its size or stamp is asked for:
    reading one pseudo-shard walks past files it never needs."""

    def __init__(self, path: str, found: os.DirEntry[str]) -> None:
        self.path = path
        self._found = found

    @cached_property
    def _stat(self) -> os.stat_result:
        return self._found.stat()

    @property
    def size(self) -> int:
        return self._stat.st_size

    @property
    def stamp(self) -> str:
        return str(self._stat.st_mtime_ns)


def _fingerprint_line(entry: _Entry) -> bytes:
    return f"{entry.path}\0{entry.size}\0{entry.stamp}\n".encode("utf-8", "surrogateescape")


def _fingerprint(entries: Iterable[_Entry]) -> str:
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(_fingerprint_line(entry))
    return digest.hexdigest()


def _hidden(path: str) -> bool:
    """Dot files and folders (.DS_Store, .ipynb_checkpoints) are no one's samples."""
    return any(part.startswith(".") for part in path.split("/"))


def _is_image(path: str) -> bool:
    return path.rpartition(".")[2].lower() in IMAGE_EXTENSIONS


class _Location(Protocol):
    """Where a source's files are: a local folder or a prefix of a bucket."""

    def describe(self, path: str = "") -> str: ...

    def walk(self, under: str = "", after: str | None = None) -> Iterator[_Entry]:
        """Every entry under `under`, by path in code point order (what S3 lists), optionally
        only those after `after`; hidden ones left out."""
        ...

    def file_fingerprint(self, entry: _Entry) -> str: ...

    def read(self, path: str) -> bytes: ...

    def open_stream(self, path: str) -> AbstractContextManager[tuple[IO[bytes], _Entry]]:
        """The entry's bytes as a stream, and the entry as it is now."""
        ...

    def nothing_here(self) -> SourceError: ...


class _LocalFolder:
    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self, path: str = "") -> str:
        return str(self.root / path) if path else str(self.root)

    def _path(self, path: str) -> Path:
        """A shard's name comes back from the caller: it must stay inside the folder."""
        relative = PurePosixPath(path)
        if relative.is_absolute() or ".." in relative.parts:
            raise SourceError(f"{path!r} is not a path inside {self.root}")
        return self.root / relative

    @contextmanager
    def _translated(self, path: str) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError as exc:
            raise SourceError(f"{self.describe(path)} does not exist", not_found=True) from exc
        except NotADirectoryError as exc:
            raise SourceError(f"{self.describe(path)} is not a folder") from exc
        except OSError as exc:
            raise SourceError(f"cannot read {self.describe(path)}: {exc.strerror}") from exc

    def walk(self, under: str = "", after: str | None = None) -> Iterator[_Entry]:
        with self._translated(under):
            yield from self._walk(self._path(under), under, after)

    def _walk(self, folder: Path, prefix: str, after: str | None) -> Iterator[_Entry]:
        with os.scandir(folder) as scan:
            entries = [entry for entry in scan if not entry.name.startswith(".")]
        # a folder sorts as "name/": paths then come in the order of their full strings
        named = sorted(
            (prefix + entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""), entry)
            for entry in entries
        )
        for path, entry in named:
            if path.endswith("/"):
                # a folder all of whose paths come before `after` is not entered
                if after is None or path > after or after.startswith(path):
                    yield from self._walk(Path(entry.path), path, after)
            elif (after is None or path > after) and entry.is_file():
                yield _FoundFile(path, entry)

    def file_fingerprint(self, entry: _Entry) -> str:
        return _fingerprint([entry])

    def read(self, path: str) -> bytes:
        with self._translated(path):
            return self._path(path).read_bytes()

    @contextmanager
    def open_stream(self, path: str) -> Iterator[tuple[IO[bytes], _Entry]]:
        with self._translated(path), self._path(path).open("rb") as handle:
            status = os.fstat(handle.fileno())
            yield handle, _Listed(path, status.st_size, str(status.st_mtime_ns))

    def nothing_here(self) -> SourceError:
        return SourceError(f"the folder {self.root} is empty")


class _BucketPrefix:
    def __init__(self, client: Minio, endpoint: str, bucket: str, prefix: str) -> None:
        self.client = client
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix

    def describe(self, path: str = "") -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}{path}"

    @contextmanager
    def _translated(self, path: str) -> Iterator[None]:
        """A missing bucket or object is the source's problem; anything else of the server's
        (refused, timed out, dropped mid-stream) makes the job wait and try again."""
        try:
            yield
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                message = f"there is no bucket {self.bucket} on the S3 server at {self.endpoint}"
                raise SourceError(message, not_found=True) from exc
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise SourceError(f"{self.describe(path)} does not exist", not_found=True) from exc
            raise UnavailableError(f"the S3 server at {self.endpoint} failed: {exc}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise UnavailableError(f"the S3 server at {self.endpoint} failed: {exc}") from exc

    def walk(self, under: str = "", after: str | None = None) -> Iterator[_Entry]:
        with self._translated(under):
            listing = self.client.list_objects(
                self.bucket,
                prefix=self.prefix + under,
                recursive=True,
                start_after=None if after is None else self.prefix + after,
            )
            for item in listing:
                path = str(item.object_name).removeprefix(self.prefix)
                if path.endswith("/") or _hidden(path):  # folder markers, dot files
                    continue
                yield _Listed(path, int(item.size or 0), str(item.etag or "").strip('"'))

    def file_fingerprint(self, entry: _Entry) -> str:
        return entry.stamp

    def read(self, path: str) -> bytes:
        with self.open_stream(path) as (stream, _):
            return stream.read()

    @contextmanager
    def open_stream(self, path: str) -> Iterator[tuple[IO[bytes], _Entry]]:
        with self._translated(path):
            response = self.client.get_object(self.bucket, self.prefix + path)
            try:
                size = int(response.headers.get("Content-Length", 0))
                etag = response.headers.get("ETag", "").strip('"')
                yield cast(IO[bytes], response), _Listed(path, size, etag)
            finally:
                response.close()
                response.release_conn()

    def nothing_here(self) -> SourceError:
        message = f"nothing is stored under {self.describe()} on the S3 server at {self.endpoint}"
        return SourceError(message, not_found=True)


def _location(source: str, s3: S3Settings | None) -> _Location:
    """Where `source` is; nothing is asked of the folder or the server yet."""
    if source.startswith(S3_SCHEME):
        if s3 is None:
            raise SourceError(
                f"{source} is on S3, but no S3-protocol server is configured "
                "(SEAVL_STORAGE_S3__ENDPOINT and its keys)"
            )
        bucket, _, prefix = source.removeprefix(S3_SCHEME).partition("/")
        if not bucket:
            raise SourceError(f"{source} names no bucket: write s3://bucket/prefix")
        prefix = prefix.strip("/")
        return _BucketPrefix(
            S3Store(s3).client, s3.endpoint, bucket, f"{prefix}/" if prefix else ""
        )
    if "://" in source:
        raise SourceError(f"{source} is neither a local folder nor s3://bucket/prefix")
    if not source.strip():
        raise SourceError("the source is empty: give a folder or s3://bucket/prefix")
    return _LocalFolder(Path(source).expanduser())


class _FilesShard:
    """A `files` shard met in a listing: its size and fingerprint, built as its files pass."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self.has_metadata = False

    def add(self, entry: _Entry) -> None:
        self.digest.update(_fingerprint_line(entry))
        self.size += entry.size
        self.has_metadata = self.has_metadata or entry.path.endswith(".json")


def _files_shard_of(path: str) -> str | None:
    """The shard folder of a path `00000/{key}.ext` of img2dataset's `files` output."""
    folder, _, name = path.partition("/")
    if name and "/" not in name and SHARD_NUMBER.fullmatch(folder):
        return folder
    return None


class _Survey:
    """One pass over a source's listing, gathering the shards of every layout it could hold:
    the layout is known only at the end (a tar may be listed after a thousand images)."""

    def __init__(self, source: str, location: _Location, folder_shard_size: int) -> None:
        if folder_shard_size < 1:
            raise ValueError("folder_shard_size must be at least 1")
        self.source = source
        self.location = location
        self.folder_shard_size = folder_shard_size
        self.entries = 0
        self.tars: list[ShardRef] = []
        self.files: dict[str, _FilesShard] = {}
        self.folder_shards: list[ShardRef] = []
        self.images: list[_Entry] = []
        self.last_image: str | None = None
        self.unread_formats: set[str] = set()

    def add(self, entry: _Entry) -> None:
        self.entries += 1
        path = entry.path
        extension = path.rpartition(".")[2].lower()
        if "/" not in path and extension == "tar":
            fingerprint = self.location.file_fingerprint(entry)
            self.tars.append(
                ShardRef(self.source, path, ShardKind.WEBDATASET, entry.size, fingerprint)
            )
        elif "/" not in path and extension in UNREAD_OUTPUT_FORMATS:
            self.unread_formats.add(extension)
        files_shard = _files_shard_of(path)
        if files_shard is not None:
            self.files.setdefault(files_shard, _FilesShard()).add(entry)
        if _is_image(path):
            self.images.append(entry)
            if len(self.images) == self.folder_shard_size:
                self._close_folder_shard()

    def _close_folder_shard(self) -> None:
        self.folder_shards.append(
            ShardRef(
                self.source,
                f"{FOLDER_SHARD_PREFIX}{len(self.folder_shards):05d}",
                ShardKind.FOLDER,
                sum(image.size for image in self.images),
                _fingerprint(self.images),
                self.last_image,
            )
        )
        self.last_image = self.images[-1].path
        self.images = []

    def shards(self) -> list[ShardRef]:
        """The shards of the layout found, by precedence: tars, then `files` folders, then
        images (img2dataset's `files` shards are folders of images too)."""
        if self.images:
            self._close_folder_shard()
        if self.tars:
            return self.tars
        files = [
            ShardRef(self.source, name, ShardKind.FILES, shard.size, shard.digest.hexdigest())
            for name, shard in sorted(self.files.items())
            if shard.has_metadata
        ]
        if files:
            return files
        if self.folder_shards:
            return self.folder_shards
        if not self.entries:
            raise self.location.nothing_here()
        unread = ""
        if self.unread_formats:
            formats = " and ".join(sorted(self.unread_formats))
            unread = (
                f" It holds img2dataset's {formats} output, which is not read here: write the "
                "crawl with --output_format webdataset or files."
            )
        raise SourceError(
            f"{self.location.describe()} holds {self.entries} files but no img2dataset shards "
            "(00000.tar, or 00000/ folders with .json files) and no images (.jpg, .jpeg, .png, "
            f".webp).{unread}"
        )


def list_shards(
    source: str, s3: S3Settings | None, folder_shard_size: int = DEFAULT_FOLDER_SHARD_SIZE
) -> list[ShardRef]:
    """The shards of `source`, in name order, from one listing (no shard is read).

    Raises `SourceError`: 404 for a missing folder, bucket or prefix; 422 for an empty folder, a
    source with nothing readable, or `s3://` without S3 settings. `UnavailableError` when the S3
    server cannot be reached.
    """
    location = _location(source, s3)
    survey = _Survey(source, location, folder_shard_size)
    for entry in location.walk():
        survey.add(entry)
    return survey.shards()


class _Role(Enum):
    IMAGE = "image"
    METADATA = "metadata"
    CAPTION = "caption"
    OTHER = "other"


ROLES_BY_EXTENSION = {
    **dict.fromkeys(IMAGE_EXTENSIONS, _Role.IMAGE),
    "json": _Role.METADATA,
    "txt": _Role.CAPTION,
}


@dataclass(frozen=True)
class _Member:
    """A part of a sample: its data when it is needed and could be taken, or the problem."""

    name: str
    key: str
    role: _Role
    data: bytes | None = None
    problem: str | None = None


def _classify(name: str) -> tuple[str, _Role] | None:
    """A member's sample key and role by webdataset's rule: the key is the name up to the first
    dot of its last part (`000001.jpg` → `000001`, `jpg`). None for a hidden file."""
    folder, _, base = name.removeprefix("./").rpartition("/")
    if not base or base.startswith("."):
        return None
    stem, _, extension = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ROLES_BY_EXTENSION.get(extension.lower(), _Role.OTHER)


class _TarBroken(Exception):
    """The tar cannot be read past here. `key` and `member` name the member that was cut, or
    are None when the cut falls between members (what was read before it is whole)."""

    def __init__(self, reason: str, key: str | None = None, member: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key = key
        self.member = member


def _open_tar(stream: IO[bytes]) -> tarfile.TarFile:
    """The tar in stream mode (compressed or not): read forward only, as S3 sends it."""
    try:
        return tarfile.open(fileobj=stream, mode="r|*")
    except (tarfile.TarError, EOFError) as exc:
        raise _TarBroken(REASON_NOT_A_TAR) from exc


def _tar_members(stream: IO[bytes], max_member_bytes: int) -> Iterator[_Member]:
    """The members of a tar read as a stream: never extracted, never seeked back."""
    with _open_tar(stream) as archive:
        passed_over: _Member | None = None  # the last member whose data the archive skips
        while True:
            try:
                info = archive.next()
            except (tarfile.TarError, EOFError) as exc:
                if passed_over is None:
                    raise _TarBroken(REASON_TAR_CUT) from exc
                raise _TarBroken(REASON_TAR_CUT, passed_over.key, passed_over.name) from exc
            # stream mode would keep every header of the shard (an undocumented list)
            archive.members.clear()  # type: ignore[attr-defined]
            if info is None:
                break
            passed_over = None
            classified = _classify(info.name)
            if classified is None or info.isdir():
                continue
            member = _Member(info.name, *classified)
            if member.role is _Role.OTHER:
                passed_over = member
            elif not info.isfile():
                passed_over = replace(member, problem=REASON_NOT_A_FILE)
            elif info.size > max_member_bytes:
                passed_over = replace(
                    member, problem=REASON_TOO_LARGE.format(limit=max_member_bytes)
                )
            if passed_over is not None:
                yield passed_over
                continue
            content = archive.extractfile(info)
            try:
                data = content.read() if content is not None else b""
            except (tarfile.TarError, EOFError) as exc:
                raise _TarBroken(REASON_TAR_CUT, member.key, member.name) from exc
            yield replace(member, data=data)
        _check_end(archive)


def _check_end(archive: tarfile.TarFile) -> None:
    """Whether the members ended at the tar's end-of-archive blocks. tarfile ends quietly on a
    cut or damaged header after the first member, which would drop the rest of a shard unsaid:
    after its last header read, a whole block must have followed, and only zeros after it."""
    stream = archive.fileobj
    if stream.tell() - archive.offset < tarfile.BLOCKSIZE:
        raise _TarBroken(REASON_TAR_CUT)
    while chunk := stream.read(READ_CHUNK_BYTES):
        if chunk.strip(b"\0"):
            raise _TarBroken(REASON_TAR_CUT)


def _first(group: list[_Member], role: _Role) -> _Member | None:
    return next((member for member in group if member.role is role), None)


def _text(meta: dict[str, object], field: str) -> str | None:
    value = meta.get(field)
    return value if isinstance(value, str) and value else None


def _whole_number(meta: dict[str, object], field: str) -> int | None:
    value = meta.get(field)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _missing_image_reason(meta: dict[str, object]) -> str:
    """img2dataset's own words for a sample it could not fetch, when it left them."""
    error = _text(meta, "error_message")
    if error is not None:
        return error
    status = _text(meta, "status")
    if status is not None and status != "success":
        return f"img2dataset status {status}"
    return REASON_NO_IMAGE


def _sample_of(group: list[_Member]) -> CrawlSample | SampleFailure:
    key = group[0].key
    for member in group:
        if member.problem is not None:
            return SampleFailure(key, member.name, member.problem)
    metadata = _first(group, _Role.METADATA)
    meta: dict[str, object] = {}
    if metadata is not None:
        try:
            parsed = json.loads(metadata.data or b"")
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            return SampleFailure(key, metadata.name, REASON_BAD_METADATA)
        meta = parsed
    image = _first(group, _Role.IMAGE)
    if image is None or image.data is None:
        return SampleFailure(key, (metadata or group[0]).name, _missing_image_reason(meta))
    caption = _first(group, _Role.CAPTION)
    if caption is not None and caption.data is not None:
        text: str | None = caption.data.decode("utf-8", "replace") or None
    else:
        text = _text(meta, "caption")
    return CrawlSample(
        key=key,
        member=image.name,
        data=image.data,
        url=_text(meta, "url"),
        caption=text,
        original_width=_whole_number(meta, "original_width"),
        original_height=_whole_number(meta, "original_height"),
        meta=meta,
    )


def _grouped(members: Iterator[_Member]) -> Iterator[CrawlSample | SampleFailure]:
    """Samples from members, a sample's members being consecutive (webdataset's rule; a key met
    again later is a sample of its own)."""
    group: list[_Member] = []
    try:
        for member in members:
            if group and member.key != group[0].key:
                yield _sample_of(group)
                group = []
            group.append(member)
    except _TarBroken as broken:
        if group and group[0].key != broken.key:
            yield _sample_of(group)
        yield SampleFailure(broken.key, broken.member, broken.reason)
        return
    if group:
        yield _sample_of(group)


Reader = Callable[[_Location, ShardRef, int, int], Iterator[CrawlSample | SampleFailure]]


def _tar_samples(
    location: _Location, shard: ShardRef, folder_shard_size: int, max_member_bytes: int
) -> Iterator[CrawlSample | SampleFailure]:
    with location.open_stream(shard.name) as (stream, entry):
        if location.file_fingerprint(entry) != shard.fingerprint:
            yield SampleFailure(None, None, REASON_CHANGED)
            return
        yield from _grouped(_tar_members(stream, max_member_bytes))


def _files_samples(
    location: _Location, shard: ShardRef, folder_shard_size: int, max_member_bytes: int
) -> Iterator[CrawlSample | SampleFailure]:
    folder = f"{shard.name}/"
    entries = [e for e in location.walk(folder) if "/" not in e.path.removeprefix(folder)]
    if _fingerprint(entries) != shard.fingerprint:
        yield SampleFailure(None, None, REASON_CHANGED)
        return
    yield from _grouped(_file_members(location, entries, folder, max_member_bytes))


def _file_members(
    location: _Location, entries: list[_Entry], folder: str, max_member_bytes: int
) -> Iterator[_Member]:
    for entry in entries:
        classified = _classify(entry.path.removeprefix(folder))
        if classified is None:
            continue
        member = _Member(entry.path, *classified)
        if member.role is _Role.OTHER:
            yield member
        elif entry.size > max_member_bytes:
            yield replace(member, problem=REASON_TOO_LARGE.format(limit=max_member_bytes))
        else:
            yield replace(member, data=location.read(entry.path))


def _folder_samples(
    location: _Location, shard: ShardRef, folder_shard_size: int, max_member_bytes: int
) -> Iterator[CrawlSample | SampleFailure]:
    number = FOLDER_SHARD_NUMBER.fullmatch(shard.name)
    if number is None:
        raise SourceError(f"{shard.name} is not the name of a folder's pseudo-shard")
    skipped = 0 if shard.resume_after is not None else int(number[1]) * folder_shard_size
    images = (entry for entry in location.walk(after=shard.resume_after) if _is_image(entry.path))
    chosen = list(itertools.islice(images, skipped, skipped + folder_shard_size))
    if _fingerprint(chosen) != shard.fingerprint:
        yield SampleFailure(None, None, REASON_CHANGED)
        return
    for entry in chosen:
        if entry.size > max_member_bytes:
            reason = REASON_TOO_LARGE.format(limit=max_member_bytes)
            yield SampleFailure(entry.path, entry.path, reason)
            continue
        yield CrawlSample(
            key=entry.path,
            member=entry.path,
            data=location.read(entry.path),
            url=None,
            caption=None,
            original_width=None,
            original_height=None,
            meta={},
        )


READERS: dict[ShardKind, Reader] = {
    ShardKind.WEBDATASET: _tar_samples,
    ShardKind.FILES: _files_samples,
    ShardKind.FOLDER: _folder_samples,
}


def iter_samples(
    shard: ShardRef,
    s3: S3Settings | None,
    folder_shard_size: int = DEFAULT_FOLDER_SHARD_SIZE,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
) -> Iterator[CrawlSample | SampleFailure]:
    """The samples of one shard, in its order, one in memory at a time.

    What cannot be read becomes a `SampleFailure`: a failed download, a member over
    `max_member_bytes`, a cut or corrupt tar (which ends the shard), a shard changed or gone
    since it was listed. `SourceError` is raised at once for a source that cannot be addressed
    (`s3://` without S3 settings); while iterating, only `UnavailableError` is raised (the S3
    server cannot be reached: the job is tried again later).
    """
    reader = READERS[ShardKind(shard.kind)]
    location = _location(shard.source, s3)
    return _failures_of_source(reader(location, shard, folder_shard_size, max_member_bytes))


def _failures_of_source(
    samples: Iterator[CrawlSample | SampleFailure],
) -> Iterator[CrawlSample | SampleFailure]:
    """A shard gone or unreadable since it was listed ends as one failure, not an exception."""
    try:
        yield from samples
    except SourceError as exc:
        yield SampleFailure(None, None, REASON_GONE if exc.status_code == 404 else exc.message)
