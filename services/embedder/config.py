"""The embedder's settings: `SEAVL_EMBEDDER_…` environment variables, nested with `__`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field

from services.common.images import ImageLimits
from services.common.settings import (
    DEFAULT_DATA_DIR,
    SeavlSettings,
    ServerSettings,
    service_settings_config,
)
from services.common.storage import StorageSettings, storage_setting

EMBEDDER_PORT = 8001
DEFAULT_MODEL_NAME = "efficientnet-lite0"


class BatchingSettings(BaseModel):
    """Micro-batching: a batch closes when full or when its first item has waited long enough."""

    max_batch_size: int = Field(default=16, ge=1, le=512)
    max_wait_ms: float = Field(default=4.0, ge=0)
    max_queue_images: int = Field(
        default=128, ge=1, description="images waiting for inference before requests get 429"
    )


class RuntimeSettings(BaseModel):
    """ONNX Runtime: execution providers in order of preference, and thread budgets."""

    providers: list[str] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    require_gpu: bool = Field(
        default=False, description="fail start-up instead of falling back to the CPU"
    )
    intra_op_threads: int = Field(default=0, ge=0, description="0 lets onnxruntime choose")
    allow_spinning: bool = Field(
        default=False, description="let idle onnxruntime threads spin (only on dedicated cores)"
    )
    decode_threads: int = Field(
        default=2, ge=1, description="threads decoding images; bounds the memory uploads take"
    )


class FaceModel(StrEnum):
    BLAZEFACE = "blazeface"  # MediaPipe's two single-shot detectors (Apache-2.0), the default
    MTCNN = "mtcnn"  # an image pyramid: a little more recall, about three times the CPU
    HAAR = "haar"
    NONE = "none"


class PlateModel(StrEnum):
    HAAR = "haar"
    NONE = "none"


class UnsafeModel(StrEnum):
    AUTO = "auto"  # NudeNet when `seavl models prepare --unsafe-model` has put it in place
    NUDENET = "nudenet"
    NONE = "none"


class DetectionSettings(BaseModel):
    """`SEAVL_EMBEDDER_DETECTION__…`: which detector finds what, and at what size."""

    faces: FaceModel = FaceModel.BLAZEFACE
    plates: PlateModel = PlateModel.HAAR
    unsafe: UnsafeModel = UnsafeModel.AUTO
    long_side: int = Field(default=640, ge=64, le=4096, description="analysed at most this big")
    min_face_confidence: float | None = Field(
        default=None, ge=0, le=1, description="unset: the detector's own (BlazeFace 0.6, MTCNN 0.9)"
    )
    min_face_pixels: int = Field(default=20, ge=8, description="the smallest face looked for")
    threads: int = Field(default=2, ge=1, description="images analysed at once")
    plates_from_vehicles: float | None = Field(
        default=0.02,
        ge=0,
        le=1,
        description="look for plates only where the encoder's ImageNet classes give vehicles at "
        "least this share (null: in every image)",
    )
    full_range_side: int = Field(
        default=320,
        ge=192,
        multiple_of=32,
        description="BlazeFace's full-range detector looks at the image this big (its long side)",
    )


DETECTORS_DIR = "detectors"  # beside the encoders' folders, holding no manifest of its own


def unsafe_model_path(models_dir: Path) -> Path:
    """Where `seavl models prepare --unsafe-model` puts NudeNet's 320n detector."""
    return models_dir / DETECTORS_DIR / "nudenet-320n" / "320n.onnx"


def face_model_dir(models_dir: Path, model: FaceModel) -> Path:
    """Where `seavl models prepare` puts a face detector's networks as ONNX."""
    return models_dir / DETECTORS_DIR / model.value


class EmbedderSettings(SeavlSettings):
    model_config = service_settings_config("embedder")

    server: ServerSettings = ServerSettings(port=EMBEDDER_PORT)
    storage: StorageSettings = storage_setting()
    models_dir: Path = DEFAULT_DATA_DIR / "models"
    default_model: str = DEFAULT_MODEL_NAME
    images: ImageLimits = ImageLimits()
    batching: BatchingSettings = BatchingSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    detection: DetectionSettings = DetectionSettings()
    max_images_per_request: int = Field(default=64, ge=1)
    max_request_bytes: int = Field(
        default=32 * 1024 * 1024,
        gt=0,
        description="a whole request body (all its images); refused with 413 while it streams in",
    )
    max_top_k: int = Field(default=20, ge=0)
    recent_outputs: int = Field(
        default=2048,
        ge=0,
        description="outputs kept per model by the image bytes' sha256 (about 9 KB each for the "
        "default model), so the embedding of an upload the privacy pass has encoded is reused",
    )
