"""The pixel check of near candidates, on real photographs (scikit-learn's two samples)."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from services.dedup.config import VerificationSettings
from services.dedup.verification import Verdict, local_features, verify
from tests.helpers import encode, jpeg, photo, sample_photo

SETTINGS = VerificationSettings()


def crop(image: Image.Image, keep: float) -> Image.Image:
    width, height = round(image.width * keep), round(image.height * keep)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def screenshot(image: Image.Image) -> Image.Image:
    """The photo at half width on a page with a toolbar and text lines around it."""
    page = Image.new("RGB", (image.width * 2, image.height + 200), (245, 245, 245))
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, page.width, 60), fill=(40, 40, 60))
    for line in range(12):
        draw.rectangle((image.width + 40, 100 + 30 * line, page.width - 60, 112 + 30 * line), 0)
    page.paste(image, (20, 100))
    return page.resize((page.width // 2, page.height // 2))


def caption_bar(image: Image.Image) -> Image.Image:
    barred = image.copy()
    ImageDraw.Draw(barred).rectangle(
        (0, round(image.height * 0.8), image.width, image.height), fill=(0, 0, 0)
    )
    return barred


COPIES: dict[str, Callable[[Image.Image], bytes]] = {
    "grayscale": lambda image: jpeg(ImageOps.grayscale(image)),
    "flipped 75% crop": lambda image: jpeg(ImageOps.mirror(crop(image, 0.75))),
    "JPEG quality 25": lambda image: jpeg(image, quality=25),
    "half size": lambda image: jpeg(image.resize((image.width // 2, image.height // 2))),
    "white border": lambda image: jpeg(ImageOps.expand(image, 40, fill=(255, 255, 255))),
    "rotated 4°": lambda image: jpeg(image.rotate(4, expand=True, fillcolor=(0, 0, 0))),
    "darker, more contrast": lambda image: jpeg(
        Image.eval(image, lambda v: max(0, min(255, int((v - 128) * 1.3 + 100))))
    ),
    "caption bar over a fifth": lambda image: jpeg(caption_bar(image)),
    "inside a screenshot": lambda image: jpeg(screenshot(image)),
}


@pytest.mark.parametrize("name", ["china.jpg", "flower.jpg"])
@pytest.mark.parametrize("kind", list(COPIES))
def test_a_copy_of_a_real_photo_is_verified_as_a_copy(name: str, kind: str) -> None:
    original = sample_photo(name)
    copy = local_features(COPIES[kind](original), SETTINGS)
    assert verify(copy, local_features(jpeg(original), SETTINGS), SETTINGS) is Verdict.COPY


def test_two_different_photos_are_different() -> None:
    china, flower = (
        local_features(jpeg(sample_photo(n)), SETTINGS) for n in ("china.jpg", "flower.jpg")
    )
    assert verify(china, flower, SETTINGS) is Verdict.DIFFERENT
    assert verify(flower, china, SETTINGS) is Verdict.DIFFERENT


def test_two_halves_of_one_photo_are_different_pictures() -> None:
    """Same scene, same light, same camera: no pixel of one is in the other."""
    image = sample_photo("china.jpg")
    left = image.crop((0, 0, image.width // 2, image.height))
    right = image.crop((image.width // 2, 0, image.width, image.height))
    verdict = verify(
        local_features(jpeg(left), SETTINGS), local_features(jpeg(right), SETTINGS), SETTINGS
    )
    assert verdict is Verdict.DIFFERENT


def test_two_frames_of_a_stereo_camera_are_different_photos() -> None:
    """scikit-image's motorcycle from a stereo rig's two cameras: one scene, one moment, a
    viewpoint a few centimetres apart (the closest pair of different photographs the embedding
    has met: cosine 0.892, README)."""
    left, right = (
        local_features(jpeg(photo(f"motorcycle_{side}.png")), SETTINGS)
        for side in ("left", "right")
    )
    assert verify(right, left, SETTINGS) is Verdict.DIFFERENT
    assert verify(left, right, SETTINGS) is Verdict.DIFFERENT


def test_a_flat_image_gets_no_verdict_so_the_embedding_decides() -> None:
    ramp = np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1))
    flat = jpeg(Image.fromarray(ramp).convert("RGB"))
    photo_features = local_features(jpeg(sample_photo("flower.jpg")), SETTINGS)
    assert verify(local_features(flat, SETTINGS), photo_features, SETTINGS) is Verdict.UNSURE
    assert verify(photo_features, local_features(flat, SETTINGS), SETTINGS) is Verdict.UNSURE


def test_the_grey_image_is_read_upright_at_the_size_asked() -> None:
    image = sample_photo("china.jpg")  # 640 × 427, brought to the check's long side
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: shown rotated 90° clockwise
    image.rotate(90, expand=True).save(buffer, "JPEG", exif=exif)
    features = local_features(buffer.getvalue(), SETTINGS)
    height, width = features.grey.shape
    assert width == SETTINGS.long_side  # upright: wider than tall
    assert height == pytest.approx(SETTINGS.long_side * 427 / 640, abs=1)


def test_a_transparent_png_and_its_flattened_copy_are_one_picture() -> None:
    """Transparency on white, as the embedder sees it: a logo-like cut-out and its JPEG."""
    cut_out = sample_photo("flower.jpg").convert("RGBA")
    alpha = Image.new("L", cut_out.size, 0)
    ImageDraw.Draw(alpha).ellipse((60, 40, cut_out.width - 60, cut_out.height - 40), fill=255)
    cut_out.putalpha(alpha)
    flattened = Image.new("RGB", cut_out.size, (255, 255, 255))
    flattened.paste(cut_out, mask=cut_out.getchannel("A"))
    png = local_features(encode(cut_out, "PNG"), SETTINGS)
    assert verify(local_features(jpeg(flattened), SETTINGS), png, SETTINGS) is Verdict.COPY
