"""The embedder's HTTP layer: parse the request, hand images to the pool, shape the answer."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import FormData, UploadFile

from services.common.dedup_rules import DEDUP_RULES
from services.common.errors import ErrorResponse, ServiceError, UnavailableError, validated
from services.common.http import multipart_body, read_json
from services.common.openapi import body_schema
from services.common.schemas import (
    MODEL_PATTERN,
    EmbedJsonRequest,
    EmbedOptions,
    EmbedResponse,
    ModelInfo,
    ModelsResponse,
)
from services.common.service import from_app_state
from services.common.storage import LocalFolderStore, ObjectStore, validate_key
from services.embedder.config import EmbedderSettings
from services.embedder.serving import (
    CLIENT_CLOSED_REQUEST,
    ByteSource,
    ModelOutput,
    ModelPool,
    ServingModel,
    bytes_from_base64,
    bytes_from_store,
    bytes_from_upload,
)

router = APIRouter(prefix="/v1", tags=["embeddings"])

SettingsDep = Annotated[EmbedderSettings, Depends(from_app_state("settings", EmbedderSettings))]
PoolDep = Annotated[ModelPool, Depends(from_app_state("pool", ModelPool))]
StoreDep = Annotated[ObjectStore, Depends(from_app_state("store", LocalFolderStore))]


def _invalid(message: str, field: str | None = None) -> ServiceError:
    return ServiceError(422, "invalid_request", message, field=field)


async def _parse_multipart(
    form: FormData, settings: EmbedderSettings
) -> tuple[EmbedOptions, list[ByteSource]]:
    uploads = [v for v in form.getlist("images") if isinstance(v, UploadFile)]
    if not uploads:
        raise _invalid("send one or more files in the multipart field 'images'", field="images")
    unknown = set(form.keys()) - {"images", "model", "encoding", "top_k"}
    if unknown:
        raise _invalid(f"unknown form fields: {sorted(unknown)}", field=sorted(unknown)[0])
    options = validated(
        EmbedOptions, {k: v for k, v in form.items() if k != "images" and isinstance(v, str)}
    )
    limit = settings.images.max_bytes
    return options, [bytes_from_upload(upload.file, limit) for upload in uploads]


async def _parse_json(
    request: Request, settings: EmbedderSettings, store: ObjectStore
) -> tuple[EmbedOptions, list[ByteSource]]:
    parsed = validated(EmbedJsonRequest, read_json(await request.body()))
    if len(parsed.images) > settings.max_images_per_request:
        raise _invalid(
            f"at most {settings.max_images_per_request} images per request", field="images"
        )
    sources: list[ByteSource] = []
    for item in parsed.images:
        if item.key is not None:
            sources.append(bytes_from_store(store, validate_key(item.key)))
        else:
            assert item.data is not None
            sources.append(bytes_from_base64(item.data))
    return EmbedOptions.model_validate(
        parsed.model_dump(include={"model", "encoding", "top_k"})
    ), sources


def _top_labels(
    output: ModelOutput, serving: ServingModel, top_k: int
) -> list[dict[str, Any]] | None:
    labels = serving.loaded.labels
    if top_k == 0 or output.logits is None or labels is None:
        return None
    logits = output.logits.astype(np.float64)
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    best = np.argsort(-probabilities)[:top_k]
    return [{"index": int(i), "label": labels[i], "score": float(probabilities[i])} for i in best]


def _failure(index: int, error: ServiceError) -> dict[str, Any]:
    return {
        "index": index,
        "error": error.body().model_dump(exclude_none=True),
        "status": error.status_code,
    }


@router.post(
    "/embed",
    summary="Embed one or many images",
    response_model=EmbedResponse,
    responses={
        code: {"model": ErrorResponse}
        for code in (400, 404, 413, 415, 422, 429, 503)  # 404: an unknown model or key
    },
    openapi_extra=multipart_body(
        "images",
        {
            "model": {"type": "string", "pattern": MODEL_PATTERN},
            "encoding": {"type": "string", "enum": ["float", "base64"]},
            "top_k": {"type": "integer", "minimum": 0},
        },
        many_files=True,
        other_content={"application/json": {"schema": body_schema(EmbedJsonRequest)}},
    ),
)
async def embed(
    request: Request, settings: SettingsDep, pool: PoolDep, store: StoreDep
) -> Response:
    """Per image: embedding, dim, model, pHash, size. A bad image fails alone with its error;
    if no image can be embedded the whole request answers with the first image's 4xx."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        # The uploads stay spooled (on disk past 1 MB) until the decode pool reads them.
        form = await request.form(max_files=settings.max_images_per_request, max_fields=16)
        try:
            options, sources = await _parse_multipart(form, settings)
            return await _embed_sources(request, options, sources, settings, pool)
        finally:
            await form.close()
    if content_type.startswith("application/json"):
        options, sources = await _parse_json(request, settings, store)
        return await _embed_sources(request, options, sources, settings, pool)
    raise ServiceError(
        415, "unsupported_media_type", "send multipart/form-data (field 'images') or JSON"
    )


async def _embed_sources(
    request: Request,
    options: EmbedOptions,
    sources: list[ByteSource],
    settings: EmbedderSettings,
    pool: ModelPool,
) -> Response:
    if options.top_k > settings.max_top_k:
        raise _invalid(f"top_k is at most {settings.max_top_k}", field="top_k")
    serving = await pool.get(options.model)
    prepared = await serving.prepare_all(sources, settings.images, request.app.state.decode_pool)
    good = [(i, p) for i, p in enumerate(prepared) if not isinstance(p, ServiceError)]
    failures = {i: p for i, p in enumerate(prepared) if isinstance(p, ServiceError)}
    for error in failures.values():
        pool.metrics.images.labels(serving.name, error.code).inc()
    unavailable = [e for e in failures.values() if isinstance(e, UnavailableError)]
    if unavailable:  # the store is down: no image is at fault, and the caller retries them all
        raise unavailable[0]
    if not good:
        first = failures[0]
        raise ServiceError(
            first.status_code,
            first.code,
            first.message,
            field=first.field,
            details=[_failure(i, e) for i, e in failures.items()] if len(failures) > 1 else None,
        )
    outputs = await serving.encode([p for _, p in good], request)
    if outputs is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    pool.metrics.images.labels(serving.name, "ok").inc(len(good))
    results: list[dict[str, Any]] = [_failure(i, e) for i, e in failures.items()]
    for (index, _), encoded in zip(good, outputs, strict=True):
        result = serving.answer(index, encoded, options.encoding)
        labels = _top_labels(encoded.output, serving, options.top_k)
        if labels is not None:
            result["labels"] = labels
        results.append(result)
    results.sort(key=lambda r: int(r["index"]))
    body = {"model": serving.name, "encoding": options.encoding.value, "results": results}
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


@router.get("/models", summary="The models this embedder can serve", response_model=ModelsResponse)
async def list_models(pool: PoolDep) -> ModelsResponse:
    infos = []
    for name, registered in sorted(pool.registered.items()):
        serving = pool.serving.get(name)
        manifest = registered.manifest
        infos.append(
            ModelInfo(
                name=name,
                description=manifest.description,
                embedding_dim=manifest.embedding_dim,
                input_size=manifest.input_size,
                default=name == pool.settings.default_model,
                loaded=serving is not None,
                provider=serving.loaded.provider if serving else None,
                has_labels=serving.loaded.has_labels
                if serving
                else manifest.labels_file is not None,
                preset=manifest.preset,
                dedup=DEDUP_RULES.get(name),
            )
        )
    return ModelsResponse(models=infos)
