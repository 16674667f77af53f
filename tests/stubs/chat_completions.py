"""A STUB of an OpenAI-compatible chat-completions server, for the captioner's tests only.

A real VLM server (vLLM, Ollama, TGI) cannot run here, so this stands in for it. It enforces
the real request schema of `POST /v1/chat/completions` as OpenAI documents it: unknown
top-level fields are refused (OpenAI answers 400 "Unrecognized request argument"), messages
carry `text` and `image_url` content parts, sampling parameters are within their ranges. On
top of the schema it checks what seavl promises: the image is a base64 `data:` URL of a real
image, decoding is greedy (temperature 0) and nothing penalises repetition. It answers with
canned replies that each test queues.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

STUB_API_KEY = "stub-key"
STUB_MODEL = "stub/qwen2-vl-7b-instruct"


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["image_url"]
    image_url: ImageUrl


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart | ImagePart]
    name: str | None = None


class ChatCompletionRequest(BaseModel):
    """The documented fields of the chat-completions request; anything else is refused."""

    model_config = ConfigDict(extra="forbid")
    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = None
    user: str | None = None


@dataclass
class Reply:
    """What the stub answers to the next request."""

    caption: str | None = None
    status: int = 200
    raw_body: str | None = None  # answered as is (malformed answers)
    delay_seconds: float = 0.0


@dataclass
class StubVlm:
    replies: deque[Reply] = field(default_factory=deque)
    default: Reply = field(default_factory=lambda: Reply(caption="A stub caption."))
    requests: list[ChatCompletionRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # while cleared, every answer waits (a VLM that takes as long as a test needs, not a
    # guessed number of seconds)
    answering: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.answering.set()

    def queue(self, *replies: Reply) -> None:
        with self.lock:
            self.replies.extend(replies)

    def next_reply(self) -> Reply:
        with self.lock:
            return self.replies.popleft() if self.replies else self.default


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error"}}, status_code=status
    )


def _seavl_rules(request: ChatCompletionRequest) -> str | None:
    """What seavl promises beyond the schema; a message when a rule is broken."""
    if request.temperature != 0:
        return f"expected greedy decoding (temperature 0), got {request.temperature}"
    if request.frequency_penalty or request.presence_penalty:
        return "expected no repetition penalty"
    parts = [p for m in request.messages if isinstance(m.content, list) for p in m.content]
    images = [p for p in parts if isinstance(p, ImagePart)]
    texts = [p for p in parts if isinstance(p, TextPart)]
    if len(images) != 1 or not texts:
        return "expected one text part and one image_url part"
    url = images[0].image_url.url
    if not url.startswith("data:image/") or ";base64," not in url:
        return "expected the image as a base64 data URL"
    try:
        data = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
        Image.open(io.BytesIO(data)).verify()
    except (binascii.Error, ValueError, OSError) as exc:
        return f"the data URL is not a readable image: {exc}"
    return None


def create_stub_app(stub: StubVlm) -> FastAPI:
    app = FastAPI(title="STUB chat-completions server (tests only)")

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": STUB_MODEL, "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(
        request: Request, authorization: str | None = Header(default=None)
    ) -> Response:
        if authorization != f"Bearer {STUB_API_KEY}":
            return _error(401, "Incorrect API key provided")
        try:
            body = ChatCompletionRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return _error(400, f"invalid request: {exc}")
        broken = _seavl_rules(body)
        if broken is not None:
            return _error(400, broken)
        stub.requests.append(body)
        reply = stub.next_reply()
        while not stub.answering.is_set():
            await asyncio.sleep(0.02)
        if reply.delay_seconds:
            await asyncio.sleep(reply.delay_seconds)
        if reply.raw_body is not None:
            return PlainTextResponse(reply.raw_body, status_code=reply.status)
        if reply.status != 200:
            return _error(reply.status, "stub failure")
        return JSONResponse(
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": 0,
                "model": body.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.caption},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    return app
