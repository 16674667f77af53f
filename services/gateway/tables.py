"""The gateway's SQL tables: API keys (hashed), images with every result of their pipeline, and
crawls with their shards (and the small rows of crawled images that were not kept)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import BigInteger, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from services.common.database import utcnow
from services.common.migrations import Schema
from services.common.states import JobStatus


class ApiKeyRow(SQLModel, table=True):
    __tablename__ = "gateway_api_keys"

    id: int | None = Field(default=None, primary_key=True)
    prefix: str = Field(index=True, unique=True, max_length=16)
    key_hash: str = Field(max_length=64)  # sha256 of the whole key: keys are random, not passwords
    role: str = Field(max_length=16)  # a key of an account acts with the account's role instead
    name: str = ""
    revoked: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    account_id: int | None = Field(default=None, index=True, description="None: a service key")


class AccountRow(SQLModel, table=True):
    """A person: contributor, validator or admin, signing in with a password (Argon2id)."""

    __tablename__ = "gateway_accounts"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(index=True, unique=True, max_length=254, description="lower case")
    name: str = Field(max_length=100)
    country: str = Field(max_length=2)
    role: str = Field(max_length=16)
    language: str = Field(default="en", max_length=8, description="of the pages")
    password_hash: str = Field(max_length=256)
    created_at: datetime = Field(default_factory=utcnow)


class SessionRow(SQLModel, table=True):
    """A signed-in browser: the cookie's token is kept as its sha256, with the CSRF token that
    the pages send back on every change."""

    __tablename__ = "gateway_sessions"

    token_hash: str = Field(primary_key=True, max_length=64)
    account_id: int = Field(index=True)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)


class SignInAttemptRow(SQLModel, table=True):
    """Sign-ins tried for one email address, known or not, since `first_at` (a successful one
    clears them): past the allowance, sign-ins for it wait until the window ends (no guessing a
    password at Argon2's pace, and no telling a known address from an unknown one by its
    throttling)."""

    __tablename__ = "gateway_sign_in_attempts"

    email: str = Field(primary_key=True, max_length=254, description="lower case")
    attempts: int = Field(default=0)
    first_at: datetime = Field(index=True)


class ImageRow(SQLModel, table=True):
    """An uploaded image, named by the sha256 of the stored (location-free) bytes."""

    __tablename__ = "gateway_images"

    id: str = Field(primary_key=True, max_length=64)
    status: str = Field(default=JobStatus.QUEUED.value, index=True, max_length=16)
    format: str = Field(max_length=8)
    size_bytes: int
    width: int
    height: int
    phash: str | None = Field(default=None, max_length=16, description="set by the pipeline")
    countries: str = Field(default="", index=True, description="',TH,VN,' for LIKE filters")
    location: str | None = None
    native_language: str | None = Field(default=None, max_length=8)
    caption_native: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    caption_en: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    want_caption: bool = False
    model: str | None = None
    score: float | None = None
    tier: str | None = Field(default=None, index=True, max_length=16)
    # the boundaries the tier was decided by (the set's version), so `seavl tiers retier`
    # finds what an other version would place differently
    reference_set: str | None = Field(default=None, max_length=100)
    tier_source: str | None = Field(default=None, max_length=16, description="TierSource")
    tiers_version: int | None = None
    accepted: bool | None = None
    best_country: str | None = Field(default=None, max_length=2)
    country_scores: str | None = Field(
        default=None, sa_column=Column(Text, nullable=True), description="JSON: country → score"
    )
    duplicate_of: str | None = Field(default=None, index=True, max_length=64)
    notes: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    attempts: int = 0
    uploaded_by: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # where it came from: a person's upload ("crowd") or a crawl, with the crawl's own fields
    source: str = Field(default="crowd", index=True, max_length=8)
    crawl_id: str | None = Field(default=None, index=True, max_length=32)
    shard: str | None = None
    sample_key: str | None = None
    url: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    alt_text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    original_width: int | None = None
    original_height: int | None = None
    license: str | None = Field(default=None, description="the crawl's own; None: CC-BY-SA-4.0")
    # a submission of a person (the SEA-VL form), and what validators made of it
    account_id: int | None = Field(default=None, index=True, description="its contributor")
    category: str | None = Field(default=None, max_length=24)
    review_count: int = 0
    reviews_needed: int = 2
    flag_quality: bool | None = None
    flag_caption_fit: bool | None = None
    flag_relevance: bool | None = None
    flag_overall: bool | None = Field(default=None, index=True)
    # the privacy and safety pass before storing (services/gateway/privacy.py); None: not run
    faces: int | None = Field(default=None, index=True)
    plates: int | None = None
    privacy_regions: str | None = Field(
        default=None, sa_column=Column(Text, nullable=True), description="JSON: the regions found"
    )
    blurred: bool | None = None
    unsafe_score: float | None = None
    privacy_models: str | None = Field(
        default=None, sa_column=Column(Text, nullable=True), description="JSON: the detectors"
    )
    held: bool = Field(default=False, index=True, description="held for an admin: unsafe")


class ReviewRow(SQLModel, table=True):
    """One validator's answers to the form about one image."""

    __tablename__ = "gateway_reviews"

    image_id: str = Field(primary_key=True, max_length=64)
    reviewer_id: int = Field(primary_key=True, index=True)
    quality: int
    relevance: int = Field(description="5 = unique to SEA … 1 = unrelated")
    caption_fit: str = Field(max_length=8)
    pii: bool
    unsafe: bool
    comment: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)


class ReviewSlotRow(SQLModel, table=True):
    """A place among an image's reviews: held by a validator until `expires_at` (a lease), or
    for good once their review is in (`expires_at` None). The primary key lets only one
    validator take each place, so two never fill the same last one."""

    __tablename__ = "gateway_review_slots"
    # one place per validator and image: two tabs asking at once cannot take two
    __table_args__ = (UniqueConstraint("image_id", "reviewer_id"),)

    image_id: str = Field(primary_key=True, max_length=64)
    slot: int = Field(primary_key=True)
    reviewer_id: int = Field(index=True)
    expires_at: datetime | None = None


class PointRow(SQLModel, table=True):
    """The points ledger: one entry per accepted submission and per review, so retries and
    repeats cannot count twice."""

    __tablename__ = "gateway_points"
    __table_args__ = (UniqueConstraint("account_id", "kind", "image_id"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(index=True)
    kind: str = Field(max_length=16)
    image_id: str = Field(max_length=64)
    points: float
    phase: int
    created_at: datetime = Field(default_factory=utcnow)


class ScreeningItemRow(SQLModel, table=True):
    """An image of the validator screening with the answers a validator should give."""

    __tablename__ = "gateway_screening_items"

    id: int | None = Field(default=None, primary_key=True)
    image_id: str = Field(max_length=64, description="its stored bytes' key")
    caption_en: str = Field(sa_column=Column(Text, nullable=False))
    quality: int
    relevance: int
    caption_fit: str = Field(max_length=8)
    created_at: datetime = Field(default_factory=utcnow)


class ScreeningAttemptRow(SQLModel, table=True):
    __tablename__ = "gateway_screening_attempts"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(index=True)
    score: float
    passed: bool
    created_at: datetime = Field(default_factory=utcnow)


class CrawlRow(SQLModel, table=True):
    """An ingest of an img2dataset output: what to do with it and how many shards it has; the
    counts live on its shards."""

    __tablename__ = "gateway_crawls"

    id: str = Field(primary_key=True, max_length=32)
    source: str = Field(sa_column=Column(Text, nullable=False))
    reference_set: str
    keep: str = Field(max_length=16)
    rho: float | None = None
    namespace: str
    caption_language: str | None = Field(default=None, max_length=8)
    shards_total: int
    bytes_total: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_by: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


class CrawlShardRow(SQLModel, table=True):
    """One shard of a crawl and what its job counted (set, never added to: a try that is run
    again counts from zero, so nothing is counted twice)."""

    __tablename__ = "gateway_crawl_shards"

    crawl_id: str = Field(primary_key=True, max_length=32)
    name: str = Field(primary_key=True)
    kind: str = Field(max_length=16)
    fingerprint: str = Field(index=True, max_length=64)
    size_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    status: str = Field(default=JobStatus.QUEUED.value, index=True, max_length=16)
    attempts: int = 0
    seen: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    failed: int = 0
    stored: int = 0
    tiers: str = Field(default="{}", sa_column=Column(Text, nullable=False), description="JSON")
    failures: str = Field(default="{}", sa_column=Column(Text, nullable=False), description="JSON")
    reused_from: str | None = Field(
        default=None,
        max_length=32,
        description="crawl whose finished shard of the same source and fingerprint was taken",
    )
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class CrawlRejectRow(SQLModel, table=True):
    """A crawled image not kept (`keep: accepted`): no bytes stored, enough to count it."""

    __tablename__ = "gateway_crawl_rejects"

    crawl_id: str = Field(primary_key=True, max_length=32)
    shard: str = Field(primary_key=True)
    sample_key: str = Field(primary_key=True)
    sha256: str = Field(max_length=64)
    url: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    score: float | None = None
    tier: str | None = Field(default=None, max_length=16)


class ExportRow(SQLModel, table=True):
    """A dataset export: where to, which images, and how far it got."""

    __tablename__ = "gateway_exports"

    id: str = Field(primary_key=True, max_length=32)
    destination: str = Field(sa_column=Column(Text, nullable=False))
    filters: str = Field(sa_column=Column(Text, nullable=False), description="JSON")
    records_per_shard: int
    status: str = Field(default=JobStatus.QUEUED.value, index=True, max_length=16)
    attempts: int = 0
    total: int = Field(default=0, description="images matching the filters when it started")
    written: int = 0
    shards: int = 0
    size_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    summary: str | None = Field(
        default=None, sa_column=Column(Text, nullable=True), description="JSON"
    )
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_by: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class CaptionRow(SQLModel, table=True):
    """A caption asked for an image in one language: queued, then done or failed (and why)."""

    __tablename__ = "gateway_captions"

    image_id: str = Field(primary_key=True, max_length=64)
    language: str = Field(primary_key=True, max_length=8)
    location_aware: bool | None = Field(default=None, description="None: aware if place known")
    status: str = Field(default=JobStatus.QUEUED.value, index=True, max_length=16)
    # Each request of the same caption is a new job (arq keeps finished job ids for a while).
    requests: int = 1
    caption: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    detected_language: str | None = Field(default=None, max_length=8)
    language_ok: bool | None = None  # also None: the captioner could not tell the language
    language_confidence: float | None = None
    backend: str | None = None
    model: str | None = None
    prompt_kind: str | None = Field(default=None, max_length=16)
    location: str | None = None
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    attempts: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


GATEWAY_SCHEMA = Schema(
    service="gateway",
    versions=Path(__file__).with_name("migrations"),
    baseline="gateway_0001",
    baseline_tables=("gateway_api_keys", "gateway_images", "gateway_captions"),
)
