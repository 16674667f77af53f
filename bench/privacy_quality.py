"""Which face and plate detectors should the privacy pass use? Recall, false positives and cost
of each candidate, on real photos with hand-drawn truth, in one run.

    .venv/bin/python bench/privacy_quality.py [--faces-only] [--photos N] [--repeat 1]

People photos: the 25 of bench/privacy_truth.json (bench/_people_photos.py; 35 faces, 10
plates, boxes drawn by eye, `hard` ones: tiny, strong profile, cut or hidden). Negatives: 25
photos with nobody in them, looked at one by one: gnome-backgrounds' eight day wallpapers (the
`-l` files: renders and textures, no photographs of people) and sway-backgrounds' 1920x1080 one,
palapeli-data's five collection photos (castle, bridge, citrus, bee, chameleon), jigzo-data's
puzzle photos except heli (people on the yacht and in the cockpit), train and tobogan (someone
may be half-seen in them), and scikit-learn's china and flower. Any detection on them is false.

Candidates, each analysing the image scaled to a long side of at most its size, as
`PrivacyDetectors.analyse` does:
  faces  blazeface@640, blazeface@1024: MediaPipe's full- and short-range BlazeFace as ONNX
         (services/embedder/blazeface.py), each on the whole image once (the full-range one at
         a long side of 320, the short-range one at 128), kept from score 0.6 (the embedder's
         defaults); blazeface@640/384: the full-range one at 384; blazeface@640/0.5: from 0.5;
         mtcnn@640, mtcnn@1024, mtcnn@480: our MTCNN ONNX (services/embedder/mtcnn.py), faces
         from 20 px, kept from confidence 0.9 (the embedder's defaults); mtcnn@640/min32: from
         32 px (the cost is set by the smallest face looked for as a share of the picture);
         haar-default, haar-alt2: OpenCV's frontal cascades as the embedder runs them (equalised
         grey, scale 1.1, 5 neighbours, 20 px); haar-default+profile: the frontal one, then the
         profile cascade on the image and on its mirror image, a box overlapping one already
         kept by IoU > 0.3 dropped;
         skimage-lbp@640: scikit-image's LBP frontal cascade (scale 1.2, 20 px up; 640 because
         it costs ~1.3 s per image at 1024);
         nudenet-320n: the FACE_FEMALE/FACE_MALE boxes of NudeNet's 320n detector (opt-in, AGPL:
         taken out of its wheel in var/packages), its wheel's pre- and postprocessing redone in
         numpy (pad square, 320 px, argmax class from 0.2, class-blind NMS 0.25 / IoU 0.45).
  plates haar-russian@640, haar-russian@1024, haar-rus16: OpenCV's two plate cascades (4
         neighbours, 16 px, as the embedder runs the first); haar-russian@640/vehicles: the
         first where the encoder's classes give vehicles the embedder's `plates_from_vehicles`
         share (0.02), as the embedder runs it (its cost: 0 where it does not run).
A detection and a truth box match at IoU >= 0.3, greedily one to one, best IoU first. recall:
matched truth boxes over all of them (non-hard: over the non-hard ones; a hard box may be hit
but its miss is forgiven); covered: the share of truth boxes of which >= 70% of the area lies in
one detection grown by 15% per side, which is what blurring needs (the gateway's `margin`);
precision: matched detections over all on the people photos (a hit on a hard box is a hit);
fp/photo, fp/negative: unmatched detections per people photo and per negative photo.

Cost: median ms per image (over all photos, each timed `--repeat` times, its median taken) of
the resize and the detector; the encoder alone is the embedder's EfficientNet-Lite0 ONNX session
(`LoadedModel`) with its preprocessing (`to_input_tensor`) at batch 1; "default detectors" is
`PrivacyDetectors.analyse` with the default `DetectionSettings` (BlazeFace at 640, the Russian plate
cascade, and the NudeNet unsafe score when it could be prepared). Decoding is left out of both:
the embedder decodes once for both. onnxruntime runs with one intra-op thread and OpenCV with
one thread (cv2.setNumThreads(1)), so each figure is one core's cost per image and the ratio
encoder / (encoder + detectors) compares like with like; the issue's target for the pipeline
with detection on is >= 0.6 of its speed without. Decoding, HTTP, dedup and storage are in
neither figure, so the whole pipeline's ratio is higher than this one (bench/privacy_pipeline.py
measures that); this says what the detectors cost against the work they sit beside.

Small faces: the non-hard faces of the people photos that are at least 60 px wide, each cut out
with 30% of its width around it and pasted, shrunk, on a grey 640 x 480 picture (at a seeded
random place) so that the face is 3%, 4%, 6% or 10% of the long side; found when a detection
holds the face's centre. It says how small a face the BlazeFace and MTCNN candidates at 640
still find.

The last lines name the best default of each kind: the most non-hard recall at <= 0.1 false
positives per negative photo (ties: coverage, fewer false positives, speed).
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from PIL import Image
from skimage.data import lbp_frontal_face_cascade_filename
from skimage.feature import Cascade

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._more_pictures import jigzo_photos  # noqa: E402
from bench._people_photos import PACKAGE_DIR, Box, PeoplePhoto, people_photos  # noqa: E402
from services.embedder.config import (  # noqa: E402
    DetectionSettings,
    FaceModel,
    RuntimeSettings,
    face_model_dir,
)
from services.embedder.detection import (  # noqa: E402
    NUDENET_CLASSES,
    BlazeFaces,
    Found,
    HaarCascade,
    MtcnnFaces,
    Pixels,
    PrivacyDetectors,
    VehicleShare,
)
from services.embedder.models import discover_models  # noqa: E402
from services.embedder.prepare import (  # noqa: E402
    prepare_blazeface,
    prepare_default_model,
    prepare_face_model,
    prepare_unsafe_model,
)
from services.embedder.preprocess import to_input_tensor  # noqa: E402
from services.embedder.sessions import ForwardResult, LoadedModel  # noqa: E402

MATCH_IOU = 0.3
COVERED_SHARE = 0.7
BLUR_MARGIN = 0.15  # services/gateway/privacy.py grows each box by this much per side
MAX_FP_PER_NEGATIVE = 0.1  # what a default may cost on photos without people
MERGE_IOU = 0.3  # frontal + profile: a box overlapping one already kept by more is the same face
NUDENET_SIZE = 320
NUDENET_MIN_SCORE = 0.2  # the wheel keeps a row from here, then NMS from 0.25 at IoU 0.45
NUDENET_NMS_SCORE = 0.25
NUDENET_NMS_IOU = 0.45
NUDENET_FACES = frozenset(NUDENET_CLASSES.index(n) for n in ("FACE_FEMALE", "FACE_MALE"))
CPU = ["CPUExecutionProvider"]

GNOME_DIR = Path("/usr/share/backgrounds/gnome")
SWAY_WALLPAPER = Path("/usr/share/backgrounds/sway/Sway_Wallpaper_Blue_1920x1080.png")
PALAPELI_DIR = Path("/usr/share/palapeli/collection")
JIGZO_WITH_PEOPLE = frozenset({"jigzo/heli-4x3", "jigzo/train-2x2", "jigzo/tobogan-4x3"})

Boxes = npt.NDArray[np.float64]  # (N, 4): x0, y0, x1, y1
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Photos


@dataclass(frozen=True)
class Negative:
    name: str
    source: str  # the package it comes from
    image: Image.Image


def _open_rgb(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def negative_photos() -> list[Negative]:
    """The people-free photos named in the docstring, from those packages that are installed."""
    found: list[Negative] = []
    for path in sorted(GNOME_DIR.glob("*-l.webp")):
        found.append(
            Negative(f"gnome/{path.stem}", "gnome-backgrounds", _open_rgb(path.read_bytes()))
        )
    if SWAY_WALLPAPER.is_file():
        found.append(
            Negative("sway/blue", "sway-backgrounds", _open_rgb(SWAY_WALLPAPER.read_bytes()))
        )
    for path in sorted(PALAPELI_DIR.glob("*.jpg")):
        found.append(
            Negative(f"palapeli/{path.stem}", "palapeli-data", _open_rgb(path.read_bytes()))
        )
    if Path("/usr/share/games/jigzo").is_dir():
        for picture in jigzo_photos():
            if picture.name not in JIGZO_WITH_PEOPLE:
                found.append(Negative(picture.name, "jigzo-data", _open_rgb(picture.data)))
    folder = resources.files("sklearn.datasets.images")
    for name in ("china.jpg", "flower.jpg"):
        data = folder.joinpath(name).read_bytes()
        found.append(Negative(f"scikit-learn/{name}", "scikit-learn", _open_rgb(data)))
    return found


def analysed(image: Image.Image, long_side: int) -> tuple[Pixels, float, float]:
    """The pixels a detector at `long_side` sees (as `PrivacyDetectors.analyse` scales them), and
    the factors back to the original's pixels."""
    width, height = image.size
    scale = min(1.0, long_side / max(width, height))
    if scale < 1.0:
        image = image.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))),
            Image.Resampling.BILINEAR,
        )
    return np.asarray(image), width / image.width, height / image.height


# ---------------------------------------------------------------------------------------------
# Candidates


def _to_boxes(found: list[Found]) -> Boxes:
    return np.array([[f.x0, f.y0, f.x1, f.y1] for f in found], dtype=np.float64).reshape(-1, 4)


def iou_matrix(a: Boxes, b: Boxes) -> npt.NDArray[np.float64]:
    inter_w = np.clip(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    inter_h = np.clip(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    inter = inter_w * inter_h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def greedy_nms(boxes: Boxes, scores: npt.NDArray[np.float64], threshold: float) -> list[int]:
    """Indices kept, best score first: a box goes when its IoU with a kept one exceeds the
    threshold (what cv2.dnn.NMSBoxes does)."""
    order = list(np.argsort(-scores, kind="stable"))
    overlaps = iou_matrix(boxes, boxes)
    kept: list[int] = []
    for index in order:
        if all(overlaps[index, k] <= threshold for k in kept):
            kept.append(int(index))
    return kept


class Candidate:
    """One detector at one setting: boxes in the analysed image's pixels. A gated one runs only
    where the encoder's vehicle share reaches the embedder's `plates_from_vehicles`."""

    def __init__(
        self,
        kind: str,
        name: str,
        long_side: int,
        find: Callable[[Pixels], Boxes],
        gated: bool = False,
    ):
        self.kind = kind
        self.name = name
        self.long_side = long_side
        self.find = find
        self.gated = gated

    def detect(self, image: Image.Image, vehicles: float = 1.0) -> Boxes:
        """Boxes in the original image's pixels."""
        threshold = DetectionSettings().plates_from_vehicles
        if self.gated and threshold is not None and vehicles < threshold:
            return np.zeros((0, 4), dtype=np.float64)
        pixels, scale_x, scale_y = analysed(image, self.long_side)
        boxes = self.find(pixels).copy()
        boxes[:, [0, 2]] *= scale_x
        boxes[:, [1, 3]] *= scale_y
        return boxes


def face_finder(
    detector: type[MtcnnFaces | BlazeFaces], folder: Path, settings: DetectionSettings
) -> Callable[[Pixels], Boxes]:
    """One of the embedder's face detectors as it runs there (its confidence threshold too)."""
    faces = detector(folder, settings, CPU, 1)
    return lambda pixels: _to_boxes(faces.find(pixels))


def haar_finder(
    *files: str, min_neighbours: int, min_size: int, mirrored: str | None = None
) -> Callable[[Pixels], Boxes]:
    """The cascades' boxes, in order; `mirrored` also runs on the flipped image (the profile
    cascade knows one side only). Later boxes overlapping earlier kept ones are dropped."""
    cascades = [HaarCascade(file, file, min_neighbours, min_size) for file in files]
    flipped = HaarCascade(mirrored, mirrored, min_neighbours, min_size) if mirrored else None

    def find(pixels: Pixels) -> Boxes:
        parts = [_to_boxes(c.find(pixels)) for c in cascades]
        if flipped is not None:
            width = pixels.shape[1]
            mirror = _to_boxes(flipped.find(np.ascontiguousarray(pixels[:, ::-1])))
            parts.append(
                np.stack(
                    [width - mirror[:, 2], mirror[:, 1], width - mirror[:, 0], mirror[:, 3]], axis=1
                )
            )
        boxes = np.concatenate(parts, axis=0)
        if len(parts) == 1:
            return boxes
        # earlier boxes win: scores falling with the position
        return boxes[greedy_nms(boxes, -np.arange(len(boxes), dtype=np.float64), MERGE_IOU)]

    return find


def lbp_finder(min_size: int) -> Callable[[Pixels], Boxes]:
    cascade = Cascade(lbp_frontal_face_cascade_filename())  # type: ignore[no-untyped-call]

    def find(pixels: Pixels) -> Boxes:
        grey = np.asarray(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY), dtype=np.float32) / 255.0
        found = cascade.detect_multi_scale(
            grey,
            scale_factor=1.2,
            step_ratio=1,
            min_size=(min_size, min_size),
            max_size=grey.shape,
        )
        return np.array(
            [[d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]] for d in found],
            dtype=np.float64,
        ).reshape(-1, 4)

    return find


def nudenet_finder(path: Path) -> Callable[[Pixels], Boxes]:
    """The face boxes of nudenet 3.4.2's `NudeDetector.detect`, in numpy: the image padded
    square at its bottom and right with black, resized to 320 with cv2's bilinear resize, /255;
    rows whose best class score is >= 0.2 take that class; cv2.dnn.NMSBoxes(0.25, 0.45) over
    all classes together; boxes clipped to the image."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=CPU)
    input_name = session.get_inputs()[0].name

    def find(pixels: Pixels) -> Boxes:
        height, width = pixels.shape[:2]
        side = max(height, width)
        square = np.zeros((side, side, 3), dtype=np.uint8)
        square[:height, :width] = pixels
        resized = cv2.resize(square, (NUDENET_SIZE, NUDENET_SIZE), interpolation=cv2.INTER_LINEAR)
        tensor = (resized.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        rows = np.asarray(session.run(None, {input_name: tensor})[0])[0].T  # N x (4 + classes)
        scores = rows[:, 4:].max(axis=1)
        chosen = scores >= NUDENET_MIN_SCORE
        rows, scores = rows[chosen], scores[chosen].astype(np.float64)
        classes = rows[:, 4:].argmax(axis=1)
        unit = side / NUDENET_SIZE
        x = np.clip((rows[:, 0] - rows[:, 2] / 2) * unit, 0, width)
        y = np.clip((rows[:, 1] - rows[:, 3] / 2) * unit, 0, height)
        w = np.minimum(rows[:, 2] * unit, width - x)
        h = np.minimum(rows[:, 3] * unit, height - y)
        boxes = np.stack([x, y, x + w, y + h], axis=1).astype(np.float64)
        above = scores >= NUDENET_NMS_SCORE
        indices = np.flatnonzero(above)
        kept = indices[greedy_nms(boxes[above], scores[above], NUDENET_NMS_IOU)]
        return boxes[[int(k) for k in kept if int(classes[k]) in NUDENET_FACES]].reshape(-1, 4)

    return find


def _with(**changes: object) -> DetectionSettings:
    """The embedder's default detection settings but for `changes`."""
    return DetectionSettings().model_copy(update=changes)


def candidates(models: Path, nudenet: Path | None, faces_only: bool) -> list[Candidate]:
    mtcnn = partial(face_finder, MtcnnFaces, face_model_dir(models, FaceModel.MTCNN))
    blazeface = partial(face_finder, BlazeFaces, face_model_dir(models, FaceModel.BLAZEFACE))
    defaults = DetectionSettings()
    found = [
        Candidate("faces", "blazeface@640", 640, blazeface(defaults)),
        Candidate("faces", "blazeface@640/384", 640, blazeface(_with(full_range_side=384))),
        Candidate("faces", "blazeface@1024", 1024, blazeface(defaults)),
        Candidate("faces", "blazeface@640/0.5", 640, blazeface(_with(min_face_confidence=0.5))),
        Candidate("faces", "mtcnn@640", 640, mtcnn(defaults)),
        Candidate("faces", "mtcnn@1024", 1024, mtcnn(defaults)),
        # cheaper: the smallest face looked for a larger share of the picture
        Candidate("faces", "mtcnn@480", 480, mtcnn(defaults)),
        Candidate("faces", "mtcnn@640/min32", 640, mtcnn(_with(min_face_pixels=32))),
        Candidate(
            "faces",
            "haar-default@1024",
            1024,
            haar_finder("haarcascade_frontalface_default.xml", min_neighbours=5, min_size=20),
        ),
        Candidate(
            "faces",
            "haar-alt2@1024",
            1024,
            haar_finder("haarcascade_frontalface_alt2.xml", min_neighbours=5, min_size=20),
        ),
        Candidate(
            "faces",
            "haar-default+profile@1024",
            1024,
            haar_finder(
                "haarcascade_frontalface_default.xml",
                "haarcascade_profileface.xml",
                min_neighbours=5,
                min_size=20,
                mirrored="haarcascade_profileface.xml",
            ),
        ),
        Candidate("faces", "skimage-lbp@640", 640, lbp_finder(20)),
    ]
    if nudenet is not None:
        found.append(Candidate("faces", "nudenet-320n@1024", 1024, nudenet_finder(nudenet)))
    if not faces_only:
        found += [
            Candidate(
                "plates",
                "haar-russian@640",
                640,
                haar_finder("haarcascade_russian_plate_number.xml", min_neighbours=4, min_size=16),
            ),
            Candidate(
                "plates",
                "haar-russian@640/vehicles",
                640,
                haar_finder("haarcascade_russian_plate_number.xml", min_neighbours=4, min_size=16),
                gated=True,
            ),
            Candidate(
                "plates",
                "haar-russian@1024",
                1024,
                haar_finder("haarcascade_russian_plate_number.xml", min_neighbours=4, min_size=16),
            ),
            Candidate(
                "plates",
                "haar-rus16@1024",
                1024,
                haar_finder(
                    "haarcascade_license_plate_rus_16stages.xml", min_neighbours=4, min_size=16
                ),
            ),
        ]
    return found


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass
class Tally:
    truths: int = 0
    truths_easy: int = 0
    matched: int = 0
    matched_easy: int = 0
    covered: int = 0
    detections: int = 0  # on the people photos
    false_on_people: int = 0
    false_on_negatives: int = 0
    people: int = 0
    negatives: int = 0
    ms: list[float] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    def add_photo(self, name: str, truth: tuple[Box, ...], boxes: Boxes) -> None:
        self.people += 1
        self.detections += len(boxes)
        self.truths += len(truth)
        self.truths_easy += sum(not t.hard for t in truth)
        if not truth:
            self.false_on_people += len(boxes)
            return
        truth_boxes = np.array([[t.x0, t.y0, t.x1, t.y1] for t in truth], dtype=np.float64)
        pairs = greedy_match(truth_boxes, boxes)
        self.matched += len(pairs)
        self.matched_easy += sum(not truth[t].hard for t, _ in pairs)
        self.false_on_people += len(boxes) - len(pairs)
        covered = coverage(truth_boxes, boxes) >= COVERED_SHARE
        self.covered += int(covered.sum())
        matched_truths = {t for t, _ in pairs}
        self.missed += [
            f"{name}#{i}{' (hard)' if truth[i].hard else ''}"
            for i in range(len(truth))
            if i not in matched_truths
        ]

    def add_negative(self, boxes: Boxes) -> None:
        self.negatives += 1
        self.false_on_negatives += len(boxes)


def greedy_match(truth: Boxes, found: Boxes) -> list[tuple[int, int]]:
    """(truth, detection) pairs at IoU >= MATCH_IOU, one to one, highest IoU first."""
    if not len(found):
        return []
    overlaps = iou_matrix(truth, found)
    pairs: list[tuple[int, int]] = []
    used_truth: set[int] = set()
    used_found: set[int] = set()
    for flat in np.argsort(-overlaps, axis=None, kind="stable"):
        t, f = divmod(int(flat), overlaps.shape[1])
        if overlaps[t, f] < MATCH_IOU:
            break
        if t not in used_truth and f not in used_found:
            pairs.append((t, f))
            used_truth.add(t)
            used_found.add(f)
    return pairs


def coverage(truth: Boxes, found: Boxes) -> npt.NDArray[np.float64]:
    """For each truth box, the largest share of its area inside one detection grown by
    BLUR_MARGIN per side."""
    if not len(found):
        return np.zeros(len(truth))
    grow_x = (found[:, 2] - found[:, 0]) * BLUR_MARGIN
    grow_y = (found[:, 3] - found[:, 1]) * BLUR_MARGIN
    grown = np.stack(
        [found[:, 0] - grow_x, found[:, 1] - grow_y, found[:, 2] + grow_x, found[:, 3] + grow_y],
        axis=1,
    )
    inter_w = np.clip(
        np.minimum(truth[:, None, 2], grown[None, :, 2])
        - np.maximum(truth[:, None, 0], grown[None, :, 0]),
        0,
        None,
    )
    inter_h = np.clip(
        np.minimum(truth[:, None, 3], grown[None, :, 3])
        - np.maximum(truth[:, None, 1], grown[None, :, 1]),
        0,
        None,
    )
    area = (truth[:, 2] - truth[:, 0]) * (truth[:, 3] - truth[:, 1])
    return np.asarray((inter_w * inter_h / area[:, None]).max(axis=1), dtype=np.float64)


def ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def timed(run: Callable[[], T], repeat: int) -> tuple[T, float]:
    """The first run's result and the median ms of `repeat` runs."""
    times = []
    started = time.perf_counter()
    result = run()
    times.append((time.perf_counter() - started) * 1000)
    for _ in range(repeat - 1):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return result, statistics.median(times)


def encode(model: LoadedModel, image: Image.Image) -> ForwardResult:
    """What the encoder does to a decoded image, at batch 1: preprocessing and inference."""
    return model.forward(to_input_tensor(image, model.manifest)[None])


# ---------------------------------------------------------------------------------------------
# Running


def prepared_models(folder: Path) -> Path | None:
    """Prepares the encoder and the face detectors into `folder`; returns NudeNet's path, or
    None when its wheel can be neither found in var/packages nor fetched."""
    prepare_default_model(folder)
    prepare_face_model(folder)
    prepare_blazeface(folder, downloads=PACKAGE_DIR)
    try:
        return prepare_unsafe_model(folder, downloads=PACKAGE_DIR)
    except (subprocess.CalledProcessError, OSError, KeyError) as exc:
        print(f"NudeNet left out: its wheel could not be had ({exc})")
        return None


SMALL_FACE_SHARES = (0.03, 0.04, 0.06, 0.10)
SMALL_FACE_CANVAS = (480, 640)
SMALL_FACE_MIN_WIDTH = 60
SMALL_FACE_CANDIDATES = ("blazeface@640", "blazeface@640/384", "mtcnn@640", "mtcnn@640/min32")
SMALL_FACE_CONTEXT = 0.3


def small_faces(people: list[PeoplePhoto]) -> list[Pixels]:
    """The faces to shrink: non-hard, at least SMALL_FACE_MIN_WIDTH wide, with some context."""
    cut = []
    for photo in people:
        pixels = np.asarray(photo.image.convert("RGB"))
        for face in photo.faces:
            width = face.x1 - face.x0
            if face.hard or width < SMALL_FACE_MIN_WIDTH:
                continue
            margin = int(SMALL_FACE_CONTEXT * width)
            cut.append(
                pixels[
                    max(0, face.y0 - margin) : face.y1 + margin,
                    max(0, face.x0 - margin) : face.x1 + margin,
                ]
            )
    return cut


def small_face_line(candidate: Candidate, faces: list[Pixels]) -> str:
    """How many of `faces` the candidate finds at each share of the long side."""
    rng = np.random.default_rng(7)
    height, width = SMALL_FACE_CANVAS
    counts = []
    for share in SMALL_FACE_SHARES:
        found = 0
        for face in faces:
            # the face itself is `share` of the long side; the cut-out holds context around it
            face_width = max(1, round(width * share * (1 + 2 * SMALL_FACE_CONTEXT)))
            face_height = max(1, round(face_width * face.shape[0] / face.shape[1]))
            small = cv2.resize(face, (face_width, face_height), interpolation=cv2.INTER_AREA)
            canvas = np.full((height, width, 3), 120, dtype=np.uint8)
            y = int(rng.integers(0, height - face_height))
            x = int(rng.integers(0, width - face_width))
            canvas[y : y + face_height, x : x + face_width] = small
            centre_x, centre_y = x + face_width / 2, y + face_height / 2
            boxes = candidate.detect(Image.fromarray(canvas))
            found += any(
                b[0] <= centre_x <= b[2] and b[1] <= centre_y <= b[3] for b in boxes.tolist()
            )
        counts.append(f"{share:.0%} {found}/{len(faces)}")
    return f"small faces {candidate.name}: " + ", ".join(counts)


def line(candidate: Candidate, tally: Tally) -> str:
    fp_total = tally.false_on_people
    return (
        f"{candidate.kind} {candidate.name}: "
        f"recall {ratio(tally.matched, tally.truths):.2f} "
        f"(non-hard {ratio(tally.matched_easy, tally.truths_easy):.2f}) "
        f"covered {ratio(tally.covered, tally.truths):.2f}, "
        f"precision {ratio(tally.detections - fp_total, tally.detections):.2f}, "
        f"fp/photo {ratio(fp_total, tally.people):.2f}, "
        f"fp/negative {ratio(tally.false_on_negatives, tally.negatives):.2f}, "
        f"{statistics.median(tally.ms):.1f} ms"
    )


def best(kind: str, chosen: list[tuple[Candidate, Tally]]) -> str:
    """The candidate of most non-hard recall among those at most MAX_FP_PER_NEGATIVE false
    positives per negative; ties go to coverage, then fewer false positives, then speed."""
    allowed = [
        (c, t)
        for c, t in chosen
        if c.kind == kind and ratio(t.false_on_negatives, t.negatives) <= MAX_FP_PER_NEGATIVE
    ]
    if not allowed:
        return f"best default {kind}: none at fp/negative <= {MAX_FP_PER_NEGATIVE}"
    candidate, tally = max(
        allowed,
        key=lambda ct: (
            ratio(ct[1].matched_easy, ct[1].truths_easy),
            ratio(ct[1].covered, ct[1].truths),
            -(ct[1].false_on_people + ct[1].false_on_negatives),
            -statistics.median(ct[1].ms),
        ),
    )
    return (
        f"best default {kind}: {candidate.name} (non-hard recall "
        f"{ratio(tally.matched_easy, tally.truths_easy):.2f} at fp/negative "
        f"{ratio(tally.false_on_negatives, tally.negatives):.2f} <= {MAX_FP_PER_NEGATIVE})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--faces-only", action="store_true", help="leave out the plate cascades")
    parser.add_argument("--photos", type=int, default=None, help="the first N of each set")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per image")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    people: list[PeoplePhoto] = people_photos()[: args.photos]
    negatives = negative_photos()[: args.photos]
    by_source: dict[str, int] = {}
    for negative in negatives:
        by_source[negative.source] = by_source.get(negative.source, 0) + 1
    print(
        f"{len(people)} people photos ({sum(len(p.faces) for p in people)} faces, "
        f"{sum(len(p.plates) for p in people)} plates), {len(negatives)} negatives ("
        + ", ".join(f"{source} {count}" for source, count in by_source.items())
        + f"); median of {args.repeat} timed runs per image, 1 thread"
    )
    with tempfile.TemporaryDirectory() as scratch:
        models = Path(scratch)
        nudenet = prepared_models(models)
        runtime = RuntimeSettings(providers=CPU, intra_op_threads=1)
        encoder = LoadedModel(discover_models(models)["efficientnet-lite0"], runtime)
        defaults = PrivacyDetectors.load(DetectionSettings(), models, runtime)
        chosen = [(c, Tally()) for c in candidates(models, nudenet, args.faces_only)]
        images = [p.image for p in people] + [n.image for n in negatives]

        warm = images[0]
        for candidate, _ in chosen:
            candidate.detect(warm)
        encode(encoder, warm)
        defaults.analyse(warm)

        shares = VehicleShare.of_classes(encoder.labels)
        assert shares is not None, "the default encoder names ImageNet's vehicles"
        encoder_ms: list[float] = []
        default_ms: list[float] = []
        vehicles: list[float] = []
        for index, image in enumerate(images):
            output, ms = timed(partial(encode, encoder, image), args.repeat)
            encoder_ms.append(ms)
            assert output.logits is not None
            vehicles.append(shares.of(output.logits[0]))
            default_ms.append(timed(partial(defaults.analyse, image, vehicles[-1]), args.repeat)[1])
            for candidate, tally in chosen:
                boxes, ms = timed(partial(candidate.detect, image, vehicles[-1]), args.repeat)
                tally.ms.append(ms)
                if index < len(people):
                    photo = people[index]
                    truth = photo.faces if candidate.kind == "faces" else photo.plates
                    tally.add_photo(photo.name, truth, boxes)
                else:
                    tally.add_negative(boxes)

    for candidate, tally in chosen:
        print(line(candidate, tally))
    faces_to_shrink = small_faces(people)
    for candidate, _ in chosen:
        if candidate.name in SMALL_FACE_CANDIDATES:
            print(small_face_line(candidate, faces_to_shrink))
    for candidate, tally in chosen:
        if tally.missed:
            print(f"  {candidate.kind} {candidate.name} missed: {', '.join(tally.missed)}")
    for kind in ("faces", "plates"):
        missed = [set(t.missed) for c, t in chosen if c.kind == kind]
        by_all = sorted(set.intersection(*missed)) if missed else []
        if by_all:
            print(f"  {kind} missed by every candidate: {', '.join(by_all)}")
    threshold = DetectionSettings().plates_from_vehicles or 0.0
    with_plates = [v for p, v in zip(people, vehicles, strict=False) if p.plates]
    others = [v for p, v in zip(people, vehicles, strict=False) if not p.plates]
    others += vehicles[len(people) :]
    print(
        f"vehicle share: photos with a plate {min(with_plates, default=0):.2f} and up; of the "
        f"{len(others)} others, {sum(v >= threshold for v in others)} at or above {threshold} "
        f"(plates looked for), median {statistics.median(others) if others else 0:.3f}"
    )
    encoder_median = statistics.median(encoder_ms)
    default_median = statistics.median(default_ms)
    names = defaults.names()
    print(
        f"cost: encoder {encoder_median:.1f} ms, default detectors {default_median:.1f} ms "
        f"per image -> pipeline ratio {encoder_median / (encoder_median + default_median):.2f} "
        f"(target >= 0.6; defaults: faces {names.faces}, plates {names.plates}, "
        f"unsafe {names.unsafe})"
    )
    print(best("faces", chosen))
    if not args.faces_only:
        print(best("plates", chosen))


if __name__ == "__main__":
    main()
