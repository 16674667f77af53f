"""Settings pieces every service shares; each service has one pydantic-settings class of its own."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

DEFAULT_DATA_DIR = Path("var")


def service_settings_config(prefix: str) -> SettingsConfigDict:
    """`SEAVL_<SERVICE>_…` variables, nested with `__`, and an optional `.env` file."""
    return SettingsConfigDict(
        env_prefix=f"SEAVL_{prefix.upper()}_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )


class ServerSettings(BaseModel):
    """Where a service listens; `make run` keeps it on loopback."""

    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    log_level: str = "info"
