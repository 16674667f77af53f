"""How near must two default-model embeddings be to call the images near-duplicates?

Measures the cosine of EfficientNet-Lite0 embeddings for (a) light edits of one photograph
(resize, JPEG re-encode, small crop, brightness: what re-uploads and crawls produce) and
(b) different images: other photographs, and distinct regions of the same photograph (the hard
case). The photographs are split in two: the threshold is chosen on one half (the lowest at
which no two different photographs of that half match) and reported on the other, beside the
configured default ε, so the figures are not measured on the data they were tuned on.

    .venv/bin/python bench/dedup_threshold.py [--edits 8]
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._images import photos  # noqa: E402
from services.common.images import ImageLimits, decode_image  # noqa: E402
from services.dedup.config import DedupSettings  # noqa: E402
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


Embed = Callable[[list[Image.Image]], np.ndarray]


@dataclass
class Cosines:
    """Cosines of the three kinds of pair measured on one set of photographs."""

    edits: np.ndarray  # a photograph and a light edit of it: should match
    distinct: np.ndarray  # two different photographs: must not match
    regions: np.ndarray  # two overlapping views of one photograph: other images of one scene


def measure(sources: list[Image.Image], embed: Embed, edits: int, seed: int) -> Cosines:
    rng = np.random.default_rng(seed)
    originals = embed(sources)
    edit_scores: list[float] = []
    for index, source in enumerate(sources):
        edited = embed([light_edit(source, rng) for _ in range(edits)])
        edit_scores.extend((edited @ originals[index]).tolist())
    similarity = originals @ originals.T
    n = len(sources)
    regions = [embed([region(p, k) for k in range(4)]) for p in sources]
    return Cosines(
        edits=np.array(edit_scores),
        distinct=np.array([similarity[i, j] for i in range(n) for j in range(i + 1, n)]),
        regions=np.array(
            [(r @ r.T)[i, j] for r in regions for i in range(4) for j in range(i + 1, 4)]
        ),
    )


def lowest_clean_threshold(cosines: Cosines) -> float:
    """The lowest threshold (in steps of 0.01) at which no two different photographs match."""
    return float(np.ceil((cosines.distinct.max() + 1e-9) * 100) / 100)


def report_line(label: str, threshold: float, cosines: Cosines) -> str:
    recall = float((cosines.edits >= threshold).mean())
    false_matches = int((cosines.distinct >= threshold).sum())
    return (
        f"  {label:40s} {threshold:.2f}   recall(edits) {recall:.3f}   different photographs "
        f"matched {false_matches}/{cosines.distinct.size}   regions >= threshold "
        f"{float((cosines.regions >= threshold).mean()):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--edits", type=int, default=8, help="light edits per photograph")
    args = parser.parse_args()
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

    sources = photos() + extra_photos()
    choice = measure(sources[0::2], embed, args.edits, seed=0)
    held_out = measure(sources[1::2], embed, args.edits, seed=1)
    chosen = lowest_clean_threshold(choice)
    configured = DedupSettings().threshold_for(settings.default_model)
    print(
        f"{len(sources)} photographs: {len(sources[0::2])} to choose the threshold on, "
        f"{len(sources[1::2])} held out to report it; {args.edits} light edits each"
    )
    for label, cosines in (("choice half", choice), ("held-out half", held_out)):
        print(
            f"{label}: light edits cosine min {cosines.edits.min():.3f}, median "
            f"{np.median(cosines.edits):.3f}; different photographs max "
            f"{cosines.distinct.max():.3f}, median {np.median(cosines.distinct):.3f}; "
            f"overlapping regions median {np.median(cosines.regions):.3f}"
        )
    print(f"threshold chosen on the choice half: {chosen:.2f}; on the held-out half:")
    print(report_line("chosen", chosen, held_out))
    print(report_line(f"configured default ({settings.default_model})", configured, held_out))
    print("held-out half by threshold:")
    for threshold in (0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.95):
        print(report_line("", threshold, held_out))


if __name__ == "__main__":
    main()
