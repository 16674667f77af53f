"""The embedder's working parts: models loaded on demand, their batchers, the decode pool.

Blocking work never runs on the event loop: decoding and preprocessing go to a bounded decode
pool (which also bounds how many uploads are held in memory at once), ONNX runs go to one
inference thread per model, fed by that model's micro-batcher. Each model remembers its output
for the images it saw last, by the bytes' sha256: the privacy pass encodes an upload before it
is stored (the plate detector asks the encoder whether it shows a vehicle), and an embedding
asked for next, of those same bytes, is then not computed twice on this replica (the gateway's
pipeline does not ask: the detection answers the embedding, and the job carries it).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import numpy.typing as npt
from fastapi import Request
from PIL import Image
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.batching import MicroBatcher
from services.common.errors import ServiceError, UnavailableError
from services.common.http import wait_unless_disconnected
from services.common.images import (
    DEFAULT_DRAFT_SHORT_SIDE,
    DecodedImage,
    ImageLimits,
    base64_bytes,
    decode_image,
    scaled_to,
)
from services.common.schemas import VectorEncoding
from services.common.storage import ObjectStore
from services.embedder.config import EmbedderSettings
from services.embedder.models import RegisteredModel, discover_models
from services.embedder.preprocess import to_input_tensor
from services.embedder.sessions import LoadedModel, ModelLoadError

logger = logging.getLogger(__name__)

Tensor = npt.NDArray[np.float32]
ByteSource = Callable[[], bytes]
CLIENT_CLOSED_REQUEST = 499  # nginx's: the client went away before the answer


@dataclass(frozen=True)
class ModelOutput:
    """One image's row of the batch output."""

    embedding: Tensor
    logits: Tensor | None


@dataclass(frozen=True)
class ImageFacts:
    """What the embed endpoint says of an image beside its embedding."""

    width: int
    height: int
    format: str
    sha256: str
    phash: str

    @classmethod
    def of(cls, decoded: DecodedImage) -> ImageFacts:
        return cls(decoded.width, decoded.height, decoded.format, decoded.sha256, decoded.phash)


@dataclass(frozen=True)
class PreparedImage:
    """Decoded and preprocessed, waiting for the model."""

    facts: ImageFacts
    tensor: Tensor
    pixels: Image.Image | None  # upright RGB, kept (at most `keep_side` long) when asked


@dataclass(frozen=True)
class Encoded:
    """An image's facts and the model's output for it."""

    facts: ImageFacts
    output: ModelOutput
    pixels: Image.Image | None = None  # as decoded for the model; not kept once remembered


def encode_vector(vector: npt.NDArray[np.float32], encoding: VectorEncoding) -> Any:
    if encoding is VectorEncoding.BASE64:
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector


class RecentOutputs:
    """The last `capacity` outputs of one model, by the sha256 of the image's bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, Encoded] = OrderedDict()
        self._lock = threading.Lock()  # read from the decode pool, written from the event loop

    def get(self, sha256: str) -> Encoded | None:
        with self._lock:
            found = self._entries.get(sha256)
            if found is not None:
                self._entries.move_to_end(sha256)
            return found

    def put(self, encoded: Encoded) -> None:
        """Keeps a copy of the output's rows (not views that would hold their whole batch)."""
        if self.capacity == 0:
            return
        output = encoded.output
        logits = None if output.logits is None else output.logits.copy()
        encoded = Encoded(encoded.facts, ModelOutput(output.embedding.copy(), logits))
        with self._lock:
            self._entries[encoded.facts.sha256] = encoded
            self._entries.move_to_end(encoded.facts.sha256)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


class EmbedderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.images = Counter(
            "seavl_embedder_images",
            "Images handled, by model and outcome",
            ["model", "outcome"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "seavl_embedder_batch_size",
            "Images per ONNX run",
            ["model"],
            registry=registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.inference_seconds = Histogram(
            "seavl_embedder_inference_seconds",
            "Seconds per ONNX batch run",
            ["model"],
            registry=registry,
        )
        self.reused = Counter(
            "seavl_embedder_reused_outputs",
            "Images answered from the model's recent outputs (the same bytes seen before)",
            ["model"],
            registry=registry,
        )
        self.dropped = Counter(
            "seavl_embedder_dropped_images",
            "Queued images dropped before inference because their client had gone",
            ["model"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "seavl_embedder_queue_depth", "Images waiting for inference", registry=registry
        )


class ServingModel:
    """A loaded model with its inference thread and micro-batcher."""

    def __init__(
        self, loaded: LoadedModel, settings: EmbedderSettings, metrics: EmbedderMetrics
    ) -> None:
        self.loaded = loaded
        self.name = loaded.manifest.name
        self._inference_thread = ThreadPoolExecutor(1, thread_name_prefix=f"onnx-{self.name}")
        batching = settings.batching
        self.batcher: MicroBatcher[Tensor, ModelOutput] = MicroBatcher(
            self._run_batch,
            self._inference_thread,
            max_batch_size=batching.max_batch_size,
            max_wait_seconds=batching.max_wait_ms / 1000.0,
            max_queue=batching.max_queue_images,
            on_batch=self._observe_batch,
            on_drop=lambda count: metrics.dropped.labels(self.name).inc(count),
        )
        self._metrics = metrics
        self.recent = RecentOutputs(settings.recent_outputs)

    def _run_batch(self, tensors: Sequence[Tensor]) -> list[ModelOutput]:
        result = self.loaded.forward(np.stack(tensors))
        logits = result.logits
        return [
            ModelOutput(result.embeddings[i], None if logits is None else logits[i])
            for i in range(len(tensors))
        ]

    def _observe_batch(self, size: int, seconds: float) -> None:
        self._metrics.batch_size.labels(self.name).observe(size)
        self._metrics.inference_seconds.labels(self.name).observe(seconds)

    def prepare(
        self, read_bytes: ByteSource, limits: ImageLimits, keep_side: int | None = None
    ) -> PreparedImage | Encoded:
        """Bytes to tensor, or to the output already computed for the same bytes: runs in the
        decode pool. With `keep_side`, the decoded pixels are kept too, scaled down to that long
        side (so a request holds no more than that of each image until it is answered)."""
        data = read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        known = self.recent.get(digest)
        if known is not None:
            self._metrics.reused.labels(self.name).inc()
            return known
        manifest = self.loaded.manifest
        draft = max(DEFAULT_DRAFT_SHORT_SIDE, manifest.resize_target)
        decoded = decode_image(data, limits, draft_short_side=draft, sha256=digest)
        kept = None if keep_side is None else scaled_to(decoded.pixels, keep_side)
        return PreparedImage(
            ImageFacts.of(decoded), to_input_tensor(decoded.pixels, manifest), kept
        )

    async def encode(
        self, images: Sequence[PreparedImage | Encoded], request: Request
    ) -> list[Encoded] | None:
        """The model's output for each image (computed for the prepared ones, in batches, and
        remembered); None when the client went away before they were computed."""
        waiting = [image for image in images if isinstance(image, PreparedImage)]
        outputs = await wait_unless_disconnected(
            request, self.batcher.submit_many([image.tensor for image in waiting])
        )
        if outputs is None:
            return None
        computed = iter(outputs)
        answered: list[Encoded] = []
        for image in images:
            if isinstance(image, PreparedImage):
                output = next(computed)
                self.recent.put(Encoded(image.facts, output))
                answered.append(Encoded(image.facts, output, image.pixels))
            else:
                answered.append(image)
        return answered

    def answer(self, index: int, encoded: Encoded, encoding: VectorEncoding) -> dict[str, Any]:
        """An image's embedding as `POST /v1/embed` answers it (without labels); `POST
        /v1/detect` answers the same when asked to."""
        facts = encoded.facts
        return {
            "index": index,
            "model": self.name,
            "dim": self.loaded.manifest.embedding_dim,
            "embedding": encode_vector(encoded.output.embedding, encoding),
            "sha256": facts.sha256,
            "phash": facts.phash,
            "width": facts.width,
            "height": facts.height,
            "format": facts.format,
        }

    async def prepare_all(
        self,
        sources: Sequence[ByteSource],
        limits: ImageLimits,
        decode_pool: ThreadPoolExecutor,
        keep_side: int | None = None,
    ) -> list[PreparedImage | Encoded | ServiceError]:
        """Each source prepared in the decode pool; an image that cannot be read fails alone
        (an `UnavailableError` too: the caller decides whether that fails the request)."""
        loop = asyncio.get_running_loop()

        async def prepare_one(source: ByteSource) -> PreparedImage | Encoded | ServiceError:
            try:
                return await loop.run_in_executor(
                    decode_pool, self.prepare, source, limits, keep_side
                )
            except ServiceError as exc:
                return exc

        return list(await asyncio.gather(*(prepare_one(source) for source in sources)))

    async def stop(self) -> None:
        await self.batcher.stop()
        self._inference_thread.shutdown(wait=True)


class ModelPool:
    """Models by name: the default loaded at start-up, others on first use under a lock."""

    def __init__(self, settings: EmbedderSettings, metrics: EmbedderMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.registered: dict[str, RegisteredModel] = discover_models(settings.models_dir)
        self.serving: dict[str, ServingModel] = {}
        self._lock = asyncio.Lock()
        metrics.queue_depth.set_function(
            lambda: float(sum(m.batcher.queue_depth for m in self.serving.values()))
        )

    def resolve_name(self, name: str | None) -> str:
        chosen = name or self.settings.default_model
        if chosen not in self.registered:
            raise ServiceError(
                404,
                "unknown_model",
                f"no model named {chosen!r}; available: {sorted(self.registered)}",
                field="model",
            )
        return chosen

    async def get(self, name: str | None) -> ServingModel:
        chosen = self.resolve_name(name)
        serving = self.serving.get(chosen)
        if serving is not None:
            return serving
        async with self._lock:
            if chosen not in self.serving:
                registered = self.registered[chosen]
                try:
                    loaded = await asyncio.to_thread(LoadedModel, registered, self.settings.runtime)
                except ModelLoadError as exc:
                    raise UnavailableError(f"model {chosen} cannot be loaded: {exc}") from exc
                serving = ServingModel(loaded, self.settings, self.metrics)
                serving.batcher.start()
                self.serving[chosen] = serving
        return self.serving[chosen]

    async def load_default(self) -> ServingModel:
        """Loads the default model or fails start-up loudly: a service without it cannot serve."""
        name = self.settings.default_model
        if name not in self.registered:
            raise ModelLoadError(
                f"default model {name!r} is not in {self.settings.models_dir} (found "
                f"{sorted(self.registered)}); run `make models` to convert it"
            )
        loaded = await asyncio.to_thread(LoadedModel, self.registered[name], self.settings.runtime)
        serving = ServingModel(loaded, self.settings, self.metrics)
        serving.batcher.start()
        self.serving[name] = serving
        return serving

    async def stop(self) -> None:
        for serving in self.serving.values():
            await serving.stop()
        self.serving.clear()


def bytes_from_upload(handle: IO[bytes], limit: int) -> ByteSource:
    """Reads at most one byte past the limit, so an oversized upload is refused unread."""
    return lambda: handle.read(limit + 1)


def bytes_from_base64(data: str) -> ByteSource:
    return lambda: base64_bytes(data, "data")


def bytes_from_store(store: ObjectStore, key: str) -> ByteSource:
    return lambda: store.get(key)
