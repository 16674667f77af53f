"""How near must two default-model embeddings be to call the images near-duplicates?

Measures the cosine of EfficientNet-Lite0 embeddings for (a) light edits of one photograph
(resize, JPEG re-encode, small crop, brightness: what re-uploads and crawls produce) and
(b) different images: other photographs, and distinct regions of the same photograph (the hard
case). Prints both distributions and precision / recall per threshold, so the dedup service's
default ε for this model rests on a measurement.

    .venv/bin/python bench/dedup_threshold.py
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._images import photos  # noqa: E402
from services.common.images import ImageLimits, decode_image  # noqa: E402
from services.embedder.config import EmbedderSettings, RuntimeSettings  # noqa: E402
from services.embedder.models import discover_models  # noqa: E402
from services.embedder.preprocess import to_input_tensor  # noqa: E402
from services.embedder.sessions import LoadedModel  # noqa: E402


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def light_edit(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    margin = rng.uniform(0, 0.08)
    left, top = int(w * rng.uniform(0, margin)), int(h * rng.uniform(0, margin))
    right, bottom = w - int(w * rng.uniform(0, margin)), h - int(h * rng.uniform(0, margin))
    edited = image.crop((left, top, right, bottom))
    scale = rng.uniform(0.5, 1.0)
    edited = edited.resize(
        (max(32, int(edited.width * scale)), max(32, int(edited.height * scale)))
    )
    edited = ImageEnhance.Brightness(edited).enhance(rng.uniform(0.9, 1.1))
    return Image.open(io.BytesIO(jpeg(edited, int(rng.integers(30, 95))))).convert("RGB")


def extra_photos() -> list[Image.Image]:
    """More of scikit-image's photographs, including hard pairs (one motorcycle, two cameras)."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    names = (
        "motorcycle_right.png",
        "coins.png",
        "moon.png",
        "retina.jpg",
        "ihc.png",
        "brick.png",
        "grass.png",
        "gravel.png",
        "page.png",
        "clock_motion.png",
        "color.png",
        "cell.png",
    )
    return [Image.open(folder / name).convert("RGB") for name in names]


def region(image: Image.Image, index: int) -> Image.Image:
    """Four quadrant-sized views of one photograph: same scene, different image."""
    w, h = image.size
    boxes = [
        (0, 0, w * 6 // 10, h * 6 // 10),
        (w * 4 // 10, 0, w, h * 6 // 10),
        (0, h * 4 // 10, w * 6 // 10, h),
        (w * 4 // 10, h * 4 // 10, w, h),
    ]
    return image.crop(boxes[index])


def main() -> None:
    settings = EmbedderSettings()
    model = LoadedModel(
        discover_models(settings.models_dir)[settings.default_model], RuntimeSettings()
    )

    def embed(images: list[Image.Image]) -> np.ndarray:
        tensors = [
            to_input_tensor(decode_image(jpeg(i, 95), ImageLimits()).pixels, model.manifest)
            for i in images
        ]
        return model.forward(np.stack(tensors)).embeddings

    rng = np.random.default_rng(0)
    sources = photos() + extra_photos()
    originals = embed(sources)
    duplicate_scores = []
    for index, source in enumerate(sources):
        edits = embed([light_edit(source, rng) for _ in range(8)])
        duplicate_scores.extend((edits @ originals[index]).tolist())
    similarity = originals @ originals.T
    n = len(sources)
    distinct = np.array([similarity[i, j] for i in range(n) for j in range(i + 1, n)])
    regions = [embed([region(p, k) for k in range(4)]) for p in sources]
    same_scene = np.array(
        [(r @ r.T)[i, j] for r in regions for i in range(4) for j in range(i + 1, 4)]
    )
    dup = np.array(duplicate_scores)
    print(
        f"light edits (near-duplicates): {dup.size} pairs, cosine min {dup.min():.3f}, "
        f"p1 {np.percentile(dup, 1):.3f}, p5 {np.percentile(dup, 5):.3f}, "
        f"median {np.median(dup):.3f}"
    )
    print(
        f"different photographs:         {distinct.size} pairs, cosine max {distinct.max():.3f}, "
        f"p99 {np.percentile(distinct, 99):.3f}, median {np.median(distinct):.3f}"
    )
    print(
        f"overlapping regions of a photo: {same_scene.size} pairs, cosine median "
        f"{np.median(same_scene):.3f}, max {same_scene.max():.3f} (same scene, other framing)"
    )
    print("threshold  recall(edits)  false positives(different photographs)  regions >= threshold")
    for threshold in (0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.95):
        recall = float((dup >= threshold).mean())
        print(
            f"  {threshold:.2f}      {recall:6.3f}         {int((distinct >= threshold).sum()):4d}"
            f"                                  {float((same_scene >= threshold).mean()):.2f}"
        )


if __name__ == "__main__":
    main()
