"""Content-addressed object storage: an image's sha256 is its key.

The embedded default is a local folder; the S3 / MinIO store joins it behind the same interface.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from services.common.errors import ServiceError

SHA256_KEY = re.compile(r"^[0-9a-f]{64}$")


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


class LocalFolderStore:
    """Objects as files `<root>/<key[:2]>/<key>`, written atomically (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

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
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
            handle.write(data)
            temporary = Path(handle.name)
        os.replace(temporary, path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()
