"""The dedup service's settings: `SEAVL_DEDUP_…` (and `DATABASE_URL`, `QDRANT_URL`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from services.common.database import database_url_setting
from services.common.settings import (
    DEFAULT_DATA_DIR,
    SeavlSettings,
    ServerSettings,
    service_settings_config,
)

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
    qdrant_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SEAVL_DEDUP_QDRANT_URL", "QDRANT_URL"),
        description="a Qdrant server; Qdrant's local mode in qdrant_path when absent",
    )
    qdrant_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("SEAVL_DEDUP_QDRANT_API_KEY", "QDRANT_API_KEY")
    )
    qdrant_path: Path = DEFAULT_DATA_DIR / "qdrant"
    qdrant_timeout_seconds: float = Field(default=10.0, gt=0)
    thresholds: dict[str, float] = Field(default_factory=lambda: dict(PAPER_THRESHOLDS))
    fallback_threshold: float = Field(default=0.95, gt=0, le=1)
    max_hamming: int = Field(default=16, ge=0, le=64, description="pHash near-duplicate distance")
    max_neighbours: int = Field(default=10, ge=1, le=1000)
    max_vectors_per_request: int = Field(default=1024, ge=1)
    simhash_bits: int = Field(
        default=512, ge=64, le=4096, description="local mode: bits of the SimHash prefilter"
    )
    simhash_miss_probability: float = Field(
        default=1e-9,
        gt=0,
        lt=1,
        description="local mode: chance a true neighbour is not a candidate",
    )
    batch_page_size: int = Field(default=512, ge=1)

    def threshold_for(self, model: str) -> float:
        return self.thresholds.get(model, self.fallback_threshold)
