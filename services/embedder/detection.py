"""The embedder's privacy and safety detectors: faces, licence plates, explicit content.

They run beside the encoder, so scaling the embedder scales them. Each is chosen by a setting
and comes from a registry package with its weights (no hub, no URL): faces by MediaPipe's
BlazeFace (the default; Apache-2.0, rewritten as ONNX by `seavl models prepare` from the
`mediapipe` wheel on PyPI), by MTCNN as ONNX (built from the `mtcnn` package's weights, MIT) or
by OpenCV's Haar cascade; plates by OpenCV's Haar cascade for plates (both cascades ship in
the opencv wheel); explicit content by NudeNet's 320n ONNX detector (AGPL-3.0, so opt-in:
`seavl models prepare --unsafe-model` puts it in place, and it is used when there). Every image
is analysed at a long side of at most `long_side`; regions are answered as fractions of the
upright image.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from PIL import Image

from services.common.images import scaled_to
from services.common.privacy import Detectors, PiiKind, Region
from services.embedder.blazeface import MODELS as BLAZEFACE_MODELS
from services.embedder.blazeface import BlazeFaceDetector
from services.embedder.config import (
    DetectionSettings,
    FaceModel,
    PlateModel,
    RuntimeSettings,
    UnsafeModel,
    face_model_dir,
    unsafe_model_path,
)
from services.embedder.mtcnn import NETWORK_NAMES, MtcnnFaceDetector
from services.embedder.sessions import ModelLoadError, usable_providers

logger = logging.getLogger(__name__)

Pixels = npt.NDArray[np.uint8]  # H x W x 3, RGB


@dataclass(frozen=True)
class Found:
    """A region in the analysed image's pixels."""

    x0: float
    y0: float
    x1: float
    y1: float
    confidence: float


class RegionFinder(Protocol):
    name: str

    def find(self, pixels: Pixels) -> list[Found]: ...


class HaarCascade:
    """One of OpenCV's cascades. It gives no calibrated score: every region found is 1.0."""

    def __init__(self, name: str, file: str, min_neighbours: int, min_size: int) -> None:
        self.name = name
        self._path = str(Path(cv2.data.haarcascades) / file)  # type: ignore[attr-defined]
        self._min_neighbours = min_neighbours
        self._min_size = min_size
        self._local = threading.local()  # a classifier is not safe across threads

    def _classifier(self) -> cv2.CascadeClassifier:
        classifier: cv2.CascadeClassifier | None = getattr(self._local, "classifier", None)
        if classifier is None:
            classifier = cv2.CascadeClassifier(self._path)
            if classifier.empty():
                raise RuntimeError(f"cannot read the cascade {self._path}")
            self._local.classifier = classifier
        return classifier

    def find(self, pixels: Pixels) -> list[Found]:
        grey = cv2.equalizeHist(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY))
        boxes = self._classifier().detectMultiScale(
            grey,
            scaleFactor=1.1,
            minNeighbors=self._min_neighbours,
            minSize=(self._min_size, self._min_size),
        )
        return [Found(x, y, x + w, y + h, 1.0) for x, y, w, h in np.asarray(boxes).reshape(-1, 4)]


def _require(folder: Path, files: list[str]) -> None:
    if not all((folder / file).is_file() for file in files):
        raise ModelLoadError(f"the face detector is not in {folder}: run `seavl models prepare`")


class MtcnnFaces:
    """MTCNN's three networks as ONNX (services/embedder/mtcnn.py), prepared beforehand."""

    name = "mtcnn"
    DEFAULT_CONFIDENCE = 0.9  # ONet's; the package's own default is 0.8

    def __init__(
        self, folder: Path, settings: DetectionSettings, providers: list[str], threads: int
    ) -> None:
        _require(folder, [f"{name}.onnx" for name in NETWORK_NAMES])
        self._detector = MtcnnFaceDetector.from_folder(
            folder,
            providers=providers,
            intra_op_threads=threads,
            min_face_size=float(settings.min_face_pixels),
        )
        self._min_confidence = _or_default(settings.min_face_confidence, self.DEFAULT_CONFIDENCE)

    def find(self, pixels: Pixels) -> list[Found]:
        return [
            Found(b.x0, b.y0, b.x1, b.y1, b.confidence)
            for b in self._detector.detect(pixels)
            if b.confidence >= self._min_confidence
        ]


class BlazeFaces:
    """MediaPipe's full- and short-range BlazeFace as ONNX (services/embedder/blazeface.py)."""

    name = "blazeface"
    DEFAULT_CONFIDENCE = 0.6  # MediaPipe's min_score_thresh for the full-range detector

    def __init__(
        self, folder: Path, settings: DetectionSettings, providers: list[str], threads: int
    ) -> None:
        _require(folder, [model.onnx_file for model in BLAZEFACE_MODELS])
        self._detector = BlazeFaceDetector.from_folder(
            folder,
            providers,
            threads,
            _or_default(settings.min_face_confidence, self.DEFAULT_CONFIDENCE),
            full_range_side=settings.full_range_side,
        )

    def find(self, pixels: Pixels) -> list[Found]:
        return [Found(*(float(v) for v in row)) for row in self._detector.detect(pixels)]


def _or_default(value: float | None, default: float) -> float:
    return default if value is None else value


# NudeNet 3.4's classes, in its output's order; the explicit ones make the unsafe score.
NUDENET_CLASSES = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
EXPLICIT = [
    NUDENET_CLASSES.index(name)
    for name in (
        "BUTTOCKS_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED",
        "ANUS_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
    )
]


class NudeNetScore:
    """The explicit-content score of NudeNet's 320n detector: the highest confidence of any
    explicit class anywhere in the image (its input: the image padded square, 320 px)."""

    name = "nudenet-320n"
    SIZE = 320

    def __init__(self, path: Path, providers: list[str], threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self._input = self._session.get_inputs()[0].name

    def score(self, pixels: Pixels) -> float:
        height, width = pixels.shape[:2]
        side = max(height, width)
        square = np.zeros((side, side, 3), dtype=np.uint8)
        square[:height, :width] = pixels
        resized = np.asarray(
            Image.fromarray(square).resize((self.SIZE, self.SIZE), Image.Resampling.BILINEAR)
        )
        tensor = (resized.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        output = np.asarray(self._session.run(None, {self._input: tensor})[0])[0]  # 22 x N
        return float(output[4:][EXPLICIT].max()) if output.shape[1] else 0.0


# ImageNet-1k classes of vehicles that carry licence plates (names as in the default model's
# labels file): cars, vans, trucks, buses, motorbikes and scooters, three-wheelers, the parts
# of a car a close-up shows (wheel, grille, mirror), and the parking meter cars stand beside.
VEHICLE_CLASSES = frozenset(
    {
        "ambulance", "station wagon", "taxicab", "car mirror", "car wheel", "convertible",
        "fire truck", "garbage truck", "go-kart", "golf cart", "radiator grille", "jeep",
        "rickshaw vehicle", "limousine", "minibus", "minivan", "ford model t", "moped",
        "motor scooter", "moving van", "parking meter", "pickup truck", "police van", "race car",
        "recreational vehicle", "school bus", "snowplow", "sports car", "tow truck", "tractor",
        "semi-trailer truck", "tricycle", "trolleybus", "forklift",
    }
)  # fmt: skip


class VehicleShare:
    """How much of the encoder's belief (softmax over its ImageNet classes) goes to vehicles.

    Plates are on vehicles: the plate cascade costs more than the encoder, and the encoder has
    already looked at the image, so the cascade runs only where the classes say a vehicle may
    be in sight (bench/privacy_quality.py: every photo with a plate gives vehicles over 0.7;
    of the others, a bus and a motorbike do too, and the rest stay under 0.1)."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = np.array(indices, dtype=np.intp)

    @classmethod
    def of_classes(cls, labels: list[str] | None) -> VehicleShare | None:
        """For an encoder with these class names; None when they are not ImageNet's (a model
        without classes, or other ones): plates are then looked for in every image."""
        indices = [i for i, name in enumerate(labels or []) if name in VEHICLE_CLASSES]
        return cls(indices) if len(indices) == len(VEHICLE_CLASSES) else None

    def of(self, logits: npt.NDArray[np.float32]) -> float:
        shifted = logits.astype(np.float64) - float(logits.max())
        probabilities = np.exp(shifted)
        return float(probabilities[self.indices].sum() / probabilities.sum())


class PrivacyDetectors:
    """The detectors chosen by the settings, loaded once; `analyse` is safe from any thread."""

    def __init__(
        self,
        settings: DetectionSettings,
        faces: RegionFinder | None,
        plates: RegionFinder | None,
        unsafe: NudeNetScore | None,
    ) -> None:
        self.settings = settings
        self.faces = faces
        self.plates = plates
        self.unsafe = unsafe
        # set once the default model is loaded (`use_classes_of`): None looks everywhere
        self.vehicle_share: VehicleShare | None = None

    def use_classes_of(self, labels: list[str] | None) -> None:
        """Gates the plate detector on the default encoder's classes (start-up, once)."""
        self.vehicle_share = VehicleShare.of_classes(labels)

    @classmethod
    def load(
        cls, settings: DetectionSettings, models_dir: Path, runtime: RuntimeSettings
    ) -> PrivacyDetectors:
        providers = usable_providers("privacy detectors", runtime)
        # one thread per session and per cascade: `settings.threads` images are analysed side by
        # side instead, and OpenCV's own pool beside them would oversubscribe the cores
        threads = 1
        cv2.setNumThreads(1)
        faces: RegionFinder | None = None
        if settings.faces is FaceModel.BLAZEFACE:
            faces = BlazeFaces(
                face_model_dir(models_dir, settings.faces), settings, providers, threads
            )
        elif settings.faces is FaceModel.MTCNN:
            faces = MtcnnFaces(
                face_model_dir(models_dir, settings.faces), settings, providers, threads
            )
        elif settings.faces is FaceModel.HAAR:
            faces = HaarCascade(
                "opencv-haar-frontalface", "haarcascade_frontalface_default.xml", 5, 20
            )
        plates = (
            HaarCascade("opencv-haar-plates", "haarcascade_russian_plate_number.xml", 4, 16)
            if settings.plates is PlateModel.HAAR
            else None
        )
        unsafe: NudeNetScore | None = None
        nudenet = unsafe_model_path(models_dir)
        if settings.unsafe is UnsafeModel.NUDENET and not nudenet.is_file():
            raise ModelLoadError(
                f"the unsafe-content model is not in {nudenet.parent}: run "
                "`seavl models prepare --unsafe-model` (NudeNet, AGPL-3.0)"
            )
        if settings.unsafe is not UnsafeModel.NONE and nudenet.is_file():
            unsafe = NudeNetScore(nudenet, providers, threads)
        detectors = cls(settings, faces, plates, unsafe)
        logger.info("privacy detectors: %s", detectors.names().model_dump())
        return detectors

    def names(self) -> Detectors:
        return Detectors(
            faces=self.faces.name if self.faces else None,
            plates=self.plates.name if self.plates else None,
            unsafe=self.unsafe.name if self.unsafe else None,
        )

    def looks_for_plates(self, vehicles: float | None) -> bool:
        """Whether the plate detector runs on an image whose vehicle share is `vehicles` (None:
        not known, so it runs)."""
        threshold = self.settings.plates_from_vehicles
        return vehicles is None or threshold is None or vehicles >= threshold

    def analyse(
        self, image: Image.Image, vehicles: float | None = None
    ) -> tuple[list[Region], float | None]:
        """The regions found in the upright RGB `image`, and its unsafe score; plates only
        where `looks_for_plates(vehicles)`."""
        image = scaled_to(image, self.settings.long_side)
        pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        seen_height, seen_width = pixels.shape[:2]
        regions: list[Region] = []
        plates = self.plates if self.looks_for_plates(vehicles) else None
        for kind, finder in ((PiiKind.FACE, self.faces), (PiiKind.PLATE, plates)):
            if finder is None:
                continue
            for found in finder.find(pixels):
                regions.append(
                    Region(
                        kind=kind,
                        box=(
                            _fraction(found.x0, seen_width),
                            _fraction(found.y0, seen_height),
                            _fraction(found.x1, seen_width),
                            _fraction(found.y1, seen_height),
                        ),
                        confidence=round(min(1.0, max(0.0, found.confidence)), 4),
                    )
                )
        unsafe = round(self.unsafe.score(pixels), 4) if self.unsafe is not None else None
        return regions, unsafe


def _fraction(value: float, size: int) -> float:
    return round(min(1.0, max(0.0, value / size)), 5)
