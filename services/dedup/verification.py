"""Whether two images are copies of one picture, judged on their pixels.

A global embedding puts a grayscale, cropped, framed or watermarked copy near its original but
also puts two photos of one kind of scene near each other, so no single cosine separates them
(bench/dedup_quality.py). Near candidates are therefore checked the way copy detection does:
ORB keypoints of both images (grey, so colour changes do not matter) are matched, a similarity
transform (rotation, scale, shift; the query is also tried mirrored) is fitted with RANSAC, and
the aligned grey pixels are compared tile by tile. A copy agrees on most tiles however it was
cropped, framed, re-compressed or recoloured; another photo of the same scene cannot be aligned
with it pixel for pixel. Tiles rather than the whole overlap, so that a caption bar or a
watermark over a few tiles does not hide the agreement of the rest.

An image with too little texture for keypoints (a gradient, a flat render) gets no verdict:
`Verdict.UNSURE`, and the embedding's cosine decides as before.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image
from prometheus_client import CollectorRegistry, Counter

from services.common.errors import ServiceError
from services.common.images import ImageLimits, upright_rgb
from services.common.storage import ObjectNotFoundError, ObjectStore
from services.dedup.config import VerificationSettings

GreyImage = npt.NDArray[np.uint8]
logger = logging.getLogger(__name__)

cv2.setNumThreads(1)  # one check per request thread: the service's threads are the parallelism

RATIO_TEST = 0.85  # Lowe's ratio: a match counts when clearly better than the second best
RANSAC_PIXELS = 5.0  # reprojection error of an inlier at `long_side` resolution
TILES = 4  # the overlap is compared on a TILES × TILES grid
MIN_TILE_COVER = 0.5  # a tile counts when the aligned image covers at least half of it
MIN_TILE_CONTRAST = 4.0  # grey-level standard deviation below which a tile is flat (no say)
MIN_TILES = 3  # fewer comparable tiles than this: no verdict from the pixels
# Both images are brought to one size first, so keypoints need only cover what a crop or a
# screenshot changes of the scale: 1.2⁴ ≈ 2×.
PYRAMID_LEVELS = 5
MIN_SIDE = 32  # ORB's patch (31 px) must fit: a thinner image gets no keypoints, so no verdict
MISSING_LOGGED_EVERY = 1000  # a store that is not the images' is said once, then now and again


class Verdict(StrEnum):
    COPY = "copy"
    DIFFERENT = "different"
    UNSURE = "unsure"  # too little texture to judge: the embedding's cosine decides


@dataclass(frozen=True)
class Keypoints:
    points: npt.NDArray[np.float32]  # (n, 2) x, y
    descriptors: npt.NDArray[np.uint8] | None  # (n, 32) ORB


@dataclass
class LocalFeatures:
    """An image as the check sees it: grey at `long_side`, with its keypoints (and those of its
    mirror image, computed when first needed)."""

    grey: GreyImage
    keypoints: Keypoints
    _mirrored: LocalFeatures | None = field(default=None, repr=False)

    def mirrored(self, settings: VerificationSettings) -> LocalFeatures:
        if self._mirrored is None:
            self._mirrored = features_of_grey(np.ascontiguousarray(self.grey[:, ::-1]), settings)
        return self._mirrored


def grey_image(data: bytes, long_side: int) -> GreyImage:
    """The image as grey pixels with a long side of `long_side`, seen as the embedder sees it
    (upright, transparency on white; a JPEG decoded at a reduced scale when it can be)."""
    grey = upright_rgb(data, ImageLimits(), long_side).convert("L")
    # every image at the same size, so that a copy is compared at its original's scale (and a
    # thumbnail has keypoints at all)
    scale = long_side / max(grey.size)
    size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
    return np.asarray(grey.resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)


def features_of_grey(grey: GreyImage, settings: VerificationSettings) -> LocalFeatures:
    if min(grey.shape) < MIN_SIDE:  # a sliver (a banner 40 times wider than tall): no keypoints
        return LocalFeatures(grey, Keypoints(np.zeros((0, 2), np.float32), None))
    orb = cv2.ORB.create(nfeatures=settings.keypoints, fastThreshold=7, nlevels=PYRAMID_LEVELS)
    found, descriptors = orb.detectAndCompute(grey, None)
    points = np.array([k.pt for k in found], dtype=np.float32).reshape(-1, 2)
    return LocalFeatures(
        grey, Keypoints(points, None if descriptors is None else np.asarray(descriptors, np.uint8))
    )


def local_features(data: bytes, settings: VerificationSettings) -> LocalFeatures:
    return features_of_grey(grey_image(data, settings.long_side), settings)


def _fit_similarity(
    query: Keypoints, candidate: Keypoints, min_inliers: int
) -> npt.NDArray[np.float64] | None:
    """The 2×3 similarity mapping query points onto the candidate's, if enough matches agree."""
    assert query.descriptors is not None and candidate.descriptors is not None
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query.descriptors, candidate.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO_TEST * p[1].distance]
    if len(good) < min_inliers:
        return None
    source = query.points[[m.queryIdx for m in good]]
    target = candidate.points[[m.trainIdx for m in good]]
    matrix, inliers = cv2.estimateAffinePartial2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS, maxIters=2000
    )
    if matrix is None or inliers is None or int(inliers.sum()) < min_inliers:
        return None
    return np.asarray(matrix, dtype=np.float64)


def tile_agreement(
    query: GreyImage, candidate: GreyImage, matrix: npt.NDArray[np.float64]
) -> float | None:
    """Median correlation, over the candidate's tiles, of the query aligned onto it (None when
    too few tiles can be compared)."""
    size = (candidate.shape[1], candidate.shape[0])
    aligned = cv2.warpAffine(query.astype(np.float32), matrix, size, flags=cv2.INTER_LINEAR)
    warped_ones = cv2.warpAffine(np.ones_like(query), matrix, size, flags=cv2.INTER_NEAREST)
    cover = cv2.erode(warped_ones, np.ones((5, 5), np.uint8)) > 0  # no resampled edge
    aligned = cv2.GaussianBlur(aligned, (5, 5), 1.5)
    target = cv2.GaussianBlur(candidate.astype(np.float32), (5, 5), 1.5)
    height, width = candidate.shape
    correlations = []
    for row in range(TILES):
        for column in range(TILES):
            rows = slice(row * height // TILES, (row + 1) * height // TILES)
            columns = slice(column * width // TILES, (column + 1) * width // TILES)
            inside = cover[rows, columns]
            if inside.mean() < MIN_TILE_COVER:
                continue
            a, b = aligned[rows, columns][inside], target[rows, columns][inside]
            if a.std() < MIN_TILE_CONTRAST or b.std() < MIN_TILE_CONTRAST:
                continue
            a, b = a - a.mean(), b - b.mean()
            correlations.append(float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())))
    return float(np.median(correlations)) if len(correlations) >= MIN_TILES else None


def agreement(
    query: LocalFeatures,
    candidate: LocalFeatures,
    settings: VerificationSettings,
    mirror: bool = True,
) -> float | None:
    """How well `query`, as it is or mirrored, aligns onto `candidate`: the median tile
    correlation (the mirror is tried only when the image as it is falls short; 0.0 when
    neither aligns), or None when either image has too little texture to judge (too few
    keypoints, or aligned with too few textured tiles to compare)."""
    if min(len(query.keypoints.points), len(candidate.keypoints.points)) < settings.min_keypoints:
        return None
    best = 0.0
    aligned_without_texture = False
    views = (query, query.mirrored(settings)) if mirror else (query,)
    for view in views:
        if len(view.keypoints.points) < settings.min_keypoints:
            continue
        matrix = _fit_similarity(view.keypoints, candidate.keypoints, settings.min_inliers)
        if matrix is None:
            continue
        score = tile_agreement(view.grey, candidate.grey, matrix)
        if score is None:  # aligned, but too few tiles with texture to compare (an object on
            aligned_without_texture = True  # a white ground): no verdict from this view
            continue
        best = max(best, score)
        if best >= settings.min_agreement:
            return best
    return None if aligned_without_texture else best


def verify(
    query: LocalFeatures,
    candidate: LocalFeatures,
    settings: VerificationSettings,
    mirror: bool = True,
) -> Verdict:
    """Is `query` a copy of `candidate` (as it is, or, with `mirror`, mirrored)?"""
    return verdict_of(agreement(query, candidate, settings, mirror), settings)


def verdict_of(score: float | None, settings: VerificationSettings) -> Verdict:
    """The verdict an `agreement` score gives."""
    if score is None:
        return Verdict.UNSURE
    return Verdict.COPY if score >= settings.min_agreement else Verdict.DIFFERENT


def first_copy(
    candidates: Sequence[tuple[str, float]],
    threshold: float,
    check: Callable[[str, float], Verdict],
) -> tuple[str, float, Verdict] | None:
    """The decision on near candidates (id, cosine), nearest first: the first one the pixels
    call a copy, or whose cosine reaches ε where the pixels cannot tell; one the pixels call
    different is passed over, however near its embedding is."""
    for candidate, cosine in candidates:
        verdict = check(candidate, cosine)
        if verdict is Verdict.COPY or (verdict is Verdict.UNSURE and cosine >= threshold):
            return candidate, cosine, verdict
    return None


class PixelChecker:
    """Local features of stored images, read from the shared store by id (an image's id is its
    key there). The last `cached_images` are kept (about 60 KB each): the image just inserted
    is the likeliest candidate of the next ones (a crawl's shard, an album), and a popular
    original is checked against each new copy of it."""

    def __init__(
        self,
        store: ObjectStore,
        settings: VerificationSettings,
        registry: CollectorRegistry | None = None,
    ):
        self.store = store
        self.settings = settings
        self._features: OrderedDict[str, LocalFeatures | None] = OrderedDict()
        self._lock = threading.Lock()
        self.stored_missing = 0  # images sent as stored that this store does not have
        self._missing_counter = Counter(
            "seavl_dedup_stored_images_missing",
            "Images sent as stored that this service's store does not have (no pixel check: is "
            "its storage setting the one the images are written to?)",
            registry=registry,
        )

    def features(self, image_id: str, sent_as_stored: bool = False) -> LocalFeatures | None:
        """None when the image is not in the store or is not an image the check can read. An
        image `sent_as_stored` that is not in the store means that this service reads another
        store than the one images are written to, and checks no pixels at all: counted, and
        logged (the first time, then every `MISSING_LOGGED_EVERY`)."""
        with self._lock:
            if image_id in self._features:
                self._features.move_to_end(image_id)
                return self._features[image_id]
        try:
            made = self.features_of_bytes(self.store.get(image_id))
        except ObjectNotFoundError:
            if sent_as_stored:
                self._missing(image_id)
            return None  # not kept: it may be stored later
        with self._lock:
            self._features[image_id] = made
            while len(self._features) > self.settings.cached_images:
                self._features.popitem(last=False)
        return made

    def _missing(self, image_id: str) -> None:
        with self._lock:
            self.stored_missing += 1
            missing = self.stored_missing
        self._missing_counter.inc()
        if missing == 1 or missing % MISSING_LOGGED_EVERY == 0:
            logger.warning(
                "image %s was sent as stored, but %s does not have it (%d such images so "
                "far): no pixel check runs while the storage setting differs from the one the "
                "images are written to (the embedding alone decides)",
                image_id,
                self.store.describe(),
                missing,
            )

    def check(self, query: LocalFeatures | None, candidate_id: str, cosine: float) -> Verdict:
        """`query` against the stored image `candidate_id`, at `cosine` by their embeddings
        (no verdict without both images)."""
        if query is None:
            return Verdict.UNSURE
        candidate = self.features(candidate_id)
        if candidate is None:
            return Verdict.UNSURE
        return verify(query, candidate, self.settings, mirror=cosine >= self.settings.mirror_from)

    def features_of_bytes(self, data: bytes) -> LocalFeatures | None:
        """None for bytes the check cannot read (the embedding then decides): a decision is
        never lost to the pixel check, whatever a stored file holds."""
        try:
            return local_features(data, self.settings)
        except ServiceError as exc:  # what intake would refuse (over the default limits, say)
            logger.info("pixel check skipped: %s: %s", exc.code, exc.message)
        except Exception:
            logger.warning("pixel check skipped: the image could not be read", exc_info=True)
        return None
