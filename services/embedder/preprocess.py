"""Pixels to the model's input tensor, as its manifest says (resize, crop, mean/std, CHW)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from services.embedder.models import Interpolation, ModelManifest, ResizeMode

_RESAMPLE = {
    Interpolation.BILINEAR: Image.Resampling.BILINEAR,
    Interpolation.BICUBIC: Image.Resampling.BICUBIC,
}


def resize_and_crop(image: Image.Image, manifest: ModelManifest) -> Image.Image:
    size = manifest.input_size
    resample = _RESAMPLE[manifest.interpolation]
    if manifest.resize_mode is ResizeMode.SQUASH:
        return image.resize((size, size), resample)
    width, height = image.size
    scale = manifest.resize_target / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    # reducing_gap lets Pillow shrink big images in cheap integer steps first
    resized = image.resize(new_size, resample, reducing_gap=3.0)
    left = (new_size[0] - size) // 2
    top = (new_size[1] - size) // 2
    return resized.crop((left, top, left + size, top + size))


def to_input_tensor(image: Image.Image, manifest: ModelManifest) -> npt.NDArray[np.float32]:
    """(3, size, size) float32, normalised with the model's mean and std."""
    pixels = np.asarray(resize_and_crop(image, manifest), dtype=np.float32)
    scale = 1.0 / (255.0 * np.asarray(manifest.std, dtype=np.float32))
    offset = np.asarray(manifest.mean, dtype=np.float32) / np.asarray(
        manifest.std, dtype=np.float32
    )
    normalised = pixels * scale - offset
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))
