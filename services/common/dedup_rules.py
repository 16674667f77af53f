"""How near-duplicates are decided for each embedder model, in one table: the dedup service
decides by it (its settings start from it), the embedder shows it for each model it serves
(GET /v1/models), and the benchmarks measure it.

ε is the cosine at which the embedding alone calls two images duplicates: the paper's values for
its encoders, the default model's measured (README, "Choosing the default model's ε"). Where
dedup can read both images' pixels (uploads and crawls, kept in the shared store), the stored
images from `candidate_threshold` up are candidates checked on their pixels
(services/dedup/verification.py): a copy is found even when its embedding is only near (a
grayscale, cropped, framed or re-compressed copy), and a different photo is passed over even when
its embedding is nearer than ε. A model without a candidate threshold is checked from ε (the
pixels then only pass over false matches). Neither changes the stored vectors: a new rule takes
effect on the next image, with no re-embedding.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class DedupRule(BaseModel):
    threshold: float = Field(gt=0, le=1, description="ε: the embedding alone decides from here")
    candidate_threshold: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="stored images from this cosine up are checked on their pixels (ε if null)",
    )


DEDUP_RULES: dict[str, DedupRule] = {
    "nomic-embed-vision-v1.5": DedupRule(threshold=0.95),
    "clip-vit-b-32": DedupRule(threshold=0.95),
    "siglip-base-224": DedupRule(threshold=0.85),
    "siglip-base-384": DedupRule(threshold=0.85),
    # measured on real photographs and ~30 kinds of copies (bench/dedup_quality.py, README)
    "efficientnet-lite0": DedupRule(threshold=0.90, candidate_threshold=0.50),
}
