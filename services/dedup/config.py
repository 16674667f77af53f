"""The dedup service's settings: `SEAVL_DEDUP_…` (and `DATABASE_URL`, `QDRANT_URL`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from services.common.database import database_url_setting, schema_wait_setting
from services.common.settings import (
    DEFAULT_DATA_DIR,
    SeavlSettings,
    ServerSettings,
    service_settings_config,
)
from services.common.vectors import MAX_DIMENSION

DEDUP_PORT = 8003

# Cosine at or above which two images are near-duplicates, per embedder model. The paper's values
# for its encoders; the default model's is measured (README, "Choosing the default model's ε").
PAPER_THRESHOLDS = {
    "nomic-embed-vision-v1.5": 0.95,
    "clip-vit-b-32": 0.95,
    "siglip-base-224": 0.85,
    "siglip-base-384": 0.85,
    "efficientnet-lite0": 0.90,
}


class DedupSettings(SeavlSettings):
    model_config = service_settings_config("dedup")

    server: ServerSettings = ServerSettings(port=DEDUP_PORT)
    database_url: str = database_url_setting("dedup")
    schema_wait_seconds: float = schema_wait_setting()
    qdrant_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SEAVL_DEDUP_QDRANT_URL", "QDRANT_URL"),
        description="a Qdrant server, for several dedup processes; the embedded store when absent",
    )
    qdrant_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("SEAVL_DEDUP_QDRANT_API_KEY", "QDRANT_API_KEY")
    )
    qdrant_path: Path = Field(
        default=DEFAULT_DATA_DIR / "qdrant",
        description="the embedded vector store's folder (without qdrant_url); one process each",
    )
    qdrant_timeout_seconds: float = Field(default=10.0, gt=0)
    thresholds: dict[str, float] = Field(default_factory=lambda: dict(PAPER_THRESHOLDS))
    fallback_threshold: float = Field(default=0.95, gt=0, le=1)
    max_hamming: int = Field(default=16, ge=0, le=64, description="pHash near-duplicate distance")
    max_neighbours: int = Field(default=10, ge=1, le=1000)
    max_vectors_per_request: int = Field(default=1024, ge=1)
    max_dimensions: int = Field(
        default=4096,
        ge=1,
        le=MAX_DIMENSION,
        description="longest vector accepted; embedders in use have 512 to 4096 dimensions",
    )
    max_collections: int = Field(
        default=32,
        ge=1,
        description="namespace and model pairs stored; each new model name makes an index",
    )
    max_request_bytes: int = Field(
        default=32 * 1024 * 1024,
        gt=0,
        description="a whole request body; refused with 413 while it streams in (1024 vectors "
        "of 1280 numbers as JSON are about 26 MB)",
    )
    # The embedded store's HNSW graph (usearch), over random-hyperplane codes of the vectors
    index_bits: int = Field(
        default=1024, ge=64, le=8192, multiple_of=64, description="bits of a vector's code"
    )
    index_connectivity: int = Field(default=16, ge=4, le=128, description="HNSW edges per node")
    index_expansion_add: int = Field(default=128, ge=8, description="HNSW search depth on insert")
    index_expansion_search: int = Field(
        default=512,
        ge=8,
        description="HNSW search depth on query; near-copies missed at 1M points (of 1000): "
        "41 at 128, 4 at 256, none at 384 or 512 (0.8 ms a near-copy search in process, 1.6 ms "
        "one with no neighbour)",
    )
    index_exact_below: int = Field(
        default=50_000,
        ge=0,
        description="collections smaller than this are searched by a scan of every code "
        "(0.9 ms at 50k) instead of the graph",
    )
    index_candidates: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="nearest codes per query; those within the code distance bound of the "
        "threshold have their exact cosine read",
    )
    snapshot_every: int = Field(
        default=10_000,
        ge=1,
        description="points written between saves of a graph; the ones after it are re-added "
        "at start-up",
    )
    batch_page_size: int = Field(default=512, ge=1)

    def threshold_for(self, model: str) -> float:
        return self.thresholds.get(model, self.fallback_threshold)
