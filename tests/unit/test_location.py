"""Location data never survives intake; pixels and orientation do."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo

from services.common.images import ImageLimits, decode_image
from services.common.location import GPS_IFD, strip_location
from tests.helpers import encode, noise_image
from tests.location_cases import LEAKS, LOCATION_MARKERS, MALFORMED_EXIF

XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><exif:GPSLatitude>13,45.0N</exif:GPSLatitude></x:xmpmeta>'
)


def exif_with_gps() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: must survive
    exif[0x010F] = "PhoneMaker"
    exif[GPS_IFD] = {1: "N", 2: (13.0, 45.0, 0.0), 3: "E", 4: (100.0, 30.0, 0.0)}
    return exif


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_gps_xmp_and_other_exif_are_removed_losslessly(image_format: str) -> None:
    image = noise_image((40, 30), seed=3)
    options: dict[str, object] = {"exif": exif_with_gps(), "xmp": XMP}
    if image_format == "WEBP":
        options["lossless"] = True
    if image_format == "PNG":  # Pillow writes PNG XMP only as an uncompressed iTXt chunk given so
        del options["xmp"]
        info = PngInfo()
        info.add_itxt("XML:com.adobe.xmp", XMP.decode())
        options["pnginfo"] = info
    original = encode(image, image_format, **options)
    assert b"GPSLatitude" in original
    assert GPS_IFD in Image.open(io.BytesIO(original)).getexif()
    cleaned = strip_location(original)
    opened = Image.open(io.BytesIO(cleaned))
    exif = opened.getexif()
    assert GPS_IFD not in exif and not exif.get_ifd(GPS_IFD)
    assert dict(exif) == {0x0112: 6}  # only what decoding needs: camera, owner, dates go too
    assert b"GPSLatitude" not in cleaned and b"13,45" not in cleaned
    np.testing.assert_array_equal(
        np.asarray(opened.convert("RGB")),
        np.asarray(Image.open(io.BytesIO(original)).convert("RGB")),
    )
    decoded = decode_image(cleaned, ImageLimits())
    assert (decoded.width, decoded.height) == (30, 40)  # orientation still applied


def test_files_without_location_are_unchanged() -> None:
    for image_format in ("JPEG", "PNG", "WEBP", "GIF"):
        data = encode(noise_image((20, 20)), image_format)
        assert strip_location(data) == data


def readable_gps(data: bytes) -> dict[int, object]:
    """The GPS directory Pillow finds in a file (the same reader a consumer would use)."""
    return dict(Image.open(io.BytesIO(data)).getexif().get_ifd(GPS_IFD))


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("case", sorted(LEAKS))
def test_no_location_survives_in_any_container(case: str) -> None:
    original = LEAKS[case]()
    assert readable_gps(original) or any(m in original for m in LOCATION_MARKERS)
    cleaned = strip_location(original)
    assert not readable_gps(cleaned)
    assert not [m for m in LOCATION_MARKERS if m in cleaned]
    opened = Image.open(io.BytesIO(cleaned))
    assert not {"xmp", "XML:com.adobe.xmp", "comment", "Raw profile type exif"} & set(opened.info)
    decoded = decode_image(cleaned, ImageLimits())
    assert decoded.format == decode_image(original, ImageLimits()).format
    if case == "jpeg-junk-before-app1":  # a container it cannot clean: re-encoded, upright
        upright = np.asarray(decode_image(original, ImageLimits()).pixels, dtype=np.int16)
        assert np.abs(pixels(cleaned) - upright).mean() < 3
    else:
        np.testing.assert_array_equal(pixels(cleaned), pixels(original))


@pytest.mark.parametrize("case", ["jpeg-fill-byte-before-app1", "webp-exif-and-xmp"])
def test_orientation_is_all_that_is_kept_of_exif(case: str) -> None:
    cleaned = strip_location(LEAKS[case]())
    assert dict(Image.open(io.BytesIO(cleaned)).getexif()) == {0x0112: 6}
    decoded = decode_image(cleaned, ImageLimits())
    assert (decoded.width, decoded.height) == (30, 40)  # still shown upright


@pytest.mark.parametrize("image_format", sorted(MALFORMED_EXIF))
def test_malformed_exif_is_dropped_not_an_error(image_format: str) -> None:
    original = MALFORMED_EXIF[image_format]()
    cleaned = strip_location(original)
    assert b"garbage" not in cleaned and b"not a TIFF" not in cleaned
    assert not Image.open(io.BytesIO(cleaned)).getexif()
    np.testing.assert_array_equal(pixels(cleaned), pixels(original))


def _frames(data: bytes) -> list[np.ndarray]:
    image = Image.open(io.BytesIO(data))
    frames = []
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        frames.append(np.asarray(image.convert("RGBA")))
    return frames


def _animation(image_format: str) -> bytes:
    frames = [noise_image((24, 16), seed=s).convert("RGBA") for s in range(3)]
    options: dict[str, object] = {"save_all": True, "append_images": frames[1:], "loop": 0}
    if image_format == "WEBP":
        options["lossless"] = True
    return encode(frames[0], image_format, duration=80, **options)


ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
ESSENTIALS = {
    "progressive-jpeg-with-icc": lambda: encode(
        noise_image((40, 30)), "JPEG", progressive=True, icc_profile=ICC
    ),
    "cmyk-jpeg": lambda: encode(noise_image((40, 30)).convert("CMYK"), "JPEG"),
    "restart-interval-jpeg": lambda: encode(noise_image((64, 48)), "JPEG", restart_marker_rows=1),
    "palette-png-with-transparency": lambda: encode(
        noise_image((20, 20)).convert("P"), "PNG", transparency=3
    ),
    "animated-gif": lambda: _animation("GIF"),
    "animated-png": lambda: _animation("PNG"),
    "animated-webp": lambda: _animation("WEBP"),
}


@pytest.mark.parametrize("case", sorted(ESSENTIALS))
def test_what_decoding_needs_is_kept(case: str) -> None:
    original = ESSENTIALS[case]()
    cleaned = strip_location(original)
    assert cleaned == original  # nothing to remove: the same bytes
    before, after = Image.open(io.BytesIO(original)), Image.open(io.BytesIO(cleaned))
    assert after.info.get("icc_profile") == before.info.get("icc_profile")
    assert after.info.get("loop") == before.info.get("loop")
    assert len(_frames(cleaned)) == len(_frames(original))
