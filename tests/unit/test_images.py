"""Image intake: every kind of bad input gets its own 4xx code; good images come out as RGB."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from services.common.images import (
    ImageIntakeError,
    ImageLimits,
    decode_image,
    perceptual_hash,
    validate_image,
)
from tests.helpers import encode, noise_image, photo, png_with_header, solid

LIMITS = ImageLimits()


def intake_error(data: bytes, limits: ImageLimits = LIMITS) -> ImageIntakeError:
    with pytest.raises(ImageIntakeError) as caught:
        decode_image(data, limits)
    return caught.value


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "GIF"])
def test_accepted_formats_decode_to_rgb(image_format: str) -> None:
    decoded = decode_image(encode(solid((200, 30, 30)), image_format), LIMITS)
    assert decoded.format == image_format
    assert decoded.pixels.mode == "RGB"
    assert (decoded.width, decoded.height) == (64, 48)
    red, green, blue = decoded.pixels.getpixel((10, 10))
    assert red > 150 and green < 80 and blue < 80


def test_empty_image() -> None:
    error = intake_error(b"")
    assert (error.status_code, error.code) == (400, "empty_image")


def test_too_large_image() -> None:
    data = encode(noise_image((200, 200)), "PNG")
    error = intake_error(data, ImageLimits(max_bytes=len(data) - 1))
    assert (error.status_code, error.code) == (413, "image_too_large")


@pytest.mark.parametrize(
    "data",
    [
        b"hello, this is text",
        encode(solid((1, 2, 3)), "BMP"),
        encode(solid((1, 2, 3)), "TIFF"),
        b"%PDF-1.4 not an image",
    ],
    ids=["text", "bmp", "tiff", "pdf"],
)
def test_unsupported_types(data: bytes) -> None:
    error = intake_error(data)
    assert (error.status_code, error.code) == (415, "unsupported_image_type")


def test_corrupt_jpeg() -> None:
    error = intake_error(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 100)
    assert (error.status_code, error.code) == (422, "corrupt_image")


@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png", "astronaut.png", "camera.png"])
def test_phash_is_imagehash_phash_within_a_few_bits(name: str) -> None:
    """The shortcuts (a shrink by a whole factor, the DCT's low rows only) keep the hash the
    field knows: close to imagehash's on real photos, far from another photo's, and close for a
    re-compressed, half-size copy."""
    image = photo(name)
    ours = imagehash.hex_to_hash(perceptual_hash(image))
    assert ours - imagehash.phash(image) <= 4
    copy = Image.open(
        io.BytesIO(encode(image.resize((image.width // 2, image.height // 2)), "JPEG", quality=60))
    )
    assert ours - imagehash.hex_to_hash(perceptual_hash(copy)) <= 6
    other = "horse.png" if name != "horse.png" else "rocket.jpg"
    assert ours - imagehash.hex_to_hash(perceptual_hash(photo(other))) > 16


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "GIF"])
@pytest.mark.parametrize("kept", [0.5, 0.95])
def test_truncated_image(image_format: str, kept: float) -> None:
    data = encode(noise_image((300, 300)), image_format)
    error = intake_error(data[: int(len(data) * kept)])
    assert (error.status_code, error.code) == (422, "truncated_image")


@pytest.mark.parametrize(
    "data",
    [png_with_header(0, 10), png_with_header(10, 0), b"GIF89a\x00\x00\x05\x00" + b"\x00" * 20],
    ids=["png-zero-width", "png-zero-height", "gif-zero-width"],
)
def test_zero_size_image(data: bytes) -> None:
    error = intake_error(data)
    assert (error.status_code, error.code) == (422, "zero_size_image")


def test_decompression_bomb_by_our_limit() -> None:
    error = intake_error(encode(solid((9, 9, 9), (100, 100)), "PNG"), ImageLimits(max_pixels=5000))
    assert (error.status_code, error.code) == (422, "decompression_bomb")
    assert "10000 pixels" in error.message


def test_decompression_bomb_by_pillows_guard() -> None:
    """A tiny file whose header claims 2.5 billion pixels: Pillow's guard, as a 4xx."""
    error = intake_error(png_with_header(50_000, 50_000), ImageLimits(max_pixels=10**12))
    assert (error.status_code, error.code) == (422, "decompression_bomb")


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (80, 40), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 40, 40))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    decoded = decode_image(encode(image, "JPEG", exif=exif, quality=95), LIMITS)
    assert (decoded.width, decoded.height) == (40, 80)
    assert decoded.pixels.size == (40, 80)
    top = decoded.pixels.getpixel((20, 5))
    assert top[0] > 200 and top[2] < 60  # the red half is now on top


def test_palette_with_transparency_becomes_rgb_on_white() -> None:
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = 0
    decoded = decode_image(encode(image, "PNG", transparency=0), LIMITS)
    assert decoded.pixels.mode == "RGB"
    assert decoded.pixels.getpixel((5, 5)) == (255, 255, 255)


def test_alpha_becomes_white() -> None:
    image = Image.new("RGBA", (10, 10), (0, 255, 0, 0))
    decoded = decode_image(encode(image, "PNG"), LIMITS)
    assert decoded.pixels.getpixel((1, 1)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb() -> None:
    image = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    decoded = decode_image(encode(image, "JPEG", quality=95), LIMITS)
    red, green, blue = decoded.pixels.getpixel((16, 16))
    assert decoded.pixels.mode == "RGB"
    assert red > 200 and green < 60 and blue < 60


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    samples = np.full((8, 8), 32896, dtype=np.uint16)  # 128 * 257: mid-grey in 16 bits
    image = Image.fromarray(samples)
    assert image.mode == "I;16"
    decoded = decode_image(encode(image, "PNG"), LIMITS)
    assert decoded.pixels.getpixel((3, 3)) == (128, 128, 128)


def test_animated_gif_gives_first_frame() -> None:
    frames = [solid((255, 0, 0)), solid((0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    red, _, blue = decode_image(data, LIMITS).pixels.getpixel((5, 5))
    assert red > 200 and blue < 50


def test_animated_webp_gives_first_frame() -> None:
    frames = [solid((0, 200, 0)), solid((200, 0, 200))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)
    _, green, _ = decode_image(data, LIMITS).pixels.getpixel((5, 5))
    assert green > 150


def test_big_jpeg_is_decoded_in_draft_mode() -> None:
    big = photo("coffee.png").resize((4000, 3000))
    decoded = decode_image(encode(big, "JPEG", quality=85), LIMITS, draft_short_side=256)
    assert (decoded.width, decoded.height) == (4000, 3000)
    assert min(decoded.pixels.size) >= 256
    assert decoded.pixels.size[0] <= 1000  # 1/8 scale: not fully decoded


def test_phash_and_sha256_identify_the_image() -> None:
    data = encode(photo("chelsea.png"), "PNG")
    decoded = decode_image(data, LIMITS)
    assert imagehash.hex_to_hash(decoded.phash) - imagehash.phash(photo("chelsea.png")) <= 4
    assert len(decoded.sha256) == 64
    again = decode_image(data, LIMITS)
    assert (again.sha256, again.phash) == (decoded.sha256, decoded.phash)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "GIF"])
@pytest.mark.parametrize("kept", [0.3, 0.6, 0.95, 1.0])
def test_the_cheap_validation_refuses_what_decoding_refuses(image_format: str, kept: float) -> None:
    data = encode(noise_image((400, 300), seed=5), image_format)
    data = data[: int(len(data) * kept)]
    try:
        decoded = decode_image(data, LIMITS)
    except ImageIntakeError as expected:
        with pytest.raises(ImageIntakeError) as caught:
            validate_image(data, LIMITS)
        refused = caught.value
        assert (refused.status_code, refused.code) == (expected.status_code, expected.code)
    else:
        info = validate_image(data, LIMITS)
        assert (info.format, info.width, info.height) == (
            decoded.format,
            decoded.width,
            decoded.height,
        )
