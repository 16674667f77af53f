"""The benchmark's extra photographs: the Qt resource reader, and gcompris' photographs."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from bench._more_pictures import (
    GCOMPRIS_RCC_DIR,
    JIGZO_PUZZLE_DIR,
    gcompris_photos,
    jigzo_photos,
    read_rcc,
    read_rcc_contents,
)

PLAIN = b"plain bytes, stored as they are"
PACKED = b"zlib-compressed bytes " * 20
ZSTD = b"not read"


def rcc_name(name: str) -> bytes:
    """u16 length, u32 hash (not checked by the reader), UTF-16BE text."""
    return struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")


def rcc_bundle() -> bytes:
    """A version 3 bundle: `/pictures/` holding a plain, a zlib and a zstd file."""
    names = b""
    name_offsets = {}
    for name in ("pictures", "plain.txt", "packed.bin", "new.bin"):
        name_offsets[name] = len(names)
        names += rcc_name(name)
    data = b""
    data_offsets = {}
    for name, stored in (
        ("plain.txt", PLAIN),
        ("packed.bin", struct.pack(">I", len(PACKED)) + zlib.compress(PACKED)),
        ("new.bin", ZSTD),
    ):
        data_offsets[name] = len(data)
        data += struct.pack(">I", len(stored)) + stored
    modified = struct.pack(">Q", 0)

    def directory(name_offset: int, count: int, first: int) -> bytes:
        return struct.pack(">IHII", name_offset, 0x2, count, first) + modified

    def file(name: str, flags: int) -> bytes:
        entry = struct.pack(">IHHHI", name_offsets[name], flags, 0, 1, data_offsets[name])
        return entry + modified

    tree = (
        directory(0, 1, 1)  # the root
        + directory(name_offsets["pictures"], 3, 2)
        + file("plain.txt", 0x0)
        + file("packed.bin", 0x1)
        + file("new.bin", 0x4)
    )
    header_size = 24
    data_at, names_at = header_size, header_size + len(data)
    tree_at = names_at + len(names)
    header = b"qres" + struct.pack(">5I", 3, tree_at, data_at, names_at, 0x1)
    return header + data + names + tree


def test_read_rcc_returns_plain_and_zlib_files(tmp_path: Path) -> None:
    path = tmp_path / "tiny.rcc"
    path.write_bytes(rcc_bundle())
    assert read_rcc(path) == {"/pictures/plain.txt": PLAIN, "/pictures/packed.bin": PACKED}
    assert read_rcc_contents(path).zstd_skipped == ["/pictures/new.bin"]


def test_read_rcc_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "not.rcc"
    path.write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(ValueError, match="qres"):
        read_rcc(path)


def test_gcompris_photos_are_many_pictures() -> None:
    if not (GCOMPRIS_RCC_DIR / "categorization.rcc").is_file():
        pytest.skip("gcompris-qt-data is not installed (scripts/ensure-photos.sh)")
    photos = gcompris_photos()
    assert len(photos) >= 50
    assert len({photo.name for photo in photos}) == len(photos)
    assert {"gcompris-monuments", "gcompris-animals"} <= {photo.series for photo in photos}
    assert not any("photo_hunter" in photo.name or "paintings" in photo.name for photo in photos)
    for photo in photos:
        with Image.open(io.BytesIO(photo.data)) as image:
            image.load()
            assert min(image.size) >= 200, photo.name


def test_jigzo_photos_are_its_puzzles() -> None:
    if not JIGZO_PUZZLE_DIR.is_dir():
        pytest.skip("jigzo-data is not installed (scripts/ensure-photos.sh)")
    photos = jigzo_photos()
    assert len(photos) == len(list(JIGZO_PUZZLE_DIR.glob("*.pzl")))
    for photo in photos:
        with Image.open(io.BytesIO(photo.data)) as image:
            assert image.format == "PNG" and min(image.size) >= 200, photo.name
