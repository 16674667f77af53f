"""Benchmark images made in code from real photographs that scikit-image ships (no downloads).

A crawl holds mostly distinct images, so the crawl-size set is distinct scenes: each one its own
composition of light, shapes, texture and pieces of real photographs. At the default dedup
threshold ~99% of them are unique (`bench/pipeline.py` prints the share it measured), so the
pipeline's write path is what gets timed, not its duplicate shortcut.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import skimage
from PIL import Image, ImageDraw, ImageFilter

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
CRAWL_SIZE = (512, 384)


def photos() -> list[Image.Image]:
    folder = Path(skimage.__file__).parent / "data"
    return [Image.open(folder / name).convert("RGB") for name in PHOTOS]


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    red, green, blue = (int(c) for c in rng.integers(0, 256, 3))
    return red, green, blue


def _lit_background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A sky-to-ground gradient under uneven light."""
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    gradient = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3))
    light = Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8))
    light = light.resize((width, height), Image.Resampling.BICUBIC)
    pixels = gradient * 0.6 + np.asarray(light, np.float32) * 0.4
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _draw_shapes(image: Image.Image, rng: np.random.Generator) -> None:
    width, height = image.size
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 14))):
        color = _random_color(rng)
        x0, y0 = int(rng.integers(-width // 4, width)), int(rng.integers(-height // 4, height))
        x1, y1 = x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2))
        kind = int(rng.integers(0, 4))
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=color)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=color)
        elif kind == 2:
            corners = [
                (int(rng.integers(0, width)), int(rng.integers(0, height)))
                for _ in range(int(rng.integers(3, 7)))
            ]
            draw.polygon(corners, fill=color)
        else:
            draw.line((x0, y0, x1, y1), fill=color, width=int(rng.integers(2, 12)))


def _paste_texture(image: Image.Image, rng: np.random.Generator) -> None:
    width, height = image.size
    cell = int(rng.integers(8, 64))
    grain = rng.random((height // cell + 1, width // cell + 1, 3)) * 255
    resample = Image.Resampling.NEAREST if rng.random() < 0.5 else Image.Resampling.BILINEAR
    texture = Image.fromarray(grain.astype(np.uint8)).resize((width, height), resample)
    mask = Image.new("L", (width, height), 0)
    x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
    ImageDraw.Draw(mask).ellipse(
        (x, y, x + int(rng.integers(60, width)), y + int(rng.integers(60, height))),
        fill=int(rng.integers(80, 255)),
    )
    image.paste(texture, (0, 0), mask)


def _paste_photo_pieces(
    image: Image.Image, rng: np.random.Generator, sources: list[Image.Image]
) -> None:
    width, height = image.size
    for _ in range(int(rng.integers(0, 3))):
        source = sources[int(rng.integers(len(sources)))]
        crop_w = int(source.width * rng.uniform(0.15, 0.4))
        crop_h = int(source.height * rng.uniform(0.15, 0.4))
        left = int(rng.integers(0, source.width - crop_w))
        top = int(rng.integers(0, source.height - crop_h))
        piece = source.crop((left, top, left + crop_w, top + crop_h))
        scale = rng.uniform(0.15, 0.4) * width / max(piece.size)
        piece = piece.resize((max(8, int(piece.width * scale)), max(8, int(piece.height * scale))))
        position = (
            int(rng.integers(0, width - piece.width)),
            int(rng.integers(0, height - piece.height)),
        )
        image.paste(piece, position)


def distinct_scene(rng: np.random.Generator, sources: list[Image.Image]) -> Image.Image:
    """One scene of its own: lit background, shapes, a texture, pieces of real photos, lens blur
    and sensor noise."""
    width, height = CRAWL_SIZE
    image = _lit_background(rng, width, height)
    _draw_shapes(image, rng)
    _paste_texture(image, rng)
    _paste_photo_pieces(image, rng, sources)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))
    noise = rng.integers(-8, 9, (height, width, 3))
    image = Image.fromarray(np.clip(np.asarray(image, np.int16) + noise, 0, 255).astype(np.uint8))
    if rng.random() < 0.15:
        image = image.transpose(Image.Transpose.ROTATE_90)
    return image


def crawl_size_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """`count` distinct ~512-px JPEG scenes of ~45 KB, as a crawl would hold."""
    rng = np.random.default_rng(seed)
    sources = photos()
    return [_jpeg(distinct_scene(rng, sources), quality=90) for _ in range(count)]


def phone_size_jpegs(count: int, seed: int = 1) -> list[bytes]:
    """12-MP (4000x3000) JPEGs: distinct scenes upscaled with sensor-like noise, a few MB each."""
    rng = np.random.default_rng(seed)
    sources = photos()
    out = []
    for _ in range(count):
        scene = distinct_scene(rng, sources).resize((4000, 3000), Image.Resampling.BILINEAR)
        pixels = np.asarray(scene, dtype=np.int16)
        noise = rng.integers(-6, 7, size=pixels.shape, dtype=np.int16)
        noisy = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
        out.append(_jpeg(noisy, quality=90))
    return out
