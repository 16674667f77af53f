"""Removes location data (EXIF GPS, XMP) from image files without re-encoding their pixels.

Contributors' phones write where a photo was taken into it; seavl never stores, serves or
exports that. Orientation and the rest of the EXIF stay, so the image still displays upright.
"""

from __future__ import annotations

import struct
import zlib

from PIL import Image

from services.common.images import sniff_format

GPS_IFD = 0x8825
EXIF_HEADER = b"Exif\x00\x00"
XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"


def _exif_without_gps(raw: bytes) -> bytes:
    """EXIF (with or without the `Exif\\0\\0` header) minus its GPS directory, in TIFF form."""
    exif = Image.Exif()
    exif.load(raw)
    if GPS_IFD not in exif:
        return raw.removeprefix(EXIF_HEADER)
    del exif[GPS_IFD]
    return exif.tobytes().removeprefix(EXIF_HEADER)


def _strip_jpeg(data: bytes) -> bytes:
    out = bytearray(data[:2])
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xDA:  # start of scan: the rest is image data
            break
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        payload = data[position + 4 : position + 2 + length]
        segment_end = position + 2 + length
        if marker == 0xE1 and payload.startswith(EXIF_HEADER):
            cleaned = EXIF_HEADER + _exif_without_gps(payload)
            out += b"\xff\xe1" + struct.pack(">H", len(cleaned) + 2) + cleaned
        elif marker == 0xE1 and payload.startswith(XMP_JPEG_HEADER):
            pass  # XMP may repeat the location: dropped whole
        else:
            out += data[position:segment_end]
        position = segment_end
    out += data[position:]
    return bytes(out)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def _strip_png(data: bytes) -> bytes:
    out = bytearray(data[:8])
    position = 8
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        payload = data[position + 8 : position + 8 + length]
        chunk_end = position + 12 + length
        if kind == b"eXIf":
            out += _png_chunk(kind, _exif_without_gps(payload))
        elif kind == b"iTXt" and payload.startswith(b"XML:com.adobe.xmp\x00"):
            pass
        else:
            out += data[position:chunk_end]
        position = chunk_end
    return bytes(out)


def _strip_webp(data: bytes) -> bytes:
    chunks = bytearray()
    position = 12
    while position + 8 <= len(data):
        kind = data[position : position + 4]
        (length,) = struct.unpack("<I", data[position + 4 : position + 8])
        payload = data[position + 8 : position + 8 + length]
        chunk_end = position + 8 + length + (length & 1)
        if kind == b"EXIF":
            cleaned = _exif_without_gps(payload)
            chunks += (
                b"EXIF" + struct.pack("<I", len(cleaned)) + cleaned + b"\x00" * (len(cleaned) & 1)
            )
        elif kind == b"XMP ":
            if chunks[:4] == b"VP8X":  # the header's flags must no longer announce XMP
                chunks[8] &= ~0x04
        else:
            chunks += data[position:chunk_end]
        position = chunk_end
    return b"RIFF" + struct.pack("<I", len(chunks) + 4) + b"WEBP" + bytes(chunks)


def strip_location(data: bytes) -> bytes:
    """The same image file without GPS or XMP; files without them come back unchanged."""
    image_format = sniff_format(data)
    if image_format == "JPEG":
        return _strip_jpeg(data)
    if image_format == "PNG":
        return _strip_png(data)
    if image_format == "WEBP":
        return _strip_webp(data)
    return data  # GIF has no EXIF
