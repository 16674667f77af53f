"""The privacy pass sends a crawl batch to the embedder in requests it takes: never more images
or bytes than its default bounds, the images in their order."""

from __future__ import annotations

from services.common.images import ImageInfo
from services.gateway.intake import AcceptedImage
from services.gateway.privacy import DETECT_BYTES, DETECT_IMAGES, _requests


def image(size: int, number: int) -> AcceptedImage:
    return AcceptedImage(b"x" * size, f"{number:064x}", ImageInfo("JPEG", 1, 1))


def test_runs_stay_within_the_embedders_bounds_in_order() -> None:
    images = [image(size, n) for n, size in enumerate([5_000_000] * 7 + [1_000] * 70)]
    runs = _requests(images)
    assert [i.sha256 for run in runs for i in run] == [i.sha256 for i in images]
    for run in runs:
        assert 1 <= len(run) <= DETECT_IMAGES
        assert len(run) == 1 or sum(len(i.data) * 4 // 3 + 64 for i in run) <= DETECT_BYTES
    assert len(runs[0]) == 2  # two 5 MB images make 13.3 MB of base64; a third would pass 16 MiB


def test_one_image_past_the_bytes_goes_alone_and_none_makes_no_request() -> None:
    assert [len(run) for run in _requests([image(20_000_000, 0), image(10, 1)])] == [1, 1]
    assert _requests([]) == []
