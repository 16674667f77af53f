"""Image intake shared by every service that takes images, and by the bulk uploader.

One pass turns untrusted bytes into RGB pixels plus what dedup and storage need (sha256, pHash),
or into an `ImageIntakeError` that names the problem. JPEGs are decoded in draft mode, so a 12-MP
phone photo is decoded at 1/8 scale when the model needs only a 224-px crop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import struct
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field

from services.common.errors import ServiceError

# pHash and the embedder both work from an image whose short side is at least this, so the
# uploader (which has no model) and the services compute the same hash from the same bytes.
DEFAULT_DRAFT_SHORT_SIDE = 256
# pHash: the lowest PHASH_SIDE × PHASH_SIDE frequencies of the DCT of a grey PHASH_INPUT-px
# square against their median (imagehash's pHash, with its defaults)
PHASH_SIDE = 8
PHASH_INPUT = 32
# the grey image is shrunk by box averaging, by a whole factor, to no less than this before
# Lanczos resamples it to PHASH_INPUT: a fifth of the cost of resampling the whole decode
PHASH_PRESHRINK_SIDE = 64
# DCT-II as scipy computes it (unnormalised: 2·Σ x[n]·cos(πk(2n+1)/2N)), its lowest rows only
_PHASH_DCT = 2 * np.cos(
    np.pi * np.outer(np.arange(PHASH_SIDE), 2 * np.arange(PHASH_INPUT) + 1) / (2 * PHASH_INPUT)
)
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


class ImageLimits(BaseModel):
    """What an accepted image may be; shared by every service's settings."""

    max_bytes: int = Field(default=10 * 1024 * 1024, gt=0, description="largest upload in bytes")
    max_pixels: int = Field(
        default=Image.MAX_IMAGE_PIXELS or 89_478_485,
        gt=0,
        description="largest width*height; more is refused as a decompression bomb",
    )


# What a stored or sent image is served as, by the format validation found.
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


def base64_bytes(data: str, field: str) -> bytes:
    """Bytes sent in JSON as base64, or a 422 naming the field."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ServiceError(
            422, "invalid_base64", f"'{field}' is not valid base64: {exc}", field=field
        ) from exc


class ImageIntakeError(ServiceError):
    """An image that cannot be accepted, with the reason as a stable code."""


def _error(status: int, code: str, message: str) -> ImageIntakeError:
    return ImageIntakeError(status, code, message)


@dataclass(frozen=True)
class DecodedImage:
    """RGB pixels (short side at least the draft size asked for) and the image's identity."""

    pixels: Image.Image
    width: int
    height: int
    format: str
    sha256: str
    phash: str


def sniff_format(data: bytes) -> str | None:
    """The Pillow format name the magic bytes announce, among the accepted ones."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def declared_size(data: bytes, image_format: str) -> tuple[int, int] | None:
    """Width and height as the PNG or GIF header states them (Pillow refuses a zero size)."""
    if image_format == "PNG" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if image_format == "GIF" and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    return None


def _open(data: bytes, image_format: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=[image_format])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _error(422, "decompression_bomb", f"image has too many pixels: {exc}") from exc
    except (UnidentifiedImageError, SyntaxError, ValueError, OSError, EOFError) as exc:
        if image_format == "WEBP" and len(data) < struct.unpack("<I", data[4:8])[0] + 8:
            raise _error(
                422, "truncated_image", "WEBP data is truncated: shorter than its RIFF header says"
            ) from exc
        size = declared_size(data, image_format)
        if size is not None and 0 in size:
            raise _error(
                422, "zero_size_image", f"image has zero size ({size[0]}x{size[1]})"
            ) from exc
        raise _error(422, "corrupt_image", f"{image_format} data cannot be read: {exc}") from exc


def _check_dimensions(image: Image.Image, limits: ImageLimits) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise _error(422, "zero_size_image", f"image has zero size ({width}x{height})")
    if width * height > limits.max_pixels:
        raise _error(
            422,
            "decompression_bomb",
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{limits.max_pixels}; refused as a possible decompression bomb",
        )


def _load(image: Image.Image, image_format: str) -> None:
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _error(422, "decompression_bomb", f"image has too many pixels: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        text = str(exc)
        if "truncated" in text or isinstance(exc, EOFError):
            raise _error(
                422, "truncated_image", f"{image_format} data is truncated: {text}"
            ) from exc
        raise _error(422, "corrupt_image", f"{image_format} data is corrupt: {text}") from exc


EXIF_HEADER = b"Exif\x00\x00"
ORIENTATION_TAG = 0x0112
TIFF_SHORT = 3
# How to turn pixels stored in each EXIF orientation upright (Pillow's own table).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def exif_orientation(raw: bytes) -> int:
    """The orientation (1-8) an EXIF block's first directory states; 1 (upright) when it states
    none or cannot be read. Read here rather than by Pillow, which warns and raises in many ways
    on the malformed EXIF untrusted files carry."""
    tiff = raw.removeprefix(EXIF_HEADER)
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    magic, directory = struct.unpack(order + "HI", tiff[2:8])
    if magic != 42 or directory + 2 > len(tiff):
        return 1
    (entries,) = struct.unpack(order + "H", tiff[directory : directory + 2])
    for index in range(entries):
        start = directory + 2 + 12 * index
        if start + 12 > len(tiff):
            return 1
        tag, kind, count = struct.unpack(order + "HHI", tiff[start : start + 8])
        if tag == ORIENTATION_TAG and kind == TIFF_SHORT and count >= 1:
            (value,) = struct.unpack(order + "H", tiff[start + 8 : start + 10])
            return value if 1 <= value <= 8 else 1
    return 1


def _exif_orientation(image: Image.Image) -> int:
    raw = image.info.get("exif")
    return exif_orientation(raw) if isinstance(raw, bytes) else 1


def upright(image: Image.Image, orientation: int) -> Image.Image:
    """The pixels as they are meant to be seen, given the EXIF orientation."""
    method = UPRIGHT.get(orientation)
    return image if method is None else image.transpose(method)


def _sixteen_bit_to_luminance(image: Image.Image) -> Image.Image:
    """Scales 16-bit samples to 8 bits (Pillow's own conversion would clip them)."""
    samples = np.asarray(image, dtype=np.float32)
    eight_bit = np.clip(np.rint(samples / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(eight_bit)


def to_rgb(image: Image.Image) -> Image.Image:
    """Palette, CMYK, 16-bit, grey and alpha images as plain RGB; transparency becomes white."""
    if image.mode in SIXTEEN_BIT_MODES:
        image = _sixteen_bit_to_luminance(image)
    if image.mode == "P" or (image.mode in ("RGB", "L") and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


@dataclass(frozen=True)
class ImageInfo:
    """What validation learns of an image without producing its pixels for a model."""

    format: str
    width: int
    height: int


# Validation decodes JPEGs at their smallest draft scale: every byte of the entropy-coded data
# is still read (truncation and corruption still show), but the pixels cost 1/64 as much.
VALIDATION_DRAFT_SIDE = 1


def _open_and_load(
    data: bytes, limits: ImageLimits, draft_short_side: int, draft_long_side: int | None = None
) -> tuple[Image.Image, ImageInfo, int]:
    """The checks every caller needs: the image loaded, what it is, and its EXIF orientation.
    A JPEG is decoded at its smallest scale whose short side (or, given `draft_long_side`, long
    side) is still at least that."""
    if not data:
        raise _error(400, "empty_image", "the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise _error(
            413,
            "image_too_large",
            f"image is {len(data)} bytes, over the limit of {limits.max_bytes}",
        )
    image_format = sniff_format(data)
    if image_format is None:
        raise _error(
            415,
            "unsupported_image_type",
            "unsupported image type: send JPEG, PNG, WebP or GIF",
        )
    image = _open(data, image_format)
    _check_dimensions(image, limits)
    orientation = _exif_orientation(image)
    width, height = image.size
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if image_format == "JPEG":
        if draft_long_side is not None:
            shrink = draft_long_side / max(image.size)
            image.draft(None, (math.ceil(image.width * shrink), math.ceil(image.height * shrink)))
        else:
            draft_side = max(draft_short_side, 1)
            image.draft(None, (draft_side, draft_side))
    _load(image, image_format)
    return image, ImageInfo(image_format, width, height), orientation


def validate_image(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Refuses what `decode_image` would refuse, at a fraction of its cost."""
    return _open_and_load(data, limits, VALIDATION_DRAFT_SIDE)[1]


def upright_rgb(data: bytes, limits: ImageLimits, long_side: int) -> Image.Image:
    """The pixels as a model sees them (validated, upright, RGB, transparency on white), a JPEG
    decoded at a reduced scale that keeps its long side at least `long_side`; raises
    `ImageIntakeError` with a 4xx status."""
    image, _, orientation = _open_and_load(data, limits, 1, draft_long_side=long_side)
    return to_rgb(upright(image, orientation))


def preview_jpeg(data: bytes, limits: ImageLimits, long_side: int, quality: int = 90) -> bytes:
    """The image upright as a JPEG of long side at most `long_side`: what a duplicate check
    needs of it (the embedder's input and the pixel check are smaller), a fraction of its
    bytes. Raises `ImageIntakeError` for what intake would refuse."""
    pixels = upright_rgb(data, limits, long_side)
    pixels.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    pixels.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def decode_image(
    data: bytes,
    limits: ImageLimits,
    draft_short_side: int = DEFAULT_DRAFT_SHORT_SIDE,
    sha256: str | None = None,
) -> DecodedImage:
    """Validates and decodes untrusted bytes; raises `ImageIntakeError` with a 4xx status.
    `sha256`: the bytes' digest when the caller has it already."""
    image, info, orientation = _open_and_load(data, limits, draft_short_side)
    rgb = to_rgb(upright(image, orientation))
    return DecodedImage(
        pixels=rgb,
        width=info.width,
        height=info.height,
        format=info.format,
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        phash=perceptual_hash(rgb),
    )


def perceptual_hash(image: Image.Image) -> str:
    """The image's pHash as 16 hexadecimal digits: imagehash's, within a few of 64 bits (the
    grey image is shrunk by a whole factor first, and the 2-D DCT is two products with the
    cosine rows it needs), for a fifth of imagehash's CPU; it runs on every image embedded."""
    grey = image.convert("L")
    factor = min(grey.size) // PHASH_PRESHRINK_SIDE
    if factor > 1:
        grey = grey.reduce(factor)
    small = grey.resize((PHASH_INPUT, PHASH_INPUT), Image.Resampling.LANCZOS)
    low = _PHASH_DCT @ np.asarray(small, dtype=np.float64) @ _PHASH_DCT.T
    return str(imagehash.ImageHash(low > np.median(low)))


def scaled_to(image: Image.Image, long_side: int) -> Image.Image:
    """The image at a long side of at most `long_side`: the size the privacy detectors look at."""
    width, height = image.size
    scale = min(1.0, long_side / max(width, height))
    if scale == 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)
