"""Duplicates already stored of an image, a pHash or an embedding (nothing is stored): what the
bulk uploader asks before it sends a file. Asked with the image, the answer is the decision the
upload pipeline would make."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request

from services.common.errors import validated
from services.common.http import multipart_body, read_json
from services.common.images import preview_jpeg
from services.common.openapi import body_schema
from services.common.schemas import DedupCheckRequest, DuplicateOf
from services.gateway.dependencies import (
    PUBLIC_ERRORS,
    Contributor,
    DedupDep,
    EmbedderDep,
    SettingsDep,
)
from services.gateway.embedding import embed_accepted
from services.gateway.intake import accept_image_only
from services.gateway.schemas import DedupQuery, DuplicatesOut

# The check's copy of the image: larger than the pixel check's 256 px and the embedder's 256 px
# short side for most shapes, a fraction of a photo's bytes.
PREVIEW = 640

router = APIRouter(prefix="/v1", tags=["gateway"], responses=PUBLIC_ERRORS)


@router.post(
    "/dedup",
    response_model=DuplicatesOut,
    summary="Duplicates already stored of an image, a pHash or an embedding (nothing is stored)",
    openapi_extra=multipart_body(
        "image", other_content={"application/json": {"schema": body_schema(DedupQuery)}}
    ),
)
async def find_duplicates(
    request: Request, _: Contributor, settings: SettingsDep, embedder: EmbedderDep, dedup: DedupDep
) -> DuplicatesOut:
    namespace = settings.pipeline.dedup_namespace
    if request.headers.get("content-type", "").startswith("application/json"):
        query = validated(DedupQuery, read_json(await request.body()))
        check = DedupCheckRequest(
            namespace=namespace,
            model=query.model,
            vectors=[query.embedding] if query.embedding is not None else [],
            phashes=[query.phash] if query.phash else [],
        )
    else:
        image = await accept_image_only(request, settings.images)
        embedded = await embed_accepted(embedder, image)
        check = DedupCheckRequest(
            namespace=namespace,
            model=embedded.model,
            vectors=[embedded.embedding],
            phashes=[embedded.phash],
            # its pixels too: the same decision as the pipeline's, near candidates checked on
            # theirs (the image is not stored, so a preview of it travels with the check)
            images=[base64.b64encode(preview_jpeg(image.data, settings.images, PREVIEW)).decode()],
        )
    found = await dedup.check(check)
    by_embedding = found.vectors[0].neighbours if found.vectors else []
    duplicate_of = found.vectors[0].duplicate_of if found.vectors else None
    by_phash = found.phashes[0].matches if found.phashes else []
    # The embedding (and with an image, its pixels) decides when there is one (pHash alone is a
    # weak signal: 2 % precision in the paper's top pairs); with a pHash alone, the pHash.
    if not check.vectors and by_phash:
        duplicate_of = DuplicateOf(id=by_phash[0].id, by="phash", distance=by_phash[0].distance)
    is_duplicate = duplicate_of is not None
    return DuplicatesOut(
        by_embedding=by_embedding,
        by_phash=by_phash,
        is_duplicate=is_duplicate,
        duplicate_of=duplicate_of,
    )
