"""The first privacy and safety pass, on every upload and crawled image before it is stored.

SEA-VL asked contributors to blur faces and licence plates and had validators flag what slipped
through (seed 002). Here the embedder finds them (`POST /v1/detect`, at its analysis size) and
the kinds in `privacy.blur` are blurred in the bytes that are then stored: the original is never
written. What was found and done is recorded; an image whose
unsafe score reaches `safety.hold_above` is held for an admin's review instead of being refused
silently (never exported, never handed to validators).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageFilter

from services.common.clients import EmbedderClient
from services.common.errors import ServiceError
from services.common.images import ImageInfo, exif_orientation, upright
from services.common.privacy import DetectedImage, Detectors, PiiKind, Region
from services.common.schemas import EmbeddedImage, ImageFailure, ImageInput
from services.gateway.config import PrivacySettings, SafetySettings
from services.gateway.intake import AcceptedImage
from services.gateway.tables import ImageRow

# how each format is written again once blurred (the pixels change, so they are encoded anew)
SAVE_OPTIONS: dict[str, dict[str, Any]] = {
    "JPEG": {"quality": 92},
    "WEBP": {"quality": 90},
    "PNG": {"optimize": False},
    "GIF": {},
}


DETECT_IMAGES = 32
DETECT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Screening:
    """What the pass found in an image and did to it, as the record keeps it."""

    regions: tuple[Region, ...]
    blurred: bool
    unsafe: float | None
    detectors: Detectors | None  # None: detection is switched off
    held: bool
    # the encoder's answer for the bytes as they are to be stored (asked for, and none once
    # blurred): the pipeline scores and dedups by it instead of asking for it again
    embedded: EmbeddedImage | None = None

    @classmethod
    def skipped(cls) -> Screening:
        return cls((), False, None, None, False)

    def mark(self, row: ImageRow) -> None:
        """Writes what was found and done on the image's record (left null when not run)."""
        if self.detectors is None:
            return
        row.faces = sum(1 for r in self.regions if r.kind is PiiKind.FACE)
        row.plates = sum(1 for r in self.regions if r.kind is PiiKind.PLATE)
        row.privacy_regions = json.dumps([r.model_dump(mode="json") for r in self.regions])
        row.blurred = self.blurred
        row.unsafe_score = self.unsafe
        row.privacy_models = self.detectors.model_dump_json()
        row.held = self.held


def blur_regions(image: AcceptedImage, regions: list[Region], margin: float) -> AcceptedImage:
    """The image with each region (grown by `margin` per side) pixelated and blurred beyond
    recovery, written again upright in its own format (an animation keeps its first frame)."""
    with Image.open(io.BytesIO(image.data)) as opened:
        opened.load()
        exif = opened.info.get("exif")
        orientation = exif_orientation(exif) if isinstance(exif, bytes) else 1
        pixels = upright(opened, orientation)
        if pixels.mode not in ("RGB", "RGBA", "L", "LA"):
            pixels = pixels.convert("RGBA" if "transparency" in opened.info else "RGB")
        else:
            pixels = pixels.copy()
    width, height = pixels.size
    for region in regions:
        x0, y0, x1, y1 = region.box
        grow_x, grow_y = (x1 - x0) * margin, (y1 - y0) * margin
        box = (
            max(0, int((x0 - grow_x) * width)),
            max(0, int((y0 - grow_y) * height)),
            min(width, int((x1 + grow_x) * width) + 1),
            min(height, int((y1 + grow_y) * height) + 1),
        )
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        patch = pixels.crop(box)
        side = max(patch.size)
        coarse = patch.resize(
            (max(1, patch.width * 8 // side), max(1, patch.height * 8 // side)),
            Image.Resampling.BILINEAR,
        )
        patch = coarse.resize(patch.size, Image.Resampling.NEAREST)
        pixels.paste(patch.filter(ImageFilter.GaussianBlur(radius=max(2, side // 12))), box)
    if image.info.format == "JPEG" and pixels.mode != "RGB":
        pixels = pixels.convert("RGB")
    output = io.BytesIO()
    pixels.save(output, image.info.format, **SAVE_OPTIONS.get(image.info.format, {}))
    data = output.getvalue()
    return AcceptedImage(
        data, hashlib.sha256(data).hexdigest(), ImageInfo(image.info.format, width, height)
    )


def _screened(
    image: AcceptedImage,
    found: DetectedImage,
    detectors: Detectors,
    privacy: PrivacySettings,
    safety: SafetySettings,
) -> tuple[AcceptedImage, Screening]:
    to_blur = [r for r in found.regions if r.kind in privacy.blur]
    if to_blur:
        image = blur_regions(image, to_blur, privacy.margin)
    held = found.unsafe is not None and found.unsafe >= safety.hold_above
    embedded = found.embedded
    if embedded is not None and embedded.sha256 != image.sha256:  # blurred: other bytes
        embedded = None
    return image, Screening(
        tuple(found.regions), bool(to_blur), found.unsafe, detectors, held, embedded
    )


async def screen(
    images: list[AcceptedImage],
    embedder: EmbedderClient,
    privacy: PrivacySettings,
    safety: SafetySettings,
    embed: bool = False,
) -> list[tuple[AcceptedImage, Screening] | ServiceError]:
    """Each image as it is to be stored, with what was found (with `embed`, and the image kept
    as sent, its embedding); an image the embedder could not read fails alone. Raises
    `UnavailableError` while the embedder is down (nothing is stored unscreened: the caller
    retries)."""
    if not privacy.detect:
        return [(image, Screening.skipped()) for image in images]
    outcomes: list[tuple[AcceptedImage, Screening] | ServiceError] = []
    for part in _requests(images):
        # the bytes as they are: the embedder decodes them at its analysis size anyway (a JPEG
        # at a reduced scale), where a preview made here would cost a decode and an encode more
        answer = await embedder.detect([ImageInput.of_bytes(i.data) for i in part], embed)
        for image, found in zip(part, answer.results, strict=True):
            if isinstance(found, ImageFailure):
                outcomes.append(found.as_error(field="image"))
                continue
            outcomes.append(
                await asyncio.to_thread(_screened, image, found, answer.detectors, privacy, safety)
            )
    return outcomes


def _requests(images: list[AcceptedImage]) -> list[list[AcceptedImage]]:
    """The images in runs that each make a request the embedder takes (its default bounds: 64
    images, 32 MiB of body; base64 grows the bytes by a third)."""
    runs: list[list[AcceptedImage]] = [[]]
    size = 0
    for image in images:
        encoded = len(image.data) * 4 // 3 + 64
        if runs[-1] and (len(runs[-1]) >= DETECT_IMAGES or size + encoded > DETECT_BYTES):
            runs.append([])
            size = 0
        runs[-1].append(image)
        size += encoded
    return [run for run in runs if run]
