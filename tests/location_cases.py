"""Image files that carry where they were taken in every place a container allows.

Each case is a real, decodable file whose location (GPS EXIF, XMP, IPTC, text chunks) hides
where a careless cleaner would miss it. Shared by the unit tests of `strip_location` and the
intake tests of the gateway.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from services.common.location import GPS_IFD
from tests.helpers import encode, noise_image

# What must never survive: the place (IPTC, XMP, comments), the GPS coordinates, and the EXIF
# that holds them (its TIFF bytes, wherever they hide).
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
    b'exif:GPSLatitude="13,45.0N" exif:GPSLongitude="100,30.0E" '
    b'photoshop:City="Bangkok" photoshop:Country="Thailand"/></rdf:RDF></x:xmpmeta>'
)
ORIENTATION = 0x0112


def exif_with_gps(orientation: int = 6) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "PhoneMaker"
    exif[GPS_IFD] = {1: "N", 2: (13.0, 45.0, 0.0), 3: "E", 4: (100.0, 30.0, 0.0)}
    return exif


LOCATION_MARKERS = (
    b"Bangkok",
    b"Thailand",
    b"GPSLatitude",
    b"13,45.0N",
    exif_with_gps().tobytes().removeprefix(b"Exif\x00\x00"),
)


def base_image() -> Image.Image:
    return noise_image((40, 30), seed=3)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _after_soi(jpeg: bytes, *segments: bytes) -> bytes:
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", len(payload)) + kind + payload + crc


def _before_iend(png: bytes, chunk: bytes) -> bytes:
    iend = png.rindex(b"IEND") - 4
    return png[:iend] + chunk + png[iend:]


def jpeg_fill_byte_before_app1() -> bytes:
    """A legal 0xFF fill byte before the APP1 (EXIF with GPS) marker."""
    data = encode(base_image(), "JPEG", exif=exif_with_gps())
    position = data.index(b"\xff\xe1")
    return data[:position] + b"\xff" + data[position:]


def jpeg_gps_after_end() -> bytes:
    """A clean JPEG with a second, GPS-tagged JPEG appended after its end marker."""
    return encode(base_image(), "JPEG") + encode(base_image(), "JPEG", exif=exif_with_gps())


def jpeg_extended_xmp() -> bytes:
    """An Extended-XMP APP1 segment (GUID, full length, offset, then the XMP)."""
    header = b"http://ns.adobe.com/xmp/extension/\x00" + b"0" * 32
    payload = header + struct.pack(">II", len(XMP), 0) + XMP
    return _after_soi(encode(base_image(), "JPEG"), _segment(0xE1, payload))


def jpeg_iptc() -> bytes:
    """IPTC City and Country in a Photoshop APP13 segment."""
    iptc = b"".join(
        b"\x1c\x02" + bytes([dataset]) + struct.pack(">H", len(value)) + value
        for dataset, value in ((90, b"Bangkok"), (101, b"Thailand"))
    )
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iptc)) + iptc
    return _after_soi(encode(base_image(), "JPEG"), _segment(0xED, b"Photoshop 3.0\x00" + resource))


def jpeg_comment() -> bytes:
    return _after_soi(encode(base_image(), "JPEG"), _segment(0xFE, b"Taken in Bangkok, Thailand"))


def jpeg_junk_before_app1() -> bytes:
    """Junk bytes between segments, which Pillow skips and then reads the GPS behind them."""
    data = encode(base_image(), "JPEG")
    after_app0 = 4 + struct.unpack(">H", data[4:6])[0]
    exif_segment = _segment(0xE1, exif_with_gps().tobytes())
    return data[:after_app0] + b"\x00\x00" + exif_segment + data[after_app0:]


def png_ztxt_raw_exif() -> bytes:
    """ImageMagick's zTXt "Raw profile type exif": the EXIF (with GPS) as hex text."""
    raw = exif_with_gps().tobytes()
    text = f"\nexif\n{len(raw):8d}\n{raw.hex()}\n".encode()
    chunk = png_chunk(b"zTXt", b"Raw profile type exif\x00\x00" + zlib.compress(text))
    return _before_iend(encode(base_image(), "PNG"), chunk)


def png_xmp_in_text() -> bytes:
    """XMP in a plain tEXt chunk (not the iTXt where XMP usually goes)."""
    info = PngInfo()
    info.add_text("XML:com.adobe.xmp", XMP.decode())
    return encode(base_image(), "PNG", pnginfo=info)


def png_after_end() -> bytes:
    """A tEXt chunk with the place after IEND."""
    return encode(base_image(), "PNG") + png_chunk(b"tEXt", b"Location\x00Bangkok, Thailand")


def gif_xmp() -> bytes:
    """XMP in a GIF application extension ("XMP DataXMP"), with a comment naming the place."""
    data = encode(base_image().convert("P"), "GIF")
    flags = data[10]
    table = 3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0
    position = 13 + table
    xmp_blocks = b"".join(
        bytes([len(XMP[i : i + 255])]) + XMP[i : i + 255] for i in range(0, len(XMP), 255)
    )
    extension = b"\x21\xff\x0bXMP DataXMP" + xmp_blocks + b"\x00"
    comment = b"\x21\xfe" + bytes([26]) + b"Taken in Bangkok, Thailand" + b"\x00"
    return data[:position] + extension + comment + data[position:]


def webp_with_gps_and_xmp() -> bytes:
    return encode(base_image(), "WEBP", lossless=True, exif=exif_with_gps(), xmp=XMP)


LEAKS: dict[str, Callable[[], bytes]] = {
    "jpeg-fill-byte-before-app1": jpeg_fill_byte_before_app1,
    "jpeg-gps-after-end-marker": jpeg_gps_after_end,
    "jpeg-extended-xmp": jpeg_extended_xmp,
    "jpeg-iptc-app13": jpeg_iptc,
    "jpeg-comment": jpeg_comment,
    "jpeg-junk-before-app1": jpeg_junk_before_app1,
    "png-ztxt-raw-profile-exif": png_ztxt_raw_exif,
    "png-xmp-in-text": png_xmp_in_text,
    "png-text-after-iend": png_after_end,
    "gif-xmp-and-comment": gif_xmp,
    "webp-exif-and-xmp": webp_with_gps_and_xmp,
}


def jpeg_malformed_exif() -> bytes:
    return _after_soi(
        encode(base_image(), "JPEG"), _segment(0xE1, b"Exif\x00\x00not a TIFF at all")
    )


def png_malformed_exif() -> bytes:
    return _before_iend(encode(base_image(), "PNG"), png_chunk(b"eXIf", b"II*\x00\xff\xff\xff\xff"))


def webp_malformed_exif() -> bytes:
    return encode(base_image(), "WEBP", lossless=True, exif=b"Exif\x00\x00MM\x00*garbage")


MALFORMED_EXIF: dict[str, Callable[[], bytes]] = {
    "jpeg": jpeg_malformed_exif,
    "png": png_malformed_exif,
    "webp": webp_malformed_exif,
}
