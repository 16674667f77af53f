"""The filter's settings: `SEAVL_FILTER_…` (and `DATABASE_URL`), nested with `__`."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from services.common.clients import ServiceClientSettings
from services.common.database import (
    DatabasePool,
    database_pool_setting,
    database_url_setting,
    schema_wait_setting,
)
from services.common.settings import SeavlSettings, ServerSettings, service_settings_config
from services.common.tiers import (
    MODEL_DIRECTION_DEFAULTS,
    Boundaries,
    CalibrationTargets,
    DirectionDefaults,
    TierShares,
)

FILTER_PORT = 8002


class TierThresholds(BaseModel):
    """Fixed lower bounds of each tier on the relevance score (the `paper` source); below
    bronze is rejected.

    The defaults are the SEA-VL paper's (scores x100: 51.5, 52.5, 53.5, 54.5, 55.5), for its
    CLIP-family encoders; a cosine means different things for different encoders, so each model
    can have its own.
    """

    bronze: float = 0.515
    silver: float = 0.525
    gold: float = 0.535
    platinum: float = 0.545
    diamond: float = 0.555
    rho: float = Field(default=0.545, description="accept at or above (the paper kept Platinum+)")

    @model_validator(mode="after")
    def _increasing(self) -> TierThresholds:
        bounds = [self.bronze, self.silver, self.gold, self.platinum, self.diamond]
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ValueError("tier thresholds must increase from bronze to diamond")
        return self

    def boundaries(self) -> Boundaries:
        return Boundaries(
            bronze=self.bronze,
            silver=self.silver,
            gold=self.gold,
            platinum=self.platinum,
            diamond=self.diamond,
        )


class FilterSettings(SeavlSettings):
    model_config = service_settings_config("filter")

    server: ServerSettings = ServerSettings(port=FILTER_PORT)
    database_url: str = database_url_setting("filter")
    database_pool: DatabasePool = database_pool_setting()
    schema_wait_seconds: float = schema_wait_setting()
    embedder: ServiceClientSettings = ServiceClientSettings(url="http://127.0.0.1:8001")
    default_tiers: TierThresholds = TierThresholds()
    model_tiers: dict[str, TierThresholds] = Field(
        default_factory=dict, description="per-model fixed thresholds, by embedder model name"
    )
    model_shares_defaults: dict[str, DirectionDefaults] = Field(
        default_factory=lambda: dict(MODEL_DIRECTION_DEFAULTS),
        description="models whose sets start on `shares` boundaries before any fit: bounds on "
        "the cosine to the centroid's direction, measured by bench/tier_defaults.py",
    )
    tier_shares: TierShares = Field(
        default_factory=TierShares, description="each tier's share of a crawl (`shares` fits)"
    )
    calibration_targets: CalibrationTargets = Field(
        default_factory=CalibrationTargets,
        description="precision at or above each tier (`calibrated` fits)",
    )
    max_vectors_per_request: int = Field(default=1024, ge=1)
    max_references_per_request: int = Field(default=1024, ge=1)
    max_calibration_samples: int = Field(default=10_000, ge=1)
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description="a whole request body; refused with 413 while it streams in",
    )

    def tiers_for(self, model: str) -> TierThresholds:
        return self.model_tiers.get(model, self.default_tiers)

    def shares_default_for(self, model: str) -> DirectionDefaults | None:
        """The model's starting `shares` boundaries; a model with fixed thresholds configured
        in `model_tiers` starts on those instead."""
        if model in self.model_tiers:
            return None
        return self.model_shares_defaults.get(model)
