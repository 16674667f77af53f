"""Location data never survives intake; pixels and orientation do."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from services.common.images import ImageLimits, decode_image
from services.common.location import GPS_IFD, strip_location
from tests.helpers import encode, noise_image

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
def test_gps_and_xmp_are_removed_losslessly(image_format: str) -> None:
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
    assert exif[0x0112] == 6 and exif[0x010F] == "PhoneMaker"
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
