"""Where embeddings live: one interface, a Qdrant server or the embedded store behind it.

One collection per namespace and model, cosine similarity, created on first insert. The server
(compose, k8s: `QDRANT_URL`) serves any number of dedup replicas; the embedded store
(`services.dedup.embedded`, the default) serves one process. A point's id in Qdrant is a UUID
derived from the image's sha256, so re-inserting an image rewrites the same point.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import numpy as np
import numpy.typing as npt
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from services.common.errors import ServiceError, UnavailableError
from services.dedup.config import DedupSettings

Matrix = npt.NDArray[np.float32]


def point_id(sha256: str) -> str:
    """The Qdrant id of an image: its sha256's first 128 bits as a UUID."""
    return str(uuid.UUID(hex=sha256[:32]))


@dataclass(frozen=True)
class StoredPoint:
    sha256: str
    vector: Matrix
    inserted_at: float


def dimension_mismatch(name: str, held: int | None, given: int) -> ServiceError:
    """A collection holds vectors of one dimension, fixed by its first."""
    return ServiceError(
        422,
        "dimension_mismatch",
        f"collection {name} holds {held}-d vectors; got {given}-d",
        field="vectors",
    )


def too_many_collections(limit: int) -> ServiceError:
    """Each collection holds an index: their number is bounded, whoever names new models."""
    return ServiceError(
        409,
        "too_many_collections",
        f"the dedup service holds its limit of {limit} collections (namespace and model pairs):"
        " use a model already stored, or raise SEAVL_DEDUP_MAX_COLLECTIONS",
        field="model",
    )


class VectorStore(Protocol):
    """What the deduplicator needs of a vector index; exact cosine scores in every answer."""

    def collections(self) -> list[str]: ...

    def dim(self, name: str) -> int | None:
        """The collection's vector size, or None if it does not exist."""
        ...

    def ensure(self, name: str, dim: int) -> None:
        """Creates the collection if needed (within the bound); refuses another dimension."""
        ...

    def search(
        self, name: str, vectors: Matrix, threshold: float, limit: int
    ) -> list[list[tuple[str, float]]]:
        """Per vector, (sha256, cosine) of stored points with cosine ≥ threshold, best first."""
        ...

    def upsert(
        self, name: str, sha256s: list[str], vectors: Matrix, extra: list[dict[str, Any]]
    ) -> None:
        """Written when it returns: the next search sees the points."""
        ...

    def delete(self, name: str, sha256: str) -> bool: ...

    def drop(self, name: str) -> bool:
        """Forgets the collection and its points (`seavl dedup reindex` rebuilds it); False if
        it did not exist."""
        ...

    def count(self, name: str) -> int: ...

    def pages(self, name: str) -> Iterator[list[StoredPoint]]:
        """Every point with its vector, a page at a time."""
        ...

    def close(self) -> None: ...


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


class QdrantServerStore:
    """A Qdrant server shared by every dedup replica (its own HNSW index, its own storage)."""

    def __init__(self, settings: DedupSettings) -> None:
        assert settings.qdrant_url is not None
        self.settings = settings
        self.client = QdrantClient(
            url=settings.qdrant_url,
            api_key=settings.qdrant_api_key,
            timeout=int(settings.qdrant_timeout_seconds),
            # /readyz reports reachability; a version probe at start-up would only warn
            check_compatibility=False,
        )
        self._dims: dict[str, int] = {}

    def close(self) -> None:
        self.client.close()

    def collections(self) -> list[str]:
        with qdrant_errors():
            return sorted(c.name for c in self.client.get_collections().collections)

    def dim(self, name: str) -> int | None:
        if name in self._dims:
            return self._dims[name]
        with qdrant_errors():
            if not self.client.collection_exists(name):
                return None
            params = self.client.get_collection(name).config.params.vectors
            assert isinstance(params, models.VectorParams)
            self._dims[name] = int(params.size)
        return self._dims[name]

    def ensure(self, name: str, dim: int) -> None:
        existing = self.dim(name)
        if existing is None:
            # replicas creating different models at once may pass the bound together: it holds
            # to within the number of replicas
            if len(self.collections()) >= self.settings.max_collections:
                raise too_many_collections(self.settings.max_collections)
            with qdrant_errors():
                try:
                    self.client.create_collection(
                        name,
                        vectors_config=models.VectorParams(
                            size=dim, distance=models.Distance.COSINE
                        ),
                    )
                except UnexpectedResponse:
                    if not self.client.collection_exists(name):  # not just a concurrent creation
                        raise
            existing = self.dim(name)
        if existing != dim:
            raise dimension_mismatch(name, existing, dim)

    def search(
        self, name: str, vectors: Matrix, threshold: float, limit: int
    ) -> list[list[tuple[str, float]]]:
        if self.dim(name) is None:
            return [[] for _ in vectors]
        with qdrant_errors():
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
        with qdrant_errors():
            self.client.upsert(
                name,
                points=models.Batch(
                    ids=[point_id(s) for s in sha256s], vectors=vectors.tolist(), payloads=payloads
                ),
                wait=True,
            )

    def delete(self, name: str, sha256: str) -> bool:
        with qdrant_errors():
            found = self.client.retrieve(name, ids=[point_id(sha256)])
            if not found:
                return False
            self.client.delete(
                name, points_selector=models.PointIdsList(points=[point_id(sha256)]), wait=True
            )
        return True

    def drop(self, name: str) -> bool:
        self._dims.pop(name, None)
        with qdrant_errors():
            return bool(self.client.delete_collection(name))

    def count(self, name: str) -> int:
        with qdrant_errors():
            return int(self.client.count(name, exact=True).count)

    def pages(self, name: str) -> Iterator[list[StoredPoint]]:
        offset: Any = None
        while True:
            with qdrant_errors():
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
