"""The captioner's settings: `SEAVL_CAPTIONER_…`, nested with `__`."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from services.common.clients import ServiceClientSettings
from services.common.images import ImageLimits
from services.common.settings import (
    SeavlSettings,
    ServerSettings,
    service_settings_config,
)
from services.common.storage import StorageSettings, storage_setting

CAPTIONER_PORT = 8004


class BackendName(StrEnum):
    OFFLINE_LABELS = "offline-labels"
    OPENAI_COMPATIBLE = "openai-compatible"


class VlmSettings(BaseModel):
    """An OpenAI-compatible chat-completions server that takes images (vLLM, Ollama, TGI, …)."""

    base_url: str = Field(default="http://127.0.0.1:8000/v1", description="up to and including /v1")
    model: str = Field(default="Qwen/Qwen2-VL-7B-Instruct", description="as the server names it")
    api_key: SecretStr | None = Field(default=None, description="sent as a Bearer token if set")
    timeout_seconds: float = Field(default=120.0, gt=0, description="one completion, at most")
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    max_tokens: int = Field(default=512, ge=16, description="room for 3-5 sentences, any script")
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="server-specific fields added to each request, e.g. vLLM's top_k",
    )


class LanguageCheckSettings(BaseModel):
    """When a caption's detected language is trusted. One sentence of Malay splits lingua's
    confidence about 0.55 / 0.45 with Indonesian; three sentences in one language score > 0.8."""

    min_confidence: float = Field(
        default=0.5, gt=0, le=1, description="below this confidence the language is unknown"
    )
    min_words: int = Field(
        default=3,
        ge=1,
        description="Latin-script words left once item and place names are masked; with fewer "
        "the language is unknown (Latin-script languages share too many words to tell)",
    )
    close_language_margin: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Malay asked and Indonesian detected, or the reverse, is accepted when the "
        "two confidences differ by less than this",
    )


class CaptionerSettings(SeavlSettings):
    model_config = service_settings_config("captioner")

    server: ServerSettings = ServerSettings(port=CAPTIONER_PORT)
    storage: StorageSettings = storage_setting()
    backend: BackendName = BackendName.OFFLINE_LABELS
    vlm: VlmSettings = VlmSettings()
    embedder: ServiceClientSettings = Field(
        default=ServiceClientSettings(url="http://127.0.0.1:8001"),
        description="the offline-labels backend asks it for the image's ImageNet labels",
    )
    offline_top_k: int = Field(
        default=3, ge=1, le=10, description="labels an offline caption names"
    )
    offline_min_score: float = Field(
        default=0.05, ge=0, le=1, description="labels less likely than this are left out"
    )
    request_timeout_seconds: float = Field(
        default=150.0, gt=0, description="a synchronous caption request, whole, at most"
    )
    images: ImageLimits = ImageLimits()
    language_check: LanguageCheckSettings = LanguageCheckSettings()
