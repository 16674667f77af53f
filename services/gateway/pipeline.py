"""What happens to an upload: embed → relevance score → dedup insert-if-unique → record.

The same code runs in arq workers (Redis) and, without Redis, in the gateway's own process.
Every step is idempotent (the image's sha256 names its object, its dedup point and its job),
so a job that is retried, or run again after its worker was killed, rewrites the same records.
A dependency that is down raises `UnavailableError`, and the job is retried later; anything
else wrong with the image is recorded on it as a failure with its reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from services.common.clients import DedupClient, EmbedderClient, FilterClient, ImageReference
from services.common.database import session_scope
from services.common.errors import ServiceError, UnavailableError
from services.common.schemas import DedupInsertRequest, ImageFailure
from services.common.storage import ObjectStore, make_store
from services.gateway.config import GatewaySettings
from services.gateway.tables import ImageRow

logger = logging.getLogger(__name__)


class ImageGone(Exception):
    """The record no longer exists: nothing to process."""


@dataclass
class Pipeline:
    settings: GatewaySettings
    engine: Engine
    store: ObjectStore
    embedder: EmbedderClient
    filter: FilterClient
    dedup: DedupClient

    @classmethod
    def create(cls, settings: GatewaySettings, engine: Engine) -> Pipeline:
        return cls(
            settings=settings,
            engine=engine,
            store=make_store(settings.s3, settings.storage_dir),
            embedder=EmbedderClient(settings.embedder),
            filter=FilterClient(settings.filter),
            dedup=DedupClient(settings.dedup),
        )

    def close(self) -> None:
        for client in (self.embedder, self.filter, self.dedup):
            client.close()

    def _update(self, image_id: str, **fields: object) -> ImageRow:
        with session_scope(self.engine) as session:
            row = session.get(ImageRow, image_id)
            if row is None:
                raise ImageGone(image_id)
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = datetime.now(UTC)
            session.add(row)
            return row

    def _load(self, image_id: str) -> ImageRow:
        with session_scope(self.engine) as session:
            row = session.get(ImageRow, image_id)
        if row is None:
            raise ImageGone(image_id)
        return row

    def process(self, image_id: str, attempt: int, final_attempt: bool) -> str:
        """Runs the pipeline for one image; returns the status it ends in."""
        row = self._load(image_id)
        if row.status in ("done", "failed"):
            return row.status
        self._update(image_id, status="processing", attempts=attempt)
        try:
            return self._run(row)
        except UnavailableError as exc:
            if final_attempt:
                self._update(
                    image_id, status="failed", error=f"gave up after {attempt} tries: {exc.message}"
                )
                return "failed"
            self._update(image_id, status="queued", error=f"retrying: {exc.message}")
            raise
        except ServiceError as exc:
            self._update(image_id, status="failed", error=f"{exc.code}: {exc.message}")
            return "failed"

    def _run(self, row: ImageRow) -> str:
        pipeline = self.settings.pipeline
        data = self.store.get(row.id)
        embedded = self.embedder.embed([ImageReference(data=data)])[0]
        if isinstance(embedded, ImageFailure):
            raise ServiceError(422, embedded.error.code, embedded.error.message)
        notes: list[str] = []
        relevance: dict[str, object] = {}
        try:
            scored = self.filter.score(pipeline.reference_set, [embedded.embedding], embedded.model)
            result = scored.results[0]
            relevance = {
                "score": result.score,
                "tier": result.tier,
                "accepted": result.accepted,
                "best_country": result.best_country,
            }
        except ServiceError as exc:
            if isinstance(exc, UnavailableError):
                raise
            # No usable reference set yet: the image is kept, unscored, and says why.
            notes.append(f"relevance not scored: {exc.code}: {exc.message}")
        outcome = self.dedup.insert(
            DedupInsertRequest(
                id=row.id,
                namespace=pipeline.dedup_namespace,
                model=embedded.model,
                vector=embedded.embedding,
                phash=embedded.phash,
            )
        )
        duplicate_of = outcome.duplicate_of.id if outcome.duplicate_of else None
        self._update(
            row.id,
            status="done",
            model=embedded.model,
            duplicate_of=duplicate_of,
            notes="; ".join(notes) or None,
            error=None,
            **relevance,
        )
        logger.info(
            "image %s done: tier %s, duplicate of %s", row.id, relevance.get("tier"), duplicate_of
        )
        return "done"
