"""Does near-duplicate detection find the copies of a picture, and only them? The old method and
the new default side by side.

Pictures from Debian packages (gnome-backgrounds' and sway-backgrounds' wallpapers, palapeli-data's,
gcompris-qt-data's and jigzo-data's photographs: monuments, animals, fish, tools, windmills, sea
beds; bench/_more_pictures.py) and scikit-learn's two sample photographs, each downscaled to a
crawl-like long side of at most 1024 px, are "uploaded" first; then ~30 copies of each
(`bench/_copies.py`: resize, crops, JPEG quality, brightness/contrast, rotation, borders, caption
bar, grayscale, flip, mirrored crop, watermark, screenshot, WebP/PNG round trips, each at several
strengths). A copy is found when the decision names its own original as `duplicate_of`.

Hard negatives, which must not match: every pair of different pictures (those of one series, one
theme such as pyramids, hammers or windmills, or one designer's set, are reported apart) and
pairs of views of one picture that share no pixels (its halves, opposite quadrants). A picture's
other published versions (GNOME's day/night pairs, sway's portrait layout) are the same artwork
re-drawn: arguably copies, arguably not, so they count on neither side and their match rate is
printed on its own.

The decisions are the service's, computed in-process: the default embedder model with the
embedder's own decoding and preprocessing (`decode_image` at the model's draft size,
`to_input_tensor`), over an exact scan of the stored vectors (the same answer at this size).
  old: the stored image of highest cosine, when that is >= ε (`DedupSettings.threshold_for`);
  new: the nearest stored images from the model's candidate threshold up are checked on their
       pixels (services/dedup/verification.py, `first_copy`, as dedup decides for stored images):
       the first the pixels call a copy, or whose cosine reaches ε where they cannot tell.
The bulk uploader's old pre-check (pHash within `DedupSettings.max_hamming`) is reported beside
them; the uploader now asks the server, so it decides as "new".

    make photos   # or: bash scripts/ensure-photos.sh (Debian's picture packages)
    .venv/bin/python bench/dedup_quality.py [--photos N] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._copies import COPIES, CopyKind, copies_of, encode, hard_negative_crops  # noqa: E402
from bench._more_pictures import SourcePicture, gcompris_photos, jigzo_photos  # noqa: E402
from services.common.images import DEFAULT_DRAFT_SHORT_SIDE, ImageLimits, decode_image  # noqa: E402
from services.dedup.config import DedupSettings  # noqa: E402
from services.dedup.verification import (  # noqa: E402
    LocalFeatures,
    Verdict,
    agreement,
    first_copy,
    local_features,
    verdict_of,
    verify,
)
from services.embedder.config import EmbedderSettings, RuntimeSettings  # noqa: E402
from services.embedder.models import discover_models  # noqa: E402
from services.embedder.preprocess import to_input_tensor  # noqa: E402
from services.embedder.sessions import LoadedModel  # noqa: E402

PHOTO_PACKAGES = ("palapeli-data", "gnome-backgrounds", "sway-backgrounds")
PICTURE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
CRAWL_LONG_SIDE = 1024
MIN_SHORT_SIDE = 300  # smaller files in these packages are icons, thumbnails and flat swatches
ORIGINAL_JPEG_QUALITY = 95
EMBED_BATCH = 32
FALSE_POSITIVE_RATES = (0.0, 0.01, 0.05)

Vectors = npt.NDArray[np.float32]


class VariantKind(StrEnum):
    """A picture's other published versions: counted neither as copies nor as negatives."""

    NIGHT = "night version"
    PORTRAIT = "portrait layout"


@dataclass
class Picture:
    name: str
    series: str  # the package (or data set): one designer's or one theme's set
    image: Image.Image
    published_sizes: list[tuple[str, Image.Image]] = field(default_factory=list)
    variants: list[tuple[VariantKind, Image.Image]] = field(default_factory=list)


@dataclass(frozen=True)
class PictureFile:
    path: Path
    series: str


def crawl_size(image: Image.Image) -> Image.Image:
    """RGB, long side at most `CRAWL_LONG_SIDE`, as a crawled or uploaded picture is."""
    rgb = image.convert("RGB")
    rgb.thumbnail((CRAWL_LONG_SIDE, CRAWL_LONG_SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return rgb


def open_crawl_size(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return crawl_size(image)


def package_pictures(package: str) -> list[PictureFile]:
    """The package's raster pictures large enough to be photographs or wallpapers."""
    listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if listed.returncode != 0:
        sys.exit(f"{package} is not installed: run `make photos` (scripts/ensure-photos.sh)")
    files = []
    for line in listed.stdout.splitlines():
        path = Path(line)
        if path.suffix.lower() not in PICTURE_SUFFIXES or not path.is_file():
            continue
        if "/doc/" in line or "/icons/" in line or ("palapeli" in line and "/backgrounds/" in line):
            continue  # manuals' screenshots, icons, palapeli's table textures
        with Image.open(path) as image:
            if min(image.size) >= MIN_SHORT_SIDE:
                files.append(PictureFile(path, package))
    return sorted(files, key=lambda f: f.path.name)


def picture_key(stem: str) -> str:
    """One picture's files share it: `adwaita-l`/`adwaita-d`, `Sway_…_1920x1080[_Portrait]`."""
    return re.sub(r"(-[ld]|_\d+x\d+(_Portrait)?)$", "", stem)


def group_pictures(files: list[PictureFile]) -> list[tuple[str, str, list[Path]]]:
    """(name, series, files) of each picture."""
    groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for file in files:
        groups[(picture_key(file.path.stem), file.series)].append(file.path)
    return [(name, series, paths) for (name, series), paths in sorted(groups.items())]


def load_picture(name: str, series: str, paths: list[Path]) -> Picture:
    """The largest file not named as a variant is the picture; its other sizes are copies the
    package itself published; `-d` and `_Portrait` files are variants."""
    variants: list[tuple[VariantKind, Path]] = []
    sizes: list[tuple[int, Path]] = []
    for path in paths:
        if path.stem.endswith("-d"):
            variants.append((VariantKind.NIGHT, path))
        elif path.stem.endswith("_Portrait"):
            variants.append((VariantKind.PORTRAIT, path))
        else:
            with Image.open(path) as image:
                sizes.append((image.width * image.height, path))
    sizes.sort(reverse=True)
    main = sizes[0][1]
    picture = Picture(f"{series}/{name}", series, open_crawl_size(main))
    for _, path in sizes[1:]:
        with Image.open(path) as image:
            picture.published_sizes.append((f"{image.width}x{image.height}", crawl_size(image)))
    picture.variants = [(kind, open_crawl_size(path)) for kind, path in variants]
    return picture


def sklearn_pictures() -> list[Picture]:
    """The photographs `sklearn.datasets.load_sample_images` reads, read from their files."""
    folder = resources.files("sklearn.datasets.images")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".jpg"))
    pictures = []
    for name in names:
        with Image.open(io.BytesIO(folder.joinpath(name).read_bytes())) as image:
            picture = Picture(f"scikit-learn/{Path(name).stem}", "scikit-learn", crawl_size(image))
        pictures.append(picture)
    return pictures


def source_picture(source: SourcePicture) -> Picture:
    with Image.open(io.BytesIO(source.data)) as image:
        return Picture(source.name, source.series, crawl_size(image))


def load_pictures(limit: int | None) -> list[Picture]:
    """Pictures taken in turn from each series, so a small `limit` still mixes them."""
    grouped: dict[str, list[tuple[str, str, list[Path]]]] = {}
    for package in PHOTO_PACKAGES:
        grouped[package] = group_pictures(package_pictures(package))
    more: dict[str, list[SourcePicture]] = defaultdict(list)
    for source in gcompris_photos() + jigzo_photos():
        more[source.series].append(source)
    order: list[tuple[str, str, list[Path]] | Picture | SourcePicture] = []
    queues: list[list[tuple[str, str, list[Path]]] | list[Picture] | list[SourcePicture]] = [
        grouped["palapeli-data"],
        sklearn_pictures(),
        grouped["gnome-backgrounds"],
        grouped["sway-backgrounds"],
        *(more[series] for series in sorted(more)),
    ]
    for round_index in range(max(len(q) for q in queues)):
        order.extend(q[round_index] for q in queues if round_index < len(q))
    chosen = order[:limit] if limit else order
    return [
        item
        if isinstance(item, Picture)
        else source_picture(item)
        if isinstance(item, SourcePicture)
        else load_picture(*item)
        for item in chosen
    ]


# ---- the decision as the service makes it


@dataclass(frozen=True)
class Features:
    """What the embedder returns for an image that dedup decides on."""

    vectors: Vectors  # (n, dim), L2-normalised
    phashes: npt.NDArray[np.uint64]

    def take(self, rows: npt.NDArray[np.int64]) -> Features:
        return Features(self.vectors[rows], self.phashes[rows])


@dataclass
class Timings:
    prepare_seconds: float = 0.0  # decode + pHash + tensor
    embed_seconds: float = 0.0
    images: int = 0


class CurrentMethod:
    """Today's default: the default model's embedding, cosine ≥ ε to the nearest stored image
    (the pipeline); pHash within `max_hamming` (the bulk uploader's pre-check)."""

    def __init__(self) -> None:
        embedder_settings = EmbedderSettings()
        dedup_settings = DedupSettings()
        self.model_name = embedder_settings.default_model
        registered = discover_models(embedder_settings.models_dir)[self.model_name]
        self.model = LoadedModel(registered, RuntimeSettings())
        self.threshold = dedup_settings.threshold_for(self.model_name)
        self.max_hamming = dedup_settings.max_hamming
        self.timings = Timings()

    def features(self, blobs: Sequence[bytes]) -> Features:
        manifest = self.model.manifest
        draft = max(DEFAULT_DRAFT_SHORT_SIDE, manifest.resize_target)  # as ServingModel.prepare
        vectors: list[Vectors] = []
        phashes: list[int] = []
        for start in range(0, len(blobs), EMBED_BATCH):
            began = time.perf_counter()
            tensors = []
            for data in blobs[start : start + EMBED_BATCH]:
                decoded = decode_image(data, ImageLimits(), draft_short_side=draft)
                phashes.append(int(decoded.phash, 16))
                tensors.append(to_input_tensor(decoded.pixels, manifest))
            prepared = time.perf_counter()
            vectors.append(self.model.forward(np.stack(tensors)).embeddings)
            self.timings.prepare_seconds += prepared - began
            self.timings.embed_seconds += time.perf_counter() - prepared
            self.timings.images += len(tensors)
        if not vectors:
            empty = np.zeros((0, manifest.embedding_dim), dtype=np.float32)
            return Features(empty, np.zeros(0, dtype=np.uint64))
        return Features(np.concatenate(vectors), np.array(phashes, dtype=np.uint64))

    def pipeline_duplicate_of(self, stored: Features, query: Features) -> npt.NDArray[np.int64]:
        """Per query, the stored image it would be recorded as a duplicate of, or -1."""
        cosines = query.vectors @ stored.vectors.T
        best = cosines.argmax(axis=1)
        found = cosines[np.arange(len(best)), best] >= self.threshold
        return np.where(found, best, -1).astype(np.int64)

    def uploader_duplicate_of(self, stored: Features, query: Features) -> npt.NDArray[np.int64]:
        distances = hamming(query.phashes, stored.phashes)
        best = distances.argmin(axis=1)
        found = distances[np.arange(len(best)), best] <= self.max_hamming
        return np.where(found, best, -1).astype(np.int64)


class PixelCheck:
    """The new default: the nearest stored images with cosine >= the model's candidate
    threshold (at most `max_candidates`) are checked on their pixels
    (services/dedup/verification.py, `first_copy`, as the dedup service decides); a candidate
    whose pixels cannot tell (too little texture) is a duplicate when its cosine reaches ε."""

    def __init__(self, method: CurrentMethod) -> None:
        settings = DedupSettings()
        self.settings = settings.verification
        self.candidate_threshold = settings.candidate_threshold_for(method.model_name)
        self.threshold = method.threshold
        self.feature_seconds = 0.0
        self.features_made = 0
        self.check_seconds = 0.0
        self.checks = 0

    def features(self, blobs: Sequence[bytes]) -> list[LocalFeatures]:
        began = time.perf_counter()
        made = [local_features(data, self.settings) for data in blobs]
        self.feature_seconds += time.perf_counter() - began
        self.features_made += len(made)
        return made

    def check(self, query: LocalFeatures, candidate: LocalFeatures, cosine: float) -> Verdict:
        began = time.perf_counter()
        verdict = verify(query, candidate, self.settings, cosine >= self.settings.mirror_from)
        self.check_seconds += time.perf_counter() - began
        self.checks += 1
        return verdict

    def duplicate_of(
        self,
        stored: Features,
        stored_local: list[LocalFeatures],
        query: Features,
        query_local: list[LocalFeatures],
    ) -> npt.NDArray[np.int64]:
        """Per query, the stored image it would be recorded as a duplicate of, or -1."""
        cosines = query.vectors @ stored.vectors.T
        decisions = np.full(len(query_local), -1, dtype=np.int64)
        for row, local in enumerate(query_local):
            nearest = np.argsort(-cosines[row])[: self.settings.max_candidates]
            candidates = [
                (str(j), float(cosines[row, j]))
                for j in nearest
                if cosines[row, j] >= self.candidate_threshold
            ]

            def check(j: str, cosine: float, local: LocalFeatures = local) -> Verdict:
                return self.check(local, stored_local[int(j)], cosine)

            found = first_copy(candidates, self.threshold, check)
            if found is not None:
                decisions[row] = int(found[0])
        return decisions

    def pairs(
        self,
        earlier: list[LocalFeatures],
        later: list[LocalFeatures],
        cosines: npt.NDArray[np.float64],
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
        """Whether `later[i]`, uploaded after `earlier[i]`, is called its duplicate; and for the
        ROC, -1 below the candidate threshold, else the pixels' agreement (the cosine where the
        pixels cannot tell)."""
        matched = np.zeros(len(earlier), dtype=np.bool_)
        scores = np.full(len(earlier), -1.0, dtype=np.float64)
        for row, (a, b, cosine) in enumerate(zip(earlier, later, cosines, strict=True)):
            if cosine < self.candidate_threshold:
                continue
            began = time.perf_counter()
            score = agreement(b, a, self.settings, cosine >= self.settings.mirror_from)
            self.check_seconds += time.perf_counter() - began
            self.checks += 1

            def verdict(_: str, __: float, score: float | None = score) -> Verdict:
                return verdict_of(score, self.settings)

            matched[row] = first_copy([("", float(cosine))], self.threshold, verdict) is not None
            scores[row] = float(cosine) if score is None else score
        return matched, scores


def hamming(a: npt.NDArray[np.uint64], b: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    return np.asarray(np.bitwise_count(a[:, None] ^ b[None, :]), dtype=np.int64)


def pair_cosines(a: Features, b: Features) -> npt.NDArray[np.float64]:
    return np.asarray(np.einsum("ij,ij->i", a.vectors, b.vectors), dtype=np.float64)


def pair_hamming(a: Features, b: Features) -> npt.NDArray[np.int64]:
    return np.asarray(np.bitwise_count(a.phashes ^ b.phashes), dtype=np.int64)


# ---- the benchmark set


@dataclass(frozen=True)
class CopyCase:
    picture: int
    kind: CopyKind
    strength: str


@dataclass(frozen=True)
class NegativePair:
    picture: str
    kind: str
    first: bytes
    second: bytes


@dataclass(frozen=True)
class VariantCase:
    picture: int
    kind: VariantKind
    data: bytes


def build_set(
    pictures: list[Picture], seed: int
) -> tuple[list[bytes], list[CopyCase], list[bytes], list[NegativePair], list[VariantCase]]:
    """Originals, copies, hard-negative crop pairs and variant pairs (the pairs of different
    pictures are made from the originals' features)."""
    rng = np.random.default_rng(seed)
    originals = [encode(p.image, quality=ORIGINAL_JPEG_QUALITY) for p in pictures]
    cases: list[CopyCase] = []
    copies: list[bytes] = []
    crops: list[NegativePair] = []
    variants: list[VariantCase] = []
    for index, picture in enumerate(pictures):
        for copy in copies_of(picture.image, rng):
            cases.append(CopyCase(index, copy.kind, copy.strength))
            copies.append(copy.data)
        for size, image in picture.published_sizes:
            cases.append(CopyCase(index, CopyKind.PUBLISHED_SIZE, size))
            copies.append(encode(image))
        for kind, first, second in hard_negative_crops(picture.image):
            crops.append(NegativePair(picture.name, kind, encode(first), encode(second)))
        for variant_kind, image in picture.variants:
            variants.append(VariantCase(index, variant_kind, encode(image)))
    return originals, cases, copies, crops, variants


# ---- figures


def auc(positives: npt.NDArray[np.float64], negatives: npt.NDArray[np.float64]) -> float:
    """Probability that a copy scores above a negative (ties count half): the ROC's area."""
    greater = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(greater + ties / 2)


def tpr_at_fpr(
    positives: npt.NDArray[np.float64], negatives: npt.NDArray[np.float64], rate: float
) -> tuple[float, float]:
    """(true-positive rate, threshold) at the lowest threshold whose false-positive rate is at
    most `rate` (a score counts as a match when above the threshold)."""
    allowed = int(np.floor(rate * negatives.size))
    ordered = np.sort(negatives)[::-1]
    threshold = float(ordered[allowed]) if allowed < ordered.size else -np.inf
    return float((positives > threshold).mean()), threshold


def roc_line(
    signal: str,
    positives: npt.NDArray[np.float64],
    negatives: npt.NDArray[np.float64],
    describe: Callable[[float], str],
) -> str:
    """AUC, and the TPR at each of `FALSE_POSITIVE_RATES` with the threshold it takes."""
    parts = []
    for rate in FALSE_POSITIVE_RATES:
        tpr, threshold = tpr_at_fpr(positives, negatives, rate)
        parts.append(f"TPR {tpr:.3f} at FPR {rate:g} ({describe(threshold)})")
    return f"ROC {signal}: AUC {auc(positives, negatives):.4f}; " + "; ".join(parts)


def rate(hits: int, total: int) -> str:
    return f"{hits / total:.3f}" if total else "n/a"


@dataclass(frozen=True)
class Measured:
    """Every score the figures come from, for one method."""

    pictures: list[Picture]
    cases: list[CopyCase]
    copy_decisions: dict[str, npt.NDArray[np.int64]]  # by rule: the picture matched, or -1
    own_cosines: npt.NDArray[np.float64]  # each copy against its own original
    own_hamming: npt.NDArray[np.int64]
    distinct_cosines: npt.NDArray[np.float64]  # each pair of different pictures
    distinct_hamming: npt.NDArray[np.int64]
    same_series: npt.NDArray[np.bool_]  # of those pairs, the ones from one package
    crops: list[NegativePair]
    crop_cosines: npt.NDArray[np.float64]
    crop_hamming: npt.NDArray[np.int64]
    variants: list[VariantCase]
    variant_cosines: npt.NDArray[np.float64]
    variant_hamming: npt.NDArray[np.int64]
    decide_seconds_per_copy: float
    # the new default (PixelCheck): which negative pairs it calls duplicates, its ROC scores
    distinct_checked: npt.NDArray[np.bool_]
    crops_checked: npt.NDArray[np.bool_]
    variants_checked: npt.NDArray[np.bool_]
    own_pixel_scores: npt.NDArray[np.float64]
    negative_pixel_scores: npt.NDArray[np.float64]


def measure(
    method: CurrentMethod, check: PixelCheck, pictures: list[Picture], seed: int
) -> Measured:
    originals, cases, copies, crops, variants = build_set(pictures, seed)
    stored = method.features(originals)
    found = method.features(copies)
    crop_first = method.features([p.first for p in crops])
    crop_second = method.features([p.second for p in crops])
    variant_features = method.features([v.data for v in variants])
    stored_local = check.features(originals)
    found_local = check.features(copies)
    crop_first_local = check.features([p.first for p in crops])
    crop_second_local = check.features([p.second for p in crops])
    variant_local = check.features([v.data for v in variants])
    truth = np.array([c.picture for c in cases], dtype=np.int64)
    first, second = np.triu_indices(len(pictures), k=1)
    variant_of = np.array([v.picture for v in variants], dtype=np.int64)
    began = time.perf_counter()
    pipeline_decisions = method.pipeline_duplicate_of(stored, found)
    decide_seconds = time.perf_counter() - began
    own_cosines = pair_cosines(stored.take(truth), found)
    distinct_cosines = (stored.vectors @ stored.vectors.T)[first, second].astype(np.float64)
    crop_cosines = pair_cosines(crop_first, crop_second)
    variant_cosines = pair_cosines(stored.take(variant_of), variant_features)
    # each pair of different pictures: the later one (higher index) uploaded after the other
    earlier = [stored_local[i] for i in first]
    later = [stored_local[j] for j in second]
    own_local = [stored_local[i] for i in truth]
    distinct_checked, distinct_scores = check.pairs(earlier, later, distinct_cosines)
    crops_checked, crop_scores = check.pairs(crop_first_local, crop_second_local, crop_cosines)
    return Measured(
        pictures=pictures,
        cases=cases,
        # each copy is uploaded after every original is stored
        copy_decisions={
            "old": pipeline_decisions,
            "new": check.duplicate_of(stored, stored_local, found, found_local),
            "uploader": method.uploader_duplicate_of(stored, found),
        },
        own_cosines=own_cosines,
        own_hamming=pair_hamming(stored.take(truth), found),
        distinct_cosines=distinct_cosines,
        distinct_hamming=hamming(stored.phashes, stored.phashes)[first, second],
        same_series=np.array(
            [pictures[i].series == pictures[j].series for i, j in zip(first, second, strict=True)],
            dtype=np.bool_,
        ),
        crops=crops,
        crop_cosines=crop_cosines,
        crop_hamming=pair_hamming(crop_first, crop_second),
        variants=variants,
        variant_cosines=variant_cosines,
        variant_hamming=pair_hamming(stored.take(variant_of), variant_features),
        decide_seconds_per_copy=decide_seconds / max(1, len(cases)),
        distinct_checked=distinct_checked,
        crops_checked=crops_checked,
        variants_checked=check.pairs(
            [stored_local[i] for i in variant_of], variant_local, variant_cosines
        )[0],
        own_pixel_scores=check.pairs(own_local, found_local, own_cosines)[1],
        negative_pixel_scores=np.concatenate([distinct_scores, crop_scores]),
    )


def print_recall_by_kind(measured: Measured, uploader_label: str) -> None:
    truth = np.array([c.picture for c in measured.cases], dtype=np.int64)
    correct = {rule: found == truth for rule, found in measured.copy_decisions.items()}
    groups: dict[tuple[CopyKind, str], list[int]] = defaultdict(list)
    for position, case in enumerate(measured.cases):
        groups[(case.kind, case.strength)].append(position)

    def line(label: str, rows: list[int]) -> str:
        return (
            f"{label} (n={len(rows)}): old recall {correct['old'][rows].mean():.2f}, "
            f"new recall {correct['new'][rows].mean():.2f}; "
            f"{uploader_label}recall {correct['uploader'][rows].mean():.2f}"
        )

    for kind in dict.fromkeys([kind for kind, _, _ in COPIES] + [CopyKind.PUBLISHED_SIZE]):
        strengths = [key for key in groups if key[0] is kind]
        for key in strengths:
            print(line(f"kind {kind} strength {key[1]}", groups[key]))
        if len(strengths) > 1:
            print(line(f"kind {kind}", [row for key in strengths for row in groups[key]]))


def print_decision(
    measured: Measured,
    rule: str,
    label: str,
    setting: str,
    distinct_matched: npt.NDArray[np.bool_],
    crops_matched: npt.NDArray[np.bool_],
) -> None:
    """Recall, precision and the false-match rate of one rule over the whole set."""
    truth = np.array([c.picture for c in measured.cases], dtype=np.int64)
    found = measured.copy_decisions[rule]
    true_positives = int((found == truth).sum())
    wrong_picture = int(((found >= 0) & (found != truth)).sum())
    negatives_called = int(distinct_matched.sum() + crops_matched.sum())
    negatives = distinct_matched.size + crops_matched.size
    called = true_positives + wrong_picture + negatives_called
    print(
        f"{label}overall: recall {true_positives / len(truth):.3f} precision "
        f"{rate(true_positives, called)} {setting} ({true_positives}/{len(truth)} copies found; "
        f"{wrong_picture} copies given another picture; {negatives_called} negative pairs "
        "called duplicates)"
    )
    series_of_case = np.array([measured.pictures[c.picture].series for c in measured.cases])
    by_series = [
        f"{series} {(found == truth)[series_of_case == series].mean():.3f} "
        f"(n={int((series_of_case == series).sum())})"
        for series in sorted(set(series_of_case.tolist()))
    ]
    print(f"{label}recall by series: " + ", ".join(by_series))
    same = measured.same_series
    parts = [
        f"one series {int(distinct_matched[same].sum())}/{int(same.sum())}",
        f"other series {int(distinct_matched[~same].sum())}/{int((~same).sum())}",
    ]
    for crop_kind in sorted({p.kind for p in measured.crops}):
        chosen = np.array([p.kind == crop_kind for p in measured.crops], dtype=np.bool_)
        parts.append(f"{crop_kind} {int(crops_matched[chosen].sum())}/{int(chosen.sum())}")
    print(
        f"{label}hard negatives: false-match rate {rate(negatives_called, negatives)} "
        f"({negatives_called}/{negatives}: " + ", ".join(parts) + ")"
    )
    names = [p.name for p in measured.pictures]
    first, second = np.triu_indices(len(names), k=1)
    matched = [f"{names[first[i]]} ~ {names[second[i]]}" for i in np.flatnonzero(distinct_matched)]
    matched += [
        f"{p.picture} {p.kind}" for p, hit in zip(measured.crops, crops_matched, strict=True) if hit
    ]
    if matched:
        print(f"{label}hard negatives called duplicates: " + "; ".join(matched))


def print_variants(measured: Measured, threshold: float, max_hamming: int) -> None:
    for variant_kind in sorted({v.kind for v in measured.variants}):
        chosen = np.array([v.kind == variant_kind for v in measured.variants], dtype=np.bool_)
        cosines = measured.variant_cosines[chosen]
        print(
            f"variants (counted on neither side) {variant_kind}: old calls "
            f"{int((cosines >= threshold).sum())}/{int(chosen.sum())} duplicates (cosine median "
            f"{np.median(cosines):.3f}), new "
            f"{int(measured.variants_checked[chosen].sum())}/{int(chosen.sum())}; uploader "
            f"{int((measured.variant_hamming[chosen] <= max_hamming).sum())}/{int(chosen.sum())}"
        )


def print_roc(measured: Measured) -> None:
    negative_cosines = np.concatenate([measured.distinct_cosines, measured.crop_cosines])
    negative_hamming = np.concatenate([measured.distinct_hamming, measured.crop_hamming])
    print(
        f"ROC over {len(measured.cases)} copies (each against its own original) and "
        f"{negative_cosines.size} negative pairs:"
    )
    print(
        roc_line(
            "embedding cosine",
            measured.own_cosines,
            negative_cosines,
            lambda threshold: f"cosine > {threshold:.3f}",
        )
    )
    # negated, as a smaller distance is more alike: "above the threshold" is then a match
    print(
        roc_line(
            "pHash distance",
            -measured.own_hamming.astype(np.float64),
            -negative_hamming.astype(np.float64),
            lambda threshold: f"distance < {-threshold:.0f}",
        )
    )
    print(
        roc_line(
            "pixel check (new; -1 below the candidate cosine)",
            measured.own_pixel_scores,
            measured.negative_pixel_scores,
            lambda threshold: f"agreement > {threshold:.3f}",
        )
    )


def print_timing(method: CurrentMethod, check: PixelCheck, measured: Measured) -> None:
    """Per image: what the embedder does for dedup, then the decision over the stored ones."""
    timings = method.timings
    checks_per_copy = check.checks / max(1, len(measured.cases) + measured.distinct_cosines.size)
    print(
        f"pixel check: local features {1000 * check.feature_seconds / check.features_made:.1f} "
        f"ms per image, {1000 * check.check_seconds / max(1, check.checks):.1f} ms per "
        f"candidate checked ({check.checks} checks, {checks_per_copy:.2f} per decision)"
    )
    print(
        f"time per image ({timings.images} images, one process): decode + pHash + preprocess "
        f"{1000 * timings.prepare_seconds / timings.images:.1f} ms, embed "
        f"{1000 * timings.embed_seconds / timings.images:.1f} ms (batches of {EMBED_BATCH}), "
        f"decision against the {len(measured.pictures)} stored "
        f"{1000 * measured.decide_seconds_per_copy:.3f} ms (exact scan in process)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=None, help="use only the first N pictures")
    parser.add_argument("--seed", type=int, default=0, help="random choices of the copies")
    args = parser.parse_args()

    pictures = load_pictures(args.photos)
    method = CurrentMethod()
    check = PixelCheck(method)
    measured = measure(method, check, pictures, args.seed)

    series_count: dict[str, int] = defaultdict(int)
    for picture in pictures:
        series_count[picture.series] += 1
    print(
        f"{len(pictures)} pictures ("
        + ", ".join(f"{series} {count}" for series, count in sorted(series_count.items()))
        + f"), long side <= {CRAWL_LONG_SIDE}; {len(measured.cases)} copies of "
        f"{len({c.kind for c in measured.cases})} kinds; seed {args.seed}"
    )
    print(
        f"model {method.model_name}, ε {method.threshold:.2f} (DedupSettings); old: "
        "duplicate of the stored image of highest cosine if >= ε, pHash not consulted; new: "
        f"the {check.settings.max_candidates} nearest with cosine >= "
        f"{check.candidate_threshold:.2f} checked on their pixels (cosine >= ε where they "
        f"cannot tell); uploader pre-check: pHash within {method.max_hamming} bits"
    )
    uploader_label = f"uploader pHash<={method.max_hamming} "
    print_recall_by_kind(measured, uploader_label)
    print_decision(
        measured,
        "old",
        "old ",
        f"at ε {method.threshold:.2f}",
        measured.distinct_cosines >= method.threshold,
        measured.crop_cosines >= method.threshold,
    )
    print_decision(
        measured,
        "new",
        "new ",
        f"from cosine {check.candidate_threshold:.2f}, pixel-checked",
        measured.distinct_checked,
        measured.crops_checked,
    )
    print_decision(
        measured,
        "uploader",
        uploader_label,
        f"within {method.max_hamming}",
        measured.distinct_hamming <= method.max_hamming,
        measured.crop_hamming <= method.max_hamming,
    )
    print_variants(measured, method.threshold, method.max_hamming)
    print_roc(measured)
    print_timing(method, check, measured)


if __name__ == "__main__":
    main()
