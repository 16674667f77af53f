"""An accepted upload embedded now, for the routes that answer at once (relevance, dedup)."""

from __future__ import annotations

from services.common.clients import EmbedderClient
from services.common.schemas import EmbeddedImage, ImageFailure, ImageInput
from services.gateway.intake import AcceptedImage


async def embed_accepted(embedder: EmbedderClient, image: AcceptedImage) -> EmbeddedImage:
    """The embedding of `image`; the embedder's refusal of it is the caller's error."""
    result = (await embedder.embed([ImageInput.of_bytes(image.data)]))[0]
    if isinstance(result, ImageFailure):
        raise result.as_error(field="image")
    return result
