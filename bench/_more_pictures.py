"""More real photographs for bench/dedup_quality.py, from two more Debian packages.

gcompris-qt-data packs its activities' pictures in Qt binary resource bundles (`.rcc`), a few
hundred of them photographs: monuments, wild and farm animals, fish, tools, windmills and dams,
musicians, sea beds; jigzo-data's puzzles (`.pzl`) each hold one photograph. Many of them show
one kind of subject (pyramids, Eiffel towers, hammers, windmills, gorillas), so they make the
hard negatives that a handful of wallpapers cannot: different photographs of similar scenes.

Which resources count as photographs (`gcompris_photos`):
  * only the folders listed in `GCOMPRIS_PHOTO_FOLDERS`, each looked at on a contact sheet;
    left out whole: drawings and cartoons (lang's word pictures, chronos, babyshapes' cut-outs),
    paintings (paintings.rcc, babyshapes, and details' Van Gogh pictures, dropped by name),
    planet renders (solar_system, gravity), textures, louis-braille's mixed drawings and
    photographs, leftright's cut-out hands, and photo_hunter (spot-the-difference pairs: a
    photograph and an edited copy of it, neither a clean copy nor a negative);
  * raster files only (WebP, JPEG, PNG; no SVG), short side at least `MIN_SHORT_SIDE` px
    (smaller files are sprites, icons and the details game's 74 px cut-outs);
  * not flat: pixel standard deviation at least `MIN_PIXEL_STD` and at least `MIN_COLOURS`
    distinct colours at 64x64;
  * no picture twice (`_unique`): byte-identical files, and the same photograph packed at two
    sizes in two activities (categorization's 320 px colosseum is explore_monuments' 1024 px
    one), which would otherwise be counted as a negative pair; the largest file is kept.
    Photographs of one landmark by different photographers (three Eiffel towers, three Taj
    Mahals) stay: ORB feature matching with RANSAC, run once by hand, found at most 18 inliers
    between any two kept pictures, where a crop of one of them finds over 100.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

GCOMPRIS_RCC_DIR = Path("/usr/share/gcompris-qt/rcc")
JIGZO_PUZZLE_DIR = Path("/usr/share/games/jigzo/puzzles/00_default")

# (rcc file's stem, folder under the activity's `resource/`, "" for all, series): a series is one
# theme, whose different photographs are the hard negatives.
GCOMPRIS_PHOTO_FOLDERS: tuple[tuple[str, str, str], ...] = (
    ("explore_monuments", "", "gcompris-monuments"),
    ("categorization", "images/monuments", "gcompris-monuments"),
    ("details", "image", "gcompris-monuments"),  # castles, towers, bridges; and paintings
    ("explore_world_animals", "animals", "gcompris-animals"),
    ("explore_farm_animals", "animals", "gcompris-animals"),
    ("erase", "", "gcompris-animals"),
    ("categorization", "images/fishes", "gcompris-fish"),
    ("categorization", "images/tools", "gcompris-tools"),
    ("categorization", "images/renewable", "gcompris-energy"),  # windmills, dams, solar panels
    ("categorization", "images/others", "gcompris-objects"),
    ("categorization", "images/alphabets", "gcompris-objects"),
    ("categorization", "images/numbers", "gcompris-objects"),
    ("explore_world_music", "music", "gcompris-music"),
    ("clickgame", "", "gcompris-sea"),  # its sea-bed backgrounds; the fish sprites are small
)
# details.rcc mixes photographs with Van Gogh's paintings.
PAINTING_NAME = re.compile(r"Gogh|Eglise_dAuvers|PereTanguy")
RASTER_SUFFIXES = frozenset({".webp", ".jpg", ".jpeg", ".png"})
MIN_SHORT_SIDE = 200
MIN_PIXEL_STD = 8.0  # on 0..255 gray: below it a picture is a flat swatch or a blank
MIN_COLOURS = 64  # at 64x64: below it a flat graphic (a gray photograph has ~300)
SAME_PICTURE_DISTANCE = 0.1  # mean |difference| of normalised 16x16 grays; others are > 0.3
SAME_ASPECT_TOLERANCE = 0.03

RCC_MAGIC = b"qres"
RCC_ZLIB = 0x1
RCC_DIRECTORY = 0x2
RCC_ZSTD = 0x4
PZL_MAGIC = b"PzlF\n"


@dataclass(frozen=True)
class SourcePicture:
    name: str  # e.g. "gcompris/explore_monuments/france/eiffelTower"
    series: str  # one group of similar photographs, e.g. "gcompris-monuments", "jigzo"
    data: bytes  # the file's bytes as packaged (jigzo's: see `jigzo_photos`)


class ResourceFormatError(ValueError):
    """The file is not what its reader expects (magic, version, layout)."""


@dataclass(frozen=True)
class RccContents:
    files: dict[str, bytes]  # resource path ("/a/b.webp") -> the file's bytes
    zstd_skipped: list[str]  # zstd-compressed entries: zlib is all the standard library reads


def read_rcc_contents(path: Path) -> RccContents:
    """Reads a Qt binary resource bundle (rcc format versions 1-3, big-endian).

    Header: magic `qres`, version, tree, data and names offsets (u32 each), and from version 3
    a flags word. A tree entry is name offset u32, flags u16, then a directory's child count
    u32 and first child's index u32, or a file's territory u16, language u16 and data offset
    u32; from version 2 a u64 last-modified time follows. A name is u16 length, u32 hash and
    UTF-16BE text; a file's data is u32 length and bytes, zlib ones (flag 0x1) starting with the
    u32 uncompressed size.
    """
    blob = path.read_bytes()
    if blob[:4] != RCC_MAGIC:
        raise ResourceFormatError(f"{path}: not a Qt resource bundle (no `qres` magic)")
    version, tree, data, names = struct.unpack_from(">4I", blob, 4)
    if not 1 <= version <= 3:
        raise ResourceFormatError(f"{path}: unknown rcc format version {version}")
    entry_size = 14 if version == 1 else 22
    contents = RccContents({}, [])

    def name_of(offset: int) -> str:
        (length,) = struct.unpack_from(">H", blob, names + offset)
        start = names + offset + 6
        return blob[start : start + 2 * length].decode("utf-16-be")

    def walk(index: int, parent: str) -> None:
        offset = tree + index * entry_size
        name_offset, flags = struct.unpack_from(">IH", blob, offset)
        path_ = "" if index == 0 else f"{parent}/{name_of(name_offset)}"
        if flags & RCC_DIRECTORY:
            count, first = struct.unpack_from(">II", blob, offset + 6)
            for child in range(first, first + count):
                walk(child, path_)
            return
        (data_offset,) = struct.unpack_from(">I", blob, offset + 10)
        (size,) = struct.unpack_from(">I", blob, data + data_offset)
        body = blob[data + data_offset + 4 : data + data_offset + 4 + size]
        if len(body) != size:
            raise ResourceFormatError(f"{path}: {path_} runs past the end of the file")
        if flags & RCC_ZSTD:
            contents.zstd_skipped.append(path_)
        elif flags & RCC_ZLIB:
            (expected,) = struct.unpack_from(">I", body)
            inflated = zlib.decompress(body[4:])
            if len(inflated) != expected:
                raise ResourceFormatError(f"{path}: {path_} inflates to the wrong size")
            contents.files[path_] = inflated
        else:
            contents.files[path_] = body

    walk(0, "")
    return contents


def read_rcc(path: Path) -> dict[str, bytes]:
    """Resource path -> file bytes; zstd-compressed entries (none in Debian's bundles) left out."""
    return read_rcc_contents(path).files


def gcompris_photos(rcc_dir: Path = GCOMPRIS_RCC_DIR) -> list[SourcePicture]:
    """gcompris-qt-data's photographs (the rule is the module's docstring), sorted by name."""
    found: list[SourcePicture] = []
    for stem, folder, series in GCOMPRIS_PHOTO_FOLDERS:
        files = read_rcc(rcc_dir / f"{stem}.rcc")
        for resource, data in sorted(files.items()):
            _, _, inside = resource.partition("/resource/")
            where = Path(inside)
            if where.suffix.lower() not in RASTER_SUFFIXES or PAINTING_NAME.search(where.stem):
                continue
            if folder and where.parent != Path(folder):
                continue
            if _is_photo_sized(data):
                name = f"gcompris/{stem}/{where.with_suffix('')}"
                found.append(SourcePicture(name, series, data))
    return sorted(_unique(found), key=lambda picture: picture.name)


def jigzo_photos(puzzle_dir: Path = JIGZO_PUZZLE_DIR) -> list[SourcePicture]:
    """jigzo-data's twelve puzzle photographs (about 480x640), as lossless PNG.

    A `.pzl` file is `PzlF`, a version, the puzzle's name and a URL, one a line, then files,
    each as a name line, a byte-count line and the bytes: a piece map, a 232 px thumbnail with a
    frame drawn on, a mask, and a 1024x1024 JPEG texture whose top-left corner is the whole
    photograph (the map's `image 0 0 W H` line), the pieces packed around it. That corner, with
    the texture's 1 px black frame trimmed, is the largest clean copy the puzzle holds; it is
    cut out of the decoded JPEG and stored as PNG so that nothing is compressed twice.
    """
    found = []
    for path in sorted(puzzle_dir.glob("*.pzl")):
        files = read_pzl(path)
        (map_name,) = [name for name in files if name.endswith(".map")]
        texture_name = f"{map_name.removesuffix('.map')}.jpg"  # not "-t.jpg", the thumbnail
        layout = re.search(rb"^image 0 0 (\d+) (\d+)", files[map_name], re.MULTILINE)
        if layout is None or texture_name not in files:
            raise ResourceFormatError(f"{path}: no texture, or no `image` line in its map")
        width, height = int(layout[1]), int(layout[2])
        with Image.open(io.BytesIO(files[texture_name])) as texture:
            photo = _trim_black_frame(texture.convert("RGB").crop((0, 0, width, height)))
        buffer = io.BytesIO()
        photo.save(buffer, "PNG")
        found.append(SourcePicture(f"jigzo/{path.stem}", "jigzo", buffer.getvalue()))
    return sorted(_unique(found), key=lambda picture: picture.name)


def read_pzl(path: Path) -> dict[str, bytes]:
    """A jigzo puzzle's files by name (see `jigzo_photos` for the layout)."""
    blob = path.read_bytes()
    if not blob.startswith(PZL_MAGIC):
        raise ResourceFormatError(f"{path}: not a jigzo puzzle (no `PzlF` magic)")
    position = 0
    for _ in range(4):  # magic, version, puzzle name, URL
        position = blob.index(b"\n", position) + 1
    files = {}
    while position < len(blob):
        name_end = blob.index(b"\n", position)
        size_end = blob.index(b"\n", name_end + 1)
        name = blob[position:name_end].decode()
        size = int(blob[name_end + 1 : size_end])
        files[name] = blob[size_end + 1 : size_end + 1 + size]
        position = size_end + 1 + size
    return files


def _trim_black_frame(image: Image.Image) -> Image.Image:
    """Drops edge rows and columns that are black but for JPEG noise."""
    pixels = np.asarray(image.convert("L"), dtype=np.float32)
    rows = np.flatnonzero(pixels.mean(axis=1) > 16)
    columns = np.flatnonzero(pixels.mean(axis=0) > 16)
    return image.crop((int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1))


def _is_photo_sized(data: bytes) -> bool:
    """Large enough and not flat (see the module's docstring)."""
    with Image.open(io.BytesIO(data)) as image:
        if min(image.size) < MIN_SHORT_SIDE:
            return False
        small = image.convert("RGB").resize((64, 64), Image.Resampling.BOX)
    pixels = np.asarray(small)
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    return float(np.asarray(small.convert("L")).std()) >= MIN_PIXEL_STD and colours >= MIN_COLOURS


def _unique(pictures: list[SourcePicture]) -> list[SourcePicture]:
    """Each photograph once: byte-identical files and one photograph at two sizes (the same
    aspect ratio, nearly the same normalised 16x16 gray) keep only the largest file."""
    by_size = sorted(pictures, key=lambda picture: -_pixel_count(picture.data))
    kept: list[tuple[SourcePicture, float, npt.NDArray[np.float32]]] = []
    digests: set[str] = set()
    for picture in by_size:
        digest = hashlib.sha256(picture.data).hexdigest()
        if digest in digests:
            continue
        digests.add(digest)
        aspect, gray = _fingerprint(picture.data)
        if any(
            abs(aspect / other_aspect - 1) <= SAME_ASPECT_TOLERANCE
            and float(np.abs(gray - other_gray).mean()) < SAME_PICTURE_DISTANCE
            for _, other_aspect, other_gray in kept
        ):
            continue
        kept.append((picture, aspect, gray))
    return [picture for picture, _, _ in kept]


def _pixel_count(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        return image.width * image.height


def _fingerprint(data: bytes) -> tuple[float, npt.NDArray[np.float32]]:
    """Aspect ratio and a 16x16 gray thumbnail scaled to mean 0, deviation 1."""
    with Image.open(io.BytesIO(data)) as image:
        aspect = image.width / image.height
        gray = np.asarray(
            image.convert("L").resize((16, 16), Image.Resampling.BOX), dtype=np.float32
        )
    return aspect, (gray - gray.mean()) / (float(gray.std()) + 1e-6)
