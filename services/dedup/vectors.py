"""Embeddings in Qdrant: a server when configured, Qdrant's local mode (a folder) otherwise.

One collection per namespace and model, cosine distance, created on first insert; a point's id
is a UUID derived from the image's sha256, so re-inserting an image rewrites the same point.
Local mode scans every vector on each search, so there an in-memory SimHash index answers
neighbour queries (the server has its own HNSW index).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from services.common.errors import ServiceError, UnavailableError
from services.dedup.config import DedupSettings
from services.dedup.simhash import SimHashIndex

Matrix = npt.NDArray[np.float32]


def point_id(sha256: str) -> str:
    """The Qdrant id of an image: its sha256's first 128 bits as a UUID."""
    return str(uuid.UUID(hex=sha256[:32]))


@dataclass(frozen=True)
class StoredPoint:
    sha256: str
    vector: Matrix
    inserted_at: float


@contextmanager
def qdrant_errors() -> Iterator[None]:
    """Qdrant down or refusing: 503 for the caller, who may retry."""
    try:
        yield
    except (ResponseHandlingException, httpx.TransportError, ConnectionError) as exc:
        raise UnavailableError(f"the vector index (Qdrant) is unreachable: {exc}") from exc
    except UnexpectedResponse as exc:
        if exc.status_code is not None and exc.status_code >= 500:
            raise UnavailableError(f"the vector index (Qdrant) failed: {exc}") from exc
        raise


class VectorStore:
    def __init__(self, settings: DedupSettings) -> None:
        self.settings = settings
        self.local = settings.qdrant_url is None
        if self.local:
            settings.qdrant_path.mkdir(parents=True, exist_ok=True)
            self.client = QdrantClient(path=str(settings.qdrant_path))
        else:
            self.client = QdrantClient(
                url=settings.qdrant_url,
                api_key=settings.qdrant_api_key,
                timeout=int(settings.qdrant_timeout_seconds),
                # /readyz reports reachability; a version probe at start-up would only warn
                check_compatibility=False,
            )
        # qdrant-client's local mode is not made for concurrent callers: one at a time there.
        self._lock = threading.RLock() if self.local else None
        self._accelerators: dict[str, SimHashIndex] = {}
        self._dims: dict[str, int] = {}

    @contextmanager
    def _access(self) -> Iterator[None]:
        with qdrant_errors():
            if self._lock is None:
                yield
            else:
                with self._lock:
                    yield

    def close(self) -> None:
        self.client.close()

    def collections(self) -> list[str]:
        with self._access():
            return sorted(c.name for c in self.client.get_collections().collections)

    def dim(self, name: str) -> int | None:
        """The collection's vector size, or None if it does not exist."""
        if name in self._dims:
            return self._dims[name]
        with self._access():
            if not self.client.collection_exists(name):
                return None
            params = self.client.get_collection(name).config.params.vectors
            assert isinstance(params, models.VectorParams)
            self._dims[name] = int(params.size)
        return self._dims[name]

    def ensure(self, name: str, dim: int) -> None:
        existing = self.dim(name)
        if existing is None:
            with self._access():
                try:
                    self.client.create_collection(
                        name,
                        vectors_config=models.VectorParams(
                            size=dim, distance=models.Distance.COSINE
                        ),
                    )
                except (UnexpectedResponse, ValueError):
                    if not self.client.collection_exists(name):  # not just a concurrent creation
                        raise
            self._dims.pop(name, None)
            existing = self.dim(name)
        if existing != dim:
            raise ServiceError(
                422,
                "dimension_mismatch",
                f"collection {name} holds {existing}-d vectors; got {dim}-d",
                field="vectors",
            )

    def _accelerator(self, name: str) -> SimHashIndex:
        """Local mode: the SimHash index of the collection, built from the folder on first use."""
        accelerator = self._accelerators.get(name)
        if accelerator is None:
            dim = self.dim(name)
            assert dim is not None
            accelerator = SimHashIndex(
                dim, self.settings.simhash_bits, self.settings.simhash_miss_probability
            )
            for page in self.pages(name):
                accelerator.upsert(
                    [p.sha256 for p in page], np.stack([p.vector for p in page]).astype(np.float32)
                )
            self._accelerators[name] = accelerator
        return accelerator

    def warm_up(self) -> None:
        """Local mode: builds every collection's index now, not in the first caller's request."""
        if self.local:
            for name in self.collections():
                with self._access():
                    self._accelerator(name)

    def search(
        self, name: str, vectors: Matrix, threshold: float, limit: int
    ) -> list[list[tuple[str, float]]]:
        """Per vector, (sha256, cosine) of stored points with cosine ≥ threshold, best first."""
        if self.dim(name) is None:
            return [[] for _ in vectors]
        with self._access():
            if self.local:
                return self._accelerator(name).search(vectors, threshold, limit)
            responses = self.client.query_batch_points(
                name,
                requests=[
                    models.QueryRequest(
                        query=v.tolist(), limit=limit, score_threshold=threshold, with_payload=True
                    )
                    for v in vectors
                ],
            )
        return [
            [(str((p.payload or {})["sha256"]), float(p.score)) for p in response.points]
            for response in responses
        ]

    def upsert(
        self, name: str, sha256s: list[str], vectors: Matrix, extra: list[dict[str, Any]]
    ) -> None:
        now = time.time()
        payloads = [
            {"sha256": s, "inserted_at": now, **e} for s, e in zip(sha256s, extra, strict=True)
        ]
        with self._access():
            self.client.upsert(
                name,
                points=models.Batch(
                    ids=[point_id(s) for s in sha256s], vectors=vectors.tolist(), payloads=payloads
                ),
                wait=True,
            )
            if self.local:
                self._accelerator(name).upsert(sha256s, vectors)

    def delete(self, name: str, sha256: str) -> bool:
        with self._access():
            found = self.client.retrieve(name, ids=[point_id(sha256)])
            if not found:
                return False
            self.client.delete(
                name, points_selector=models.PointIdsList(points=[point_id(sha256)]), wait=True
            )
            if self.local:
                self._accelerator(name).remove(sha256)
        return True

    def count(self, name: str) -> int:
        with self._access():
            return int(self.client.count(name, exact=True).count)

    def pages(self, name: str) -> Iterator[list[StoredPoint]]:
        """Every point with its vector, a page at a time."""
        offset: Any = None
        while True:
            with self._access():
                points, offset = self.client.scroll(
                    name,
                    limit=self.settings.batch_page_size,
                    offset=offset,
                    with_payload=True,
                    with_vectors=True,
                )
            page = [
                StoredPoint(
                    sha256=str((p.payload or {})["sha256"]),
                    vector=np.asarray(p.vector, dtype=np.float32),
                    inserted_at=float((p.payload or {}).get("inserted_at", 0.0)),
                )
                for p in points
            ]
            if page:
                yield page
            if offset is None:
                return
