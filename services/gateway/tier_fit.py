"""`seavl tiers fit SET --from …`: a set's `shares` boundaries fitted on a background sample.

The sample is what the set's tiers should be shares of: the images already stored in a dedup
namespace (embedded again by key), the first shards of a crawl's source, or a folder (or
`s3://` prefix) of images or img2dataset output. Each image is embedded with the set's model
and scored against the set; the filter turns the scores into boundaries at the configured
shares and records them as a new version. The scores are checked against the set's
references: if they change meanwhile the filter refuses the fit (409) and nothing changes.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.common.clients import EmbedderClient, FilterClient
from services.common.errors import ServiceError
from services.common.reference_sets import FitTiersRequest, TierBoundariesOut
from services.common.schemas import ImageFailure, ImageInput
from services.common.tiers import TierShares, TierSource
from services.gateway import records
from services.gateway.config import GatewaySettings
from services.gateway.crawl_sources import CrawlSample, iter_samples, list_shards
from services.gateway.tables import CrawlRow

NAMESPACE_PREFIX = "namespace:"
CRAWL_PREFIX = "crawl:"


@dataclass(frozen=True)
class Background:
    """Where the sample comes from, and the images it holds (at most `limit`)."""

    description: str
    total: int | None  # None: not known before reading
    images: Iterator[ImageInput]


@dataclass
class Fitted:
    tiers: TierBoundariesOut
    scored: int = 0
    unreadable: list[str] = field(default_factory=list)


def _stored(engine: Engine, namespace: str, crowd: str, limit: int) -> Background:
    positions = records.in_dedup_namespace_after(engine, namespace, crowd, None, limit)
    return Background(
        f"{len(positions)} stored images of dedup namespace {namespace!r}",
        len(positions),
        iter(ImageInput(key=position.image_id) for position in positions),
    )


def _source_images(
    source: str, settings: GatewaySettings, shards: int | None, limit: int
) -> Iterator[ImageInput]:
    s3 = settings.storage.s3
    refs = list_shards(source, s3, settings.crawl.folder_shard_size)
    samples = itertools.chain.from_iterable(
        iter_samples(ref, s3, settings.crawl.folder_shard_size) for ref in refs[:shards]
    )
    readable = (s for s in samples if isinstance(s, CrawlSample))
    return (ImageInput.of_bytes(sample.data) for sample in itertools.islice(readable, limit))


def background(
    source: str, settings: GatewaySettings, engine: Engine, shards: int | None, limit: int
) -> Background:
    """The sample `--from` names: `namespace:NS`, `crawl:ID` (its source's first `shards`
    shards) or a folder / `s3://` prefix."""
    if source.startswith(NAMESPACE_PREFIX):
        namespace = source.removeprefix(NAMESPACE_PREFIX)
        return _stored(engine, namespace, settings.pipeline.dedup_namespace, limit)
    described = source
    if source.startswith(CRAWL_PREFIX):  # what the crawl read
        crawl_id = source.removeprefix(CRAWL_PREFIX)
        with Session(engine) as session:
            crawl = session.get(CrawlRow, crawl_id)
        if crawl is None:
            raise ServiceError(404, "unknown_crawl", f"no crawl {crawl_id!r}", field="from")
        source, described = crawl.source, f"crawl {crawl_id}'s source {crawl.source}"
    first = f"the first {shards} shards of " if shards else ""
    return Background(f"{first}{described}", None, _source_images(source, settings, shards, limit))


@dataclass
class TierFit:
    embedder: EmbedderClient
    filter: FilterClient
    batch_size: int

    @classmethod
    def create(cls, settings: GatewaySettings, batch_size: int) -> TierFit:
        return cls(EmbedderClient(settings.embedder), FilterClient(settings.filter), batch_size)

    async def close(self) -> None:
        await self.embedder.close()
        await self.filter.close()

    async def run(
        self,
        name: str,
        sample: Background,
        shares: TierShares | None,
        advance: Callable[[int], None],
    ) -> Fitted:
        """Scores the sample against the set in batches (`advance(n)` after each), then asks
        the filter for the boundaries."""
        info = await self.filter.get_set(name)
        scores: list[float] = []
        unreadable: list[str] = []
        while batch := await asyncio.to_thread(
            lambda: list(itertools.islice(sample.images, self.batch_size))
        ):
            results = await self.embedder.embed(batch, model=info.model)
            vectors = []
            for image, result in zip(batch, results, strict=True):
                if isinstance(result, ImageFailure):
                    unreadable.append(f"{image.key or 'an image'}: {result.error.message}")
                else:
                    vectors.append(result.embedding)
            if vectors:
                answer = await self.filter.score(name, vectors, info.model)
                if answer.references_version != info.references_version:
                    raise ServiceError(
                        409,
                        "references_changed",
                        f"set {name!r}'s references changed while the sample was scored: "
                        "run the fit again",
                    )
                scores.extend(result.score for result in answer.results)
            advance(len(batch))
        request = FitTiersRequest(
            source=TierSource.SHARES,
            shares=shares,
            scores=scores,
            references_version=info.references_version,
            description=f"fitted on {len(scores)} images: {sample.description}"[:500],
        )
        return Fitted(await self.filter.fit_tiers(name, request), len(scores), unreadable)
