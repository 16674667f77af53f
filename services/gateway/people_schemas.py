"""Bodies of the people's side of the API: accounts, sign-in, keys, reviews, points, screening."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.common.countries import CountryCode
from services.common.openapi import JsonBody
from services.gateway.accounts import PageLanguage, Role
from services.gateway.points_rules import PointKind
from services.gateway.review_rules import CaptionFit
from services.gateway.schemas import ImageOut

# no control characters (a NUL cannot even be stored by PostgreSQL)
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=3,
        max_length=254,
        pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$",
    ),
]
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]


class AccountIn(JsonBody):
    """Signing up: a new contributor."""

    name: Name
    email: Email
    password: str = Field(min_length=1, max_length=1024, description="10 characters or more")
    country: CountryCode = Field(strict=False, description="where you are from")
    language: PageLanguage = Field(
        default=PageLanguage.ENGLISH, strict=False, description="of the pages"
    )


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    email: str
    country: str
    role: Role
    language: str
    created_at: datetime


class AccountPage(BaseModel):
    items: list[AccountOut]
    total: int
    limit: int
    offset: int


class RoleChange(JsonBody):
    role: Role = Field(strict=False)


class SignIn(JsonBody):
    email: Email
    password: str = Field(min_length=1, max_length=1024)


class SessionOut(BaseModel):
    account: AccountOut
    csrf_token: str = Field(description="send it back in X-CSRF-Token on every change")


class KeyIn(JsonBody):
    name: str = Field(default="", max_length=100)


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    prefix: str
    name: str
    role: str
    account_id: int | None
    revoked: bool
    created_at: datetime


class NewKey(KeyOut):
    key: str = Field(description="shown once: keep it")


class KeyList(BaseModel):
    items: list[KeyOut]


class ReviewIn(JsonBody):
    """The validation form of SEA-VL (appendix C.2 of the paper)."""

    quality: int = Field(ge=0, le=1, description="is the photo quality OK and appropriate? 1/0")
    relevance: int = Field(
        ge=1,
        le=5,
        description="cultural relevance: 5 'Yes. Unique to SEA', 4 'Yes, people will likely "
        "think of SEA', 3 'Maybe. Not originally from SEA but very common', 2 'Not really', "
        "1 'No. Totally unrelated to SEA'",
    )
    caption_fit: CaptionFit = Field(strict=False, description="does the caption fit the image?")
    pii: bool = Field(description="a face, phone number, ID or car plate is visible")
    unsafe: bool = Field(description="offensive, suggestive or illegal content")
    comment: str | None = Field(default=None, max_length=2000)


class ReviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    image_id: str
    quality: int
    relevance: int
    caption_fit: CaptionFit
    pii: bool
    unsafe: bool
    comment: str | None
    created_at: datetime


class ReviewResult(BaseModel):
    review: ReviewOut
    image: ImageOut


class Assignment(BaseModel):
    image: ImageOut
    lease_expires_at: datetime = Field(description="the image is yours to review until then")


class ThresholdOut(BaseModel):
    points: float
    reward: str


class Standing(BaseModel):
    rank: int
    account_id: int
    name: str
    country: str
    points: float
    submissions: int
    reviews: int


class Leaderboard(BaseModel):
    phase: int
    thresholds: list[ThresholdOut]
    items: list[Standing]


class PointEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: PointKind
    image_id: str
    points: float
    created_at: datetime


class MyPoints(BaseModel):
    phase: int
    points: float
    submissions: int
    reviews: int
    thresholds: list[ThresholdOut]
    next_threshold: ThresholdOut | None
    entries: list[PointEntry]


class ScreeningItemOut(BaseModel):
    """An item as a contributor taking the screening sees it: no answers."""

    id: int
    caption_en: str
    image_url: str


class ScreeningItemAdmin(ScreeningItemOut):
    quality: int
    relevance: int
    caption_fit: CaptionFit


class ScreeningSet(BaseModel):
    items: list[ScreeningItemOut]
    pass_score: float


class ScreeningItemList(BaseModel):
    items: list[ScreeningItemAdmin]


class ScreeningAnswerIn(JsonBody):
    item_id: int
    quality: int = Field(ge=0, le=1)
    relevance: int = Field(ge=1, le=5)
    caption_fit: CaptionFit = Field(strict=False)


class ScreeningAnswers(JsonBody):
    answers: list[ScreeningAnswerIn] = Field(max_length=1000)


class ScreeningResult(BaseModel):
    score: float
    passed: bool
    role: Role
