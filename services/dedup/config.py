"""The dedup service's settings: `SEAVL_DEDUP_…` (and `DATABASE_URL`, `QDRANT_URL`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field

from services.common.database import (
    DatabasePool,
    database_pool_setting,
    database_url_setting,
    schema_wait_setting,
)
from services.common.dedup_rules import DEDUP_RULES, DedupRule
from services.common.settings import (
    DEFAULT_DATA_DIR,
    SeavlSettings,
    ServerSettings,
    service_settings_config,
)
from services.common.storage import StorageSettings, storage_setting
from services.common.vectors import MAX_DIMENSION

DEDUP_PORT = 8003


class VerificationSettings(BaseModel):
    """The pixel check of near candidates (`SEAVL_DEDUP_VERIFICATION__…`,
    services/dedup/verification.py)."""

    enabled: bool = Field(
        default=True, description="verify candidates on their pixels when the images are stored"
    )
    long_side: int = Field(default=256, ge=64, le=2048, description="grey image size compared")
    keypoints: int = Field(default=300, ge=50, le=5000, description="ORB keypoints per image")
    min_keypoints: int = Field(
        default=40, ge=8, description="fewer on either image: no verdict (flat images)"
    )
    min_inliers: int = Field(
        default=12, ge=4, description="matches the fitted transform must explain"
    )
    min_agreement: float = Field(
        default=0.85,
        gt=0,
        le=1,
        description="median correlation of the aligned tiles for a copy (a stereo camera's two "
        "frames of one scene reach 0.80; most copies 0.95 and more)",
    )
    max_candidates: int = Field(
        default=1,
        ge=1,
        le=32,
        description="nearest candidates checked per image (each costs a few ms of CPU; the "
        "original is the nearest for all but a few of the benchmark's copies)",
    )
    cached_images: int = Field(
        default=1024,
        ge=0,
        description="stored images whose features are kept in memory (about 60 KB each)",
    )
    mirror_from: float = Field(
        default=0.7,
        gt=0,
        le=1,
        description="cosine from which a candidate is also compared mirrored (a mirrored copy "
        "keeps its embedding: the model is nearly blind to flips)",
    )


class DedupSettings(SeavlSettings):
    model_config = service_settings_config("dedup")

    server: ServerSettings = ServerSettings(port=DEDUP_PORT)
    database_url: str = database_url_setting("dedup")
    database_pool: DatabasePool = database_pool_setting()
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
    # ε and the candidate threshold per model: services/common/dedup_rules.py's by default
    thresholds: dict[str, float] = Field(
        default_factory=lambda: {model: rule.threshold for model, rule in DEDUP_RULES.items()}
    )
    fallback_threshold: float = Field(default=0.95, gt=0, le=1)
    candidate_thresholds: dict[str, float] = Field(
        default_factory=lambda: {
            model: rule.candidate_threshold
            for model, rule in DEDUP_RULES.items()
            if rule.candidate_threshold is not None
        }
    )
    verification: VerificationSettings = VerificationSettings()
    storage: StorageSettings = storage_setting()
    max_hamming: int = Field(default=16, ge=0, le=64, description="pHash near-duplicate distance")
    max_neighbours: int = Field(default=10, ge=1, le=1000)
    max_vectors_per_request: int = Field(default=1024, ge=1)
    max_images_per_check: int = Field(
        default=16, ge=0, description="images a check may send for the pixel check (a decode each)"
    )
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

    def candidate_threshold_for(self, model: str) -> float:
        """Never above the model's ε: the check only ever looks at more candidates."""
        return min(self.candidate_thresholds.get(model, 1.0), self.threshold_for(model))

    def rule_for(self, model: str) -> DedupRule:
        """The rule in force for `model` (the shared table's, as these settings change it)."""
        return DedupRule(
            threshold=self.threshold_for(model),
            candidate_threshold=self.candidate_threshold_for(model),
        )
