"""Image files rebuilt from what decoding needs, so no location data survives intake.

Contributors' phones write where a photo was taken into it (EXIF GPS, XMP, IPTC, comments, text
chunks), and a file can hide more after its end marker; seavl never stores, serves or exports any
of it. Rather than hunting for the places location can hide, each container is rebuilt from an
allow-list: the segments or chunks a decoder needs (pixels, tables, colour profile, animation) and
an EXIF reduced to its orientation, so the image still displays upright. The pixels are copied
as they are. A file whose container cannot be walked cleanly (junk between segments, lengths past
the end) is re-encoded from its pixels instead: nothing unparsed is ever passed on.
"""

from __future__ import annotations

import io
import re
import struct
import zlib

from PIL import Image

from services.common.images import (
    EXIF_HEADER,
    ORIENTATION_TAG,
    ImageIntakeError,
    exif_orientation,
    sniff_format,
    upright,
)

GPS_IFD = 0x8825


class UncleanableContainer(ValueError):
    """The container's structure cannot be walked; its pixels are re-encoded instead."""


def orientation_only_exif(raw: bytes) -> bytes | None:
    """An EXIF block (TIFF form, no `Exif\\0\\0` header) holding only the orientation of `raw`,
    or None when the image is upright or `raw` unreadable."""
    orientation = exif_orientation(raw)
    if orientation == 1:
        return None
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    return exif.tobytes().removeprefix(EXIF_HEADER)


def _need(data: bytes, end: int) -> None:
    if end > len(data):
        raise UncleanableContainer("a segment runs past the end of the file")


# JPEG: start/end of scan and frame markers, tables, restart interval; JFIF, ICC and Adobe
# (colour transform) application segments. Everything else (EXIF but its orientation, XMP and
# Extended XMP, IPTC, comments, maker segments, multi-picture data) is dropped.
JPEG_FRAME_AND_TABLES = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
    | {0xC4, 0xCC, 0xDB, 0xDD, 0xDC}
)
JPEG_APP_PREFIXES = {0xE0: (b"JFIF\x00",), 0xE2: (b"ICC_PROFILE\x00",), 0xEE: (b"Adobe",)}
JPEG_START_OF_SCAN, JPEG_END = 0xDA, 0xD9


def _jpeg_segment_kept(marker: int, payload: bytes) -> bool:
    if marker in JPEG_FRAME_AND_TABLES or marker == JPEG_START_OF_SCAN:
        return True
    return any(payload.startswith(prefix) for prefix in JPEG_APP_PREFIXES.get(marker, ()))


def _jpeg_marker(data: bytes, position: int) -> tuple[int, int]:
    """The marker at `position` (after any 0xFF fill bytes) and where its segment starts."""
    if position >= len(data) or data[position] != 0xFF:
        raise UncleanableContainer("bytes between JPEG segments that are not a marker")
    while position + 1 < len(data) and data[position + 1] == 0xFF:
        position += 1  # fill bytes
    if position + 1 >= len(data):
        raise UncleanableContainer("the file ends inside a marker")
    return data[position + 1], position


# In entropy-coded data 0xFF is followed by a stuffed 0x00, a restart marker or another 0xFF
# (fill); anything else is the marker that ends the scan.
JPEG_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_scan_end(data: bytes, position: int) -> int:
    """Where the entropy-coded data that starts at `position` ends (the end of the file if no
    marker follows it)."""
    found = JPEG_MARKER_AFTER_SCAN.search(data, position)
    return len(data) if found is None else found.start()


def _clean_jpeg(data: bytes) -> bytes:
    out = bytearray(b"\xff\xd8")
    position = 2
    while position < len(data):
        marker, position = _jpeg_marker(data, position)
        if marker == JPEG_END:
            return bytes(out + b"\xff\xd9")  # whatever follows the end marker is dropped
        _need(data, position + 4)
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        segment_end = position + 2 + length
        _need(data, segment_end)
        payload = data[position + 4 : segment_end]
        if marker == 0xE1 and payload.startswith(EXIF_HEADER):
            exif = orientation_only_exif(payload)
            if exif is not None:
                body = EXIF_HEADER + exif
                out += b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
        elif _jpeg_segment_kept(marker, payload):
            out += data[position:segment_end]
        position = segment_end
        if marker == JPEG_START_OF_SCAN:
            scan_end = _jpeg_scan_end(data, position)
            out += data[position:scan_end]
            position = scan_end
    return bytes(out)  # a file without an end marker: decoders stop where the data stops


# PNG: header, palette, transparency, pixel data and colour information; APNG's frames.
PNG_KEPT = frozenset(
    {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB"}
    | {b"cICP", b"mDCV", b"cLLI", b"bKGD", b"acTL", b"fcTL", b"fdAT"}
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", len(payload)) + kind + payload + crc


def _clean_png(data: bytes) -> bytes:
    out = bytearray(PNG_SIGNATURE)
    position = len(PNG_SIGNATURE)
    while position < len(data):
        _need(data, position + 8)
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        chunk_end = position + 12 + length
        _need(data, chunk_end)
        if kind == b"eXIf":
            exif = orientation_only_exif(data[position + 8 : position + 8 + length])
            if exif is not None:
                out += _png_chunk(kind, exif)
        elif kind in PNG_KEPT:
            out += data[position:chunk_end]
        if kind == b"IEND":
            return bytes(out)  # whatever follows the end chunk is dropped
        position = chunk_end
    raise UncleanableContainer("a PNG without its end chunk")


# WebP: the extended header, pixels (lossy, lossless, alpha), animation and the colour profile.
WEBP_KEPT = frozenset({b"VP8X", b"VP8 ", b"VP8L", b"ALPH", b"ANIM", b"ANMF", b"ICCP"})
WEBP_EXIF_FLAG, WEBP_XMP_FLAG = 0x08, 0x04


def _webp_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1)


def _clean_webp(data: bytes) -> bytes:
    (riff_size,) = struct.unpack("<I", data[4:8])
    end = 8 + riff_size
    _need(data, end)  # whatever follows the RIFF container is dropped
    chunks = bytearray()
    exif_kept = False
    position = 12
    while position < end:
        _need(data, position + 8)
        kind = data[position : position + 4]
        (length,) = struct.unpack("<I", data[position + 4 : position + 8])
        payload_end = position + 8 + length
        _need(data, payload_end)
        if kind == b"EXIF" and chunks[:4] == b"VP8X":
            exif = orientation_only_exif(data[position + 8 : payload_end])
            if exif is not None:
                chunks += _webp_chunk(kind, exif)
                exif_kept = True
        elif kind in WEBP_KEPT:
            chunks += _webp_chunk(kind, data[position + 8 : payload_end])
        position = payload_end + (length & 1)
    if chunks[:4] == b"VP8X":  # the extended header must announce only what is still there
        chunks[8] &= ~(WEBP_EXIF_FLAG | WEBP_XMP_FLAG)
        if exif_kept:
            chunks[8] |= WEBP_EXIF_FLAG
    return b"RIFF" + struct.pack("<I", len(chunks) + 4) + b"WEBP" + bytes(chunks)


# GIF: the frames and their graphic controls, and the looping extension of animations.
GIF_LOOPING = (b"NETSCAPE2.0", b"ANIMEXTS1.0")


def _gif_sub_blocks_end(data: bytes, position: int) -> int:
    while True:
        _need(data, position + 1)
        size = data[position]
        position += 1 + size
        if size == 0:
            return position


def _gif_colour_table_size(flags: int) -> int:
    return 3 * 2 ** ((flags & 0x07) + 1) if flags & 0x80 else 0


def _clean_gif(data: bytes) -> bytes:
    _need(data, 13)
    position = 13 + _gif_colour_table_size(data[10])
    _need(data, position)
    out = bytearray(data[:position])
    while True:
        _need(data, position + 1)
        introducer = data[position]
        if introducer == 0x3B:  # trailer: whatever follows is dropped
            return bytes(out + b"\x3b")
        if introducer == 0x2C:  # image descriptor, local colour table, LZW data
            _need(data, position + 10)
            start = position
            position += 10 + _gif_colour_table_size(data[position + 9]) + 1
            position = _gif_sub_blocks_end(data, position)
            out += data[start:position]
        elif introducer == 0x21:
            _need(data, position + 2)
            label = data[position + 1]
            end = _gif_sub_blocks_end(data, position + 2)
            application = data[position + 3 : position + 14]
            if label == 0xF9 or (label == 0xFF and application in GIF_LOOPING):
                out += data[position:end]
            position = end  # comments, plain text, XMP and other applications are dropped
        else:
            raise UncleanableContainer("a GIF block of unknown kind")


CLEANERS = {"JPEG": _clean_jpeg, "PNG": _clean_png, "WEBP": _clean_webp, "GIF": _clean_gif}


def _reencoded(data: bytes, image_format: str) -> bytes:
    """The pixels, upright, in a new file of the same format without any metadata; lossless
    but for JPEG (quality 95, full-resolution colour)."""
    try:
        with Image.open(io.BytesIO(data), formats=[image_format]) as image:
            image.load()
            raw_exif = image.info.get("exif")
            orientation = exif_orientation(raw_exif) if isinstance(raw_exif, bytes) else 1
            pixels = upright(image, orientation)
            buffer = io.BytesIO()
            if image_format == "JPEG":
                pixels.save(buffer, "JPEG", quality=95, subsampling=0)
            elif image_format == "WEBP":
                pixels.save(buffer, "WEBP", lossless=True)
            else:
                pixels.save(buffer, image_format)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageIntakeError(
            422, "corrupt_image", f"{image_format} data cannot be read: {exc}"
        ) from exc
    return buffer.getvalue()


def strip_location(data: bytes) -> bytes:
    """The image rebuilt from what decoding needs (no GPS, XMP, IPTC, comments or trailing
    data); files that hold nothing else come back unchanged."""
    image_format = sniff_format(data)
    if image_format is None:
        raise ImageIntakeError(
            415, "unsupported_image_type", "unsupported image type: send JPEG, PNG, WebP or GIF"
        )
    try:
        return CLEANERS[image_format](data)
    except (UncleanableContainer, struct.error, IndexError):
        return _reencoded(data, image_format)
