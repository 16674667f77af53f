"""The gateway's settings: `SEAVL_GATEWAY_…`, and the usual `DATABASE_URL` and `REDIS_URL`."""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, Field

from services.common.clients import ServiceClientSettings
from services.common.database import (
    DatabasePool,
    database_pool_setting,
    database_url_setting,
    schema_wait_setting,
)
from services.common.images import ImageLimits
from services.common.privacy import PiiKind
from services.common.settings import (
    SeavlSettings,
    ServerSettings,
    service_settings_config,
)
from services.common.storage import StorageSettings, storage_setting
from services.common.worker_alive import DEFAULT_HEARTBEAT_FILE, QUEUE_PLACEHOLDER

GATEWAY_PORT = 8000


class PipelineSettings(BaseModel):
    """How each upload is processed: which reference set scores it, where dedup keeps it."""

    reference_set: str = Field(
        default="default", description="filter set every upload is scored on"
    )
    dedup_namespace: str = "default"
    max_tries: int = Field(
        default=5,
        ge=1,
        description="tries of a job that are stopped (past job_timeout_seconds, or its worker "
        "died); a try that finds a dependency down does not count",
    )
    job_timeout_seconds: int = Field(default=300, ge=1)
    retry_window_seconds: float = Field(
        default=1800,
        ge=0,
        description="how long a job waits out a dependency that is down, from the first try "
        "that found it down; then it fails with the reason",
    )
    retry_delay_seconds: float = Field(
        default=2.0, ge=0, description="the first wait before a retry; doubles from there"
    )
    retry_delay_max_seconds: float = Field(default=60.0, ge=0, description="the longest wait")
    reconcile_interval_seconds: float = Field(
        default=60, gt=0, description="how often jobs that were lost are looked for"
    )
    reconcile_grace_seconds: float = Field(
        default=120,
        ge=0,
        description="a record unchanged this long, with no job queued or running, lost its job",
    )
    batch_size: int = Field(
        default=32,
        ge=1,
        description="jobs processed together, at most: each batch costs every service a call, "
        "whatever its size",
    )
    concurrent_batches: int = Field(
        default=2,
        ge=1,
        description="batches in flight at once: one embeds while another is scored and stored",
    )
    batch_wait_ms: float = Field(default=50.0, ge=0, description="how long a job waits for company")
    caption_concurrency: int = Field(
        default=4, ge=1, description="caption jobs waiting on the captioner at once, per process"
    )


class CrawlSettings(BaseModel):
    """How crawl shards are ingested (`POST /v1/crawls`, `seavl crawl ingest`)."""

    batch_size: int = Field(
        default=64, ge=1, le=1024, description="images sent to each service in one call"
    )
    shard_timeout_seconds: int = Field(
        default=3600, ge=1, description="a shard's try is stopped (and tried again) after this"
    )
    shards_at_once: int = Field(
        default=2, ge=1, description="shards one process (a worker, or the gateway) ingests at once"
    )
    folder_shard_size: int = Field(
        default=1000, ge=1, description="images per shard when the source is a plain folder"
    )
    export_timeout_seconds: int = Field(
        default=6 * 3600,
        ge=1,
        description="an export's try is stopped (and tried again) after this",
    )
    roots: list[str] = Field(
        default=["."],
        description="folders local crawl sources and export destinations must lie under (a key "
        "must not reach the server's other files)",
    )


class PeopleSettings(BaseModel):
    """Accounts, sign-in, review and points (the crowdsourcing side of SEA-VL)."""

    session_hours: float = Field(default=14 * 24, gt=0, description="how long a sign-in lasts")
    secure_cookies: bool = Field(
        default=False, description="send the session cookie only over HTTPS (set it behind TLS)"
    )
    password_min_length: int = Field(default=10, ge=8)
    sign_in_attempts: int = Field(
        default=5,
        ge=1,
        description="sign-ins for one email address within the window before the next ones "
        "wait for its end (429); a successful one starts the count over",
    )
    sign_in_window_minutes: float = Field(
        default=15, gt=0, description="the window, from the first sign-in counted"
    )
    review_lease_minutes: float = Field(
        default=15, gt=0, description="how long an image handed to a validator stays theirs"
    )
    points_phase: int = Field(default=2, ge=1, le=2, description="whose point table counts")
    screening_pass_score: float = Field(
        default=0.8, gt=0, le=1, description="share of screening answers right to validate"
    )
    screening_attempts: int = Field(
        default=3, ge=1, description="tries at the screening per account (no guessing it)"
    )


class PrivacySettings(BaseModel):
    """Faces and licence plates found by the embedder in every upload and crawled image."""

    detect: bool = Field(
        default=True,
        description="ask the embedder for faces, plates and an unsafe score before storing",
    )
    blur: list[PiiKind] = Field(
        default=[PiiKind.FACE, PiiKind.PLATE],
        description="what is blurred before the bytes are stored (the original is never "
        "written); empty: found regions are only flagged on the record",
    )
    margin: float = Field(
        default=0.15, ge=0, le=1, description="each blurred box grows by this share per side"
    )


class SafetySettings(BaseModel):
    hold_above: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="an image whose unsafe score is at least this is held for an admin's "
        "review: stored and recorded, never exported or shown to validators",
    )


class WorkerProcessSettings(BaseModel):
    """A worker process's own liveness: a heartbeat file its event loop writes, which a probe
    of that pod alone reads (`python -m services.common.worker_alive`); arq's health key is
    shared by every worker of a queue."""

    heartbeat_file: str = Field(
        default=DEFAULT_HEARTBEAT_FILE,
        min_length=1,
        description=f"where the worker writes its heartbeat; {QUEUE_PLACEHOLDER} becomes its "
        "queue (images, captions, crawls, exports)",
    )
    heartbeat_seconds: float = Field(
        default=10, gt=0, description="how often; a probe allows several missed beats"
    )


class GatewaySettings(SeavlSettings):
    model_config = service_settings_config("gateway")

    server: ServerSettings = ServerSettings(port=GATEWAY_PORT)
    storage: StorageSettings = storage_setting()
    database_url: str = database_url_setting("gateway")
    database_pool: DatabasePool = database_pool_setting()
    schema_wait_seconds: float = schema_wait_setting()
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SEAVL_GATEWAY_REDIS_URL", "REDIS_URL"),
        description="arq queue; jobs run in the gateway's own process when absent",
    )
    embedder: ServiceClientSettings = ServiceClientSettings(url="http://127.0.0.1:8001")
    filter: ServiceClientSettings = ServiceClientSettings(url="http://127.0.0.1:8002")
    dedup: ServiceClientSettings = ServiceClientSettings(url="http://127.0.0.1:8003")
    captioner: ServiceClientSettings | None = Field(
        # one attempt: a failed caption job is retried by the queue, with its own backoff
        default=ServiceClientSettings(url="http://127.0.0.1:8004", timeout_seconds=180, attempts=1),
        description="null: no captions (uploads asking for one are refused)",
    )
    images: ImageLimits = ImageLimits()
    pipeline: PipelineSettings = PipelineSettings()
    crawl: CrawlSettings = CrawlSettings()
    people: PeopleSettings = PeopleSettings()
    privacy: PrivacySettings = PrivacySettings()
    safety: SafetySettings = SafetySettings()
    worker: WorkerProcessSettings = WorkerProcessSettings()
    max_page_size: int = Field(default=100, ge=1)
    key_remember_seconds: float = Field(
        default=10,
        ge=0,
        description="how long a valid API key is trusted without asking the database again "
        "(a key revoked meanwhile works until then); 0 checks every request",
    )
    metadata_allowance_bytes: int = Field(
        default=256 * 1024, ge=0, description="room for form fields beside the image in an upload"
    )
