"""Settings pieces every service shares; each service has one pydantic-settings class of its own."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.clients import ServiceClientSettings

DEFAULT_DATA_DIR = Path("var")
SERVICE_TOKEN_VARIABLE = "SEAVL_SERVICE_TOKEN"
MIN_SERVICE_TOKEN_LENGTH = 32
MAKE_A_TOKEN = "python -c 'import secrets; print(secrets.token_hex(32))'"


def service_settings_config(prefix: str) -> SettingsConfigDict:
    """`SEAVL_<SERVICE>_…` variables, nested with `__`, and an optional `.env` file.

    A variable changes one field of a nested default (`SERVER__HOST` keeps the service's port).
    Errors never echo the value given: settings hold passwords and tokens.
    """
    return SettingsConfigDict(
        env_prefix=f"SEAVL_{prefix.upper()}_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
        env_file=".env",
        extra="ignore",
        validate_by_name=True,
        hide_input_in_errors=True,
    )


class ServerSettings(BaseModel):
    """Where a service listens; `make run` keeps it on loopback."""

    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    log_level: str = "info"


def is_loopback(host: str) -> bool:
    """Only this machine can reach `host` (a name other than localhost may resolve anywhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SeavlSettings(BaseSettings):
    """What every service's settings share: where it listens, and the deployment's service token.

    The token is one variable for the whole deployment; every client in the settings is given it,
    so the calls a service (or a worker) makes to its peers carry it.
    """

    server: ServerSettings
    service_token: SecretStr | None = Field(
        default=None,
        validation_alias=SERVICE_TOKEN_VARIABLE,
        description="the deployment's secret for calls between services; internal services "
        "refuse calls without it, and refuse to listen beyond loopback when it is not set",
    )

    @field_validator("service_token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < MIN_SERVICE_TOKEN_LENGTH:
            raise ValueError(
                f"{SERVICE_TOKEN_VARIABLE} must be at least {MIN_SERVICE_TOKEN_LENGTH} "
                f"characters (make one with: {MAKE_A_TOKEN})"
            )
        return token

    @model_validator(mode="after")
    def _clients_carry_the_token(self) -> Self:
        for name in type(self).model_fields:
            client = getattr(self, name)
            if isinstance(client, ServiceClientSettings):
                setattr(self, name, client.model_copy(update={"token": self.service_token}))
        return self
