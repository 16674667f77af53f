"""`seavl dedup reindex`: a namespace's dedup store rebuilt from the stored images.

Needed when the vector itself changes (another encoder, or the same name with new weights);
a change of threshold or method needs none (services/common/dedup_rules.py). The images are
embedded again by key, in upload order, and inserted as the pipeline inserted them, so each
one's `duplicate_of` is what the pipeline would decide today; the records are updated to it.

Uploads processed during the rebuild are compared with the part rebuilt so far: run it with
the workers stopped, or run it again after. An interrupted rebuild is finished by running it
again (it starts from an empty collection each time)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from services.common.clients import DedupClient, EmbedderClient
from services.common.schemas import (
    DedupInsertBatch,
    DedupInsertRequest,
    EmbeddedImage,
    ImageFailure,
    ImageInput,
)
from services.gateway import records
from services.gateway.config import GatewaySettings
from services.gateway.records import UploadPosition

logger = logging.getLogger(__name__)


@dataclass
class Rebuilt:
    """What a rebuild did: images inserted again, found to be duplicates, and not readable."""

    namespace: str
    model: str | None = None
    dropped: int = 0
    kept: int = 0
    duplicates: int = 0
    changed: int = 0
    unreadable: list[str] = field(default_factory=list)


@dataclass
class Reindex:
    engine: Engine
    embedder: EmbedderClient
    dedup: DedupClient
    namespace: str
    crowd_namespace: str
    batch_size: int

    @classmethod
    def create(
        cls, settings: GatewaySettings, engine: Engine, namespace: str | None, batch_size: int
    ) -> Reindex:
        crowd = settings.pipeline.dedup_namespace
        return cls(
            engine,
            EmbedderClient(settings.embedder),
            DedupClient(settings.dedup),
            namespace or crowd,
            crowd,
            batch_size,
        )

    async def close(self) -> None:
        await self.embedder.close()
        await self.dedup.close()

    def total(self) -> int:
        return records.count_in_dedup_namespace(self.engine, self.namespace, self.crowd_namespace)

    async def run(self, advance: Callable[[int], None]) -> Rebuilt:
        """Rebuilds the namespace's collection of the embedder's model; `advance(n)` after
        every n images."""
        rebuilt = Rebuilt(self.namespace)
        after: UploadPosition | None = None
        while True:
            batch = await asyncio.to_thread(
                records.in_dedup_namespace_after,
                self.engine,
                self.namespace,
                self.crowd_namespace,
                after,
                self.batch_size,
            )
            if not batch:
                return rebuilt
            after = batch[-1]
            await self._rebuild_batch(batch, rebuilt)
            advance(len(batch))

    async def _rebuild_batch(self, batch: list[UploadPosition], rebuilt: Rebuilt) -> None:
        results = await self.embedder.embed([ImageInput(key=p.image_id) for p in batch])
        embedded: list[tuple[str, EmbeddedImage]] = []
        for position, result in zip(batch, results, strict=True):
            if isinstance(result, ImageFailure):
                reason = result.error.message
                logger.warning("image %s not reindexed: %s", position.image_id, reason)
                rebuilt.unreadable.append(position.image_id)
            else:
                embedded.append((position.image_id, result))
        if not embedded:
            return
        if rebuilt.model is None:  # the first batch names the model whose collection is rebuilt
            rebuilt.model = embedded[0][1].model
            dropped = await self.dedup.drop_collection(self.namespace, rebuilt.model)
            rebuilt.dropped = dropped.points if dropped is not None else 0
        answer = await self.dedup.insert_batch(
            DedupInsertBatch(
                items=[
                    DedupInsertRequest(
                        id=image_id,
                        namespace=self.namespace,
                        model=e.model,
                        vector=e.embedding,
                        phash=e.phash,
                        stored=True,
                    )
                    for image_id, e in embedded
                ]
            )
        )
        decided = {
            image_id: (r.duplicate_of.id if r.duplicate_of else None)
            for (image_id, _), r in zip(embedded, answer.results, strict=True)
        }
        before = await asyncio.to_thread(records.duplicates_of, self.engine, list(decided))
        rebuilt.changed += sum(1 for i, d in decided.items() if before.get(i, d) != d)
        rebuilt.duplicates += sum(1 for d in decided.values() if d is not None)
        rebuilt.kept += sum(1 for d in decided.values() if d is None)
        await asyncio.to_thread(records.set_duplicates, self.engine, decided)
