"""The copies of a photograph that the web is full of, each kind at several strengths.

Each copy is the file a re-uploader or a crawl would hand the service (encoded bytes), made from
the original's pixels: re-sized, cropped, re-compressed, recoloured, rotated, framed, captioned,
watermarked, flipped, shown inside a screenshot, or only re-encoded. `hard_negative_crops` gives
the opposite: views of one photograph that barely overlap, which are different images.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

# What a copy is saved as unless its kind is its encoding: a common re-upload quality.
COPY_JPEG_QUALITY = 90


class CopyKind(StrEnum):
    RESIZE = "resize"
    CENTRE_CROP = "centre crop"
    JPEG = "jpeg quality"
    BRIGHTNESS_CONTRAST = "brightness/contrast"
    ROTATION = "rotation"
    WHITE_BORDER = "white border"
    BLACK_BORDER = "black border"
    CAPTION_BAR = "caption bar"
    GRAYSCALE = "grayscale"
    FLIP = "horizontal flip"
    MIRRORED_CROP = "mirrored crop"
    WATERMARK = "watermark"
    SCREENSHOT = "screenshot"
    WEBP = "webp round trip"
    PNG = "png round trip"
    PUBLISHED_SIZE = "published other size"  # a package's own other sizes of one picture


@dataclass(frozen=True)
class Copy:
    kind: CopyKind
    strength: str
    data: bytes


Transform = Callable[[Image.Image, np.random.Generator], bytes]


def encode(
    image: Image.Image, image_format: str = "JPEG", quality: int = COPY_JPEG_QUALITY
) -> bytes:
    buffer = io.BytesIO()
    if image_format == "PNG":
        image.save(buffer, "PNG")
    else:
        image.save(buffer, image_format, quality=quality)
    return buffer.getvalue()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def resized(image: Image.Image, _rng: np.random.Generator, scale: float) -> bytes:
    size = (max(16, round(image.width * scale)), max(16, round(image.height * scale)))
    return encode(image.resize(size, Image.Resampling.LANCZOS))


def centre_cropped(image: Image.Image, _rng: np.random.Generator, keep: float) -> bytes:
    """Keeps `keep` of each side, centred (0.8 keeps 64% of the area)."""
    width, height = round(image.width * keep), round(image.height * keep)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return encode(image.crop((left, top, left + width, top + height)))


def jpeg_quality(image: Image.Image, _rng: np.random.Generator, quality: int) -> bytes:
    return encode(image, quality=quality)


def brightness_contrast(
    image: Image.Image, _rng: np.random.Generator, brightness: float, contrast: float
) -> bytes:
    brighter = ImageEnhance.Brightness(image).enhance(brightness)
    return encode(ImageEnhance.Contrast(brighter).enhance(contrast))


def rotated(image: Image.Image, _rng: np.random.Generator, degrees: float) -> bytes:
    """Turned about its centre in its own frame, the corners it leaves filled black, as an
    un-straightened scan or a tilted re-photograph looks."""
    return encode(image.rotate(degrees, Image.Resampling.BICUBIC, fillcolor=(0, 0, 0)))


def bordered(
    image: Image.Image, _rng: np.random.Generator, share: float, colour: tuple[int, int, int]
) -> bytes:
    """A frame `share` of the longer side wide on every side."""
    width = round(max(image.size) * share)
    return encode(ImageOps.expand(image, border=width, fill=colour))


def caption_bar(image: Image.Image, rng: np.random.Generator, share: float) -> bytes:
    """A dark bar with white text drawn over the bottom `share` of the picture, as memes and
    news sites add."""
    framed = image.copy()
    bar_height = round(image.height * share)
    draw = ImageDraw.Draw(framed)
    draw.rectangle((0, image.height - bar_height, image.width, image.height), fill=(20, 20, 20))
    words = ("when the", "photo is", "shared again", "look at this", "so true", "caption")
    text = " ".join(str(rng.choice(words)) for _ in range(3))
    draw.text(
        (image.width // 20, image.height - bar_height + bar_height // 4),
        text,
        fill=(255, 255, 255),
        font=_font(bar_height // 2),
    )
    return encode(framed)


def grayscale(image: Image.Image, _rng: np.random.Generator) -> bytes:
    return encode(image.convert("L"))


def flipped(image: Image.Image, _rng: np.random.Generator) -> bytes:
    return encode(ImageOps.mirror(image))


def mirrored_crop(image: Image.Image, rng: np.random.Generator, keep: float) -> bytes:
    mirrored = ImageOps.mirror(image)
    width, height = round(image.width * keep), round(image.height * keep)
    left = int(rng.integers(0, image.width - width + 1))
    top = int(rng.integers(0, image.height - height + 1))
    return encode(mirrored.crop((left, top, left + width, top + height)))


def watermarked(image: Image.Image, rng: np.random.Generator, opacity: float) -> bytes:
    """A stock-photo watermark: white text repeated diagonally over the picture."""
    layer = Image.new("L", (image.width * 2, image.height * 2), 0)
    draw = ImageDraw.Draw(layer)
    font = _font(max(image.size) // 14)
    step_x, step_y = max(image.size) // 3, max(image.size) // 6
    offset = int(rng.integers(0, step_x))
    for row, y in enumerate(range(0, layer.height, step_y)):
        for x in range(-offset + (row % 2) * step_x // 2, layer.width, step_x):
            draw.text((x, y), "© stock", fill=round(255 * opacity), font=font)
    turned = layer.rotate(30, Image.Resampling.BILINEAR)
    left, top = (turned.width - image.width) // 2, (turned.height - image.height) // 2
    mask = turned.crop((left, top, left + image.width, top + image.height))
    marked = image.copy()
    marked.paste(Image.new("RGB", image.size, (255, 255, 255)), (0, 0), mask)
    return encode(marked)


def screenshot(image: Image.Image, rng: np.random.Generator, share: float) -> bytes:
    """The photo shown in a page or chat app: title bar, side panel, text lines; the photo
    takes `share` of the screenshot's width. Saved as PNG, as screenshots are."""
    screen_width = round(image.width / share)
    photo_height = image.height
    screen_height = photo_height + round(screen_width * 0.18)
    light = bool(rng.random() < 0.5)
    background = (248, 248, 248) if light else (32, 34, 38)
    ink = (60, 60, 60) if light else (200, 200, 200)
    screen = Image.new("RGB", (screen_width, screen_height), background)
    draw = ImageDraw.Draw(screen)
    bar = round(screen_width * 0.04)
    draw.rectangle((0, 0, screen_width, bar), fill=(52, 101, 164) if light else (60, 60, 70))
    draw.text((bar, bar // 5), "Photos - shared album", fill=(255, 255, 255), font=_font(bar // 2))
    panel = screen_width - image.width - bar
    for line in range(int(screen_height / (bar * 0.9))):
        y = bar * 2 + round(line * bar * 0.9)
        length = int(rng.integers(panel // 3, max(panel // 3 + 1, panel - bar)))
        draw.rectangle((bar // 2, y, bar // 2 + length, y + bar // 4), fill=ink)
    screen.paste(image, (panel + bar // 2, bar * 2))
    caption_y = bar * 2 + photo_height + bar // 3
    if caption_y + bar // 2 < screen_height:
        draw.text((panel + bar // 2, caption_y), "12 likes · 3 comments", fill=ink, font=_font(bar))
    return encode(screen, "PNG")


def webp_round_trip(image: Image.Image, _rng: np.random.Generator) -> bytes:
    return encode(image, "WEBP", quality=75)


def png_round_trip(image: Image.Image, _rng: np.random.Generator) -> bytes:
    return encode(image, "PNG")


COPIES: tuple[tuple[CopyKind, str, Transform], ...] = (
    (CopyKind.RESIZE, "0.5", partial(resized, scale=0.5)),
    (CopyKind.RESIZE, "0.25", partial(resized, scale=0.25)),
    (CopyKind.CENTRE_CROP, "90%", partial(centre_cropped, keep=0.9)),
    (CopyKind.CENTRE_CROP, "80%", partial(centre_cropped, keep=0.8)),
    (CopyKind.CENTRE_CROP, "70%", partial(centre_cropped, keep=0.7)),
    (CopyKind.JPEG, "50", partial(jpeg_quality, quality=50)),
    (CopyKind.JPEG, "25", partial(jpeg_quality, quality=25)),
    (CopyKind.JPEG, "10", partial(jpeg_quality, quality=10)),
    (
        CopyKind.BRIGHTNESS_CONTRAST,
        "+15%/+10%",
        partial(brightness_contrast, brightness=1.15, contrast=1.1),
    ),
    (
        CopyKind.BRIGHTNESS_CONTRAST,
        "+30%/+20%",
        partial(brightness_contrast, brightness=1.3, contrast=1.2),
    ),
    (
        CopyKind.BRIGHTNESS_CONTRAST,
        "-30%/-20%",
        partial(brightness_contrast, brightness=0.7, contrast=0.8),
    ),
    (CopyKind.ROTATION, "2°", partial(rotated, degrees=2)),
    (CopyKind.ROTATION, "4°", partial(rotated, degrees=4)),
    (CopyKind.ROTATION, "8°", partial(rotated, degrees=8)),
    (CopyKind.WHITE_BORDER, "5%", partial(bordered, share=0.05, colour=(255, 255, 255))),
    (CopyKind.WHITE_BORDER, "10%", partial(bordered, share=0.10, colour=(255, 255, 255))),
    (CopyKind.BLACK_BORDER, "5%", partial(bordered, share=0.05, colour=(0, 0, 0))),
    (CopyKind.BLACK_BORDER, "10%", partial(bordered, share=0.10, colour=(0, 0, 0))),
    (CopyKind.CAPTION_BAR, "10%", partial(caption_bar, share=0.10)),
    (CopyKind.CAPTION_BAR, "20%", partial(caption_bar, share=0.20)),
    (CopyKind.GRAYSCALE, "-", grayscale),
    (CopyKind.FLIP, "-", flipped),
    (CopyKind.MIRRORED_CROP, "90%", partial(mirrored_crop, keep=0.9)),
    (CopyKind.MIRRORED_CROP, "75%", partial(mirrored_crop, keep=0.75)),
    (CopyKind.WATERMARK, "30%", partial(watermarked, opacity=0.3)),
    (CopyKind.WATERMARK, "60%", partial(watermarked, opacity=0.6)),
    (CopyKind.SCREENSHOT, "photo 70% wide", partial(screenshot, share=0.7)),
    (CopyKind.SCREENSHOT, "photo 50% wide", partial(screenshot, share=0.5)),
    (CopyKind.WEBP, "q75", webp_round_trip),
    (CopyKind.PNG, "-", png_round_trip),
)


def copies_of(image: Image.Image, rng: np.random.Generator) -> list[Copy]:
    """Every kind of copy of `image` at every strength, in `COPIES` order."""
    return [Copy(kind, strength, transform(image, rng)) for kind, strength, transform in COPIES]


def hard_negative_crops(image: Image.Image) -> list[tuple[str, Image.Image, Image.Image]]:
    """Pairs of views of one picture that share no pixels: other images of the same scene."""
    width, height = image.size
    half_w, half_h = width // 2, height // 2
    return [
        (
            "left/right halves",
            image.crop((0, 0, half_w, height)),
            image.crop((half_w, 0, width, height)),
        ),
        (
            "top/bottom halves",
            image.crop((0, 0, width, half_h)),
            image.crop((0, half_h, width, height)),
        ),
        (
            "opposite quadrants",
            image.crop((0, 0, half_w, half_h)),
            image.crop((half_w, half_h, width, height)),
        ),
    ]
