"""Content-addressed object storage: an image's sha256 is its key.

MinIO (or any S3-protocol server) when configured, a local folder otherwise; both behind
`ObjectStore`. Writing a key that exists is a no-op: the same bytes always have the same key.
"""

from __future__ import annotations

import io
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.errors import ServiceError, UnavailableError
from services.common.settings import DEFAULT_DATA_DIR

SHA256_KEY = re.compile(r"^[0-9a-f]{64}$")
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL


class ObjectNotFoundError(ServiceError):
    def __init__(self, key: str) -> None:
        super().__init__(404, "object_not_found", f"no stored object with key {key}")


def validate_key(key: str) -> str:
    """Keys are lower-case sha256 hex digests; anything else could escape the store's folder."""
    if not SHA256_KEY.fullmatch(key):
        raise ServiceError(422, "invalid_object_key", "an object key is a sha256 hex digest")
    return key


class ObjectStore(Protocol):
    def get(self, key: str) -> bytes: ...

    def put(self, key: str, data: bytes) -> None: ...

    def exists(self, key: str) -> bool: ...

    def describe(self) -> str:
        """Where the objects are, for a person reading a log line."""
        ...


class LocalFolderStore:
    """Objects as files `<root>/<key[:2]>/<key>`, written atomically (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"the folder {self.root}"

    def _path(self, key: str) -> Path:
        validate_key(key)
        return self.root / key[:2] / key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(key) from exc

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if path.is_file():
            return
        # a name of its own for each writer, renamed into place once whole: half of what
        # tempfile.NamedTemporaryFile costs, on every upload and every crawled image kept
        temporary = path.with_name(f".{key}.{secrets.token_hex(8)}")
        try:
            descriptor = os.open(temporary, _NEW_FILE, 0o600)
        except FileNotFoundError:  # the first object under this prefix
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(temporary, _NEW_FILE, 0o600)
        try:
            with open(descriptor, "wb") as handle:
                handle.write(data)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


class S3Settings(BaseModel):
    """An S3-protocol server (MinIO in compose and k8s). The secret has no default."""

    endpoint: str = Field(description="host:port, without scheme")
    access_key: str
    secret_key: SecretStr
    bucket: str = "seavl-images"
    secure: bool = False
    region: str | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)


class S3Store:
    """Objects in one bucket, named by their sha256, through the MinIO client.

    Nothing is asked of the server until an object is: a service starts while MinIO is down
    (and answers 503 meanwhile), and the bucket is made when the first object is put.
    """

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        timeout = urllib3.Timeout(connect=settings.timeout_seconds, read=settings.timeout_seconds)
        http = urllib3.PoolManager(
            timeout=timeout, retries=urllib3.Retry(total=2, backoff_factor=0.2), maxsize=16
        )
        self.client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key.get_secret_value(),
            secure=settings.secure,
            region=settings.region,
            http_client=http,
        )

    def describe(self) -> str:
        return f"bucket {self.settings.bucket} at {self.settings.endpoint}"

    @contextmanager
    def _unavailable_on_failure(self) -> Iterator[None]:
        """The server refusing, timing out or answering what is not S3 (a proxy's page):
        the store is unavailable, and the work is retried later."""
        try:
            yield
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise UnavailableError(
                f"the object store at {self.settings.endpoint} failed: {exc}"
            ) from exc

    def _make_bucket(self) -> None:
        with self._unavailable_on_failure():
            try:
                self.client.make_bucket(self.settings.bucket)
            except S3Error as exc:  # made by another service meanwhile
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def get(self, key: str) -> bytes:
        validate_key(key)
        with self._unavailable_on_failure():
            try:
                response = self.client.get_object(self.settings.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchBucket"):  # no bucket yet: nothing put
                    raise ObjectNotFoundError(key) from exc
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def put(self, key: str, data: bytes) -> None:
        validate_key(key)
        if self.exists(key):
            return
        with self._unavailable_on_failure():
            try:
                self._put_object(key, data)
            except S3Error as exc:
                if exc.code != "NoSuchBucket":
                    raise
                self._make_bucket()
                self._put_object(key, data)

    def _put_object(self, key: str, data: bytes) -> None:
        self.client.put_object(self.settings.bucket, key, io.BytesIO(data), length=len(data))

    def exists(self, key: str) -> bool:
        validate_key(key)
        with self._unavailable_on_failure():
            try:
                self.client.stat_object(self.settings.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"):
                    return False
                raise
        return True

    def count(self) -> int:
        """Objects in the bucket (for tests and the admin's stats)."""
        with self._unavailable_on_failure():
            try:
                objects = self.client.list_objects(self.settings.bucket, recursive=True)
                return sum(1 for _ in objects)
            except S3Error as exc:
                if exc.code == "NoSuchBucket":
                    return 0
                raise


def make_store(s3: S3Settings | None, folder: Path) -> ObjectStore:
    """MinIO / S3 when configured, else the local folder."""
    if s3 is None:
        return LocalFolderStore(folder)
    return S3Store(s3)


class StorageSettings(BaseSettings):
    """Where images are kept: one setting for every service that reads or writes them by key.

    The gateway stores uploads and sends their keys on, the embedder and the captioner read
    them by key, so all must see the same store: a folder (`SEAVL_STORAGE_DIR`, var/objects by
    default, for one machine) or an S3-protocol server (`SEAVL_STORAGE_S3__ENDPOINT`,
    `…__ACCESS_KEY`, `…__SECRET_KEY`, `…__BUCKET`, `…__SECURE`, `…__REGION`).
    A service may still be given its own (`SEAVL_<SERVICE>_STORAGE__DIR`, say).
    """

    model_config = SettingsConfigDict(
        env_prefix="SEAVL_STORAGE_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,
    )

    dir: Path = Field(
        default=DEFAULT_DATA_DIR / "objects",
        description="the local folder, when no S3 server is set",
    )
    s3: S3Settings | None = Field(default=None, description="an S3-protocol server (MinIO)")

    def open(self) -> ObjectStore:
        return make_store(self.s3, self.dir)


def storage_setting() -> Any:
    """A service's `storage` field: the shared `SEAVL_STORAGE_…` settings by default."""
    return Field(
        default_factory=StorageSettings,
        description="where images are kept (the same store for every service)",
    )
