"""Benchmark images made from real photographs that scikit-image ships (no downloads)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import skimage
from PIL import Image

PHOTOS = (
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "astronaut.png",
    "motorcycle_left.png",
    "camera.png",
    "horse.png",
    "hubble_deep_field.jpg",
)


def photos() -> list[Image.Image]:
    folder = Path(skimage.__file__).parent / "data"
    return [Image.open(folder / name).convert("RGB") for name in PHOTOS]


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def crawl_size_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """~512-px JPEGs of ~60 KB: random crops and flips of the photos, as a crawl would hold."""
    rng = np.random.default_rng(seed)
    sources = photos()
    out = []
    for i in range(count):
        photo = sources[i % len(sources)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.7, 1.0)), int(h * rng.uniform(0.7, 1.0))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = photo.crop((left, top, left + cw, top + ch))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        scale = 512 / max(crop.size)
        crop = crop.resize((round(crop.width * scale), round(crop.height * scale)))
        out.append(_jpeg(crop, quality=94))
    return out


def phone_size_jpegs(count: int, seed: int = 1) -> list[bytes]:
    """12-MP (4000x3000) JPEGs: photos upscaled with sensor-like noise, a few MB each."""
    rng = np.random.default_rng(seed)
    sources = photos()
    out = []
    for i in range(count):
        big = sources[i % len(sources)].resize((4000, 3000), Image.Resampling.BILINEAR)
        pixels = np.asarray(big, dtype=np.int16)
        noise = rng.integers(-6, 7, size=pixels.shape, dtype=np.int16)
        noisy = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
        out.append(_jpeg(noisy, quality=90))
    return out
