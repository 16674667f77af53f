"""The filter's settings: `SEAVL_FILTER_…` (and `DATABASE_URL`), nested with `__`."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from services.common.clients import ServiceClientSettings
from services.common.database import database_url_setting, schema_wait_setting
from services.common.settings import SeavlSettings, ServerSettings, service_settings_config

FILTER_PORT = 8002


class TierThresholds(BaseModel):
    """Lower bounds of each tier on the relevance score; below bronze is rejected.

    The defaults are the SEA-VL paper's (scores x100: 51.5, 52.5, 53.5, 54.5, 55.5); a cosine
    means different things for different encoders, so each model can have its own.
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


class FilterSettings(SeavlSettings):
    model_config = service_settings_config("filter")

    server: ServerSettings = ServerSettings(port=FILTER_PORT)
    database_url: str = database_url_setting("filter")
    schema_wait_seconds: float = schema_wait_setting()
    embedder: ServiceClientSettings = ServiceClientSettings(url="http://127.0.0.1:8001")
    default_tiers: TierThresholds = TierThresholds()
    model_tiers: dict[str, TierThresholds] = Field(
        default_factory=dict, description="per-model thresholds, by embedder model name"
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
