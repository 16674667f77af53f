"""Insert-if-unique of a batch: its images are decided as they would be one at a time, and the
vector store is searched once per collection for the whole batch (a Qdrant server once per
batch, not once per image, while the namespace lock is held)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from services.common.database import make_engine
from services.common.schemas import DuplicateOf
from services.common.storage import LocalFolderStore
from services.dedup.config import DedupSettings
from services.dedup.dedup import Deduplicator, InsertItem, Matrix
from services.dedup.embedded import EmbeddedVectorStore
from tests.helpers import migrated_sqlite

NAMESPACE = "default"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def unit(vector: np.ndarray) -> Matrix:
    unit_vector: Matrix = (vector / np.linalg.norm(vector)).astype(np.float32)
    return unit_vector


class CountedSearches(EmbeddedVectorStore):
    """The embedded store, counting the searches asked of it and the vectors in each."""

    def __init__(self, settings: DedupSettings) -> None:
        super().__init__(settings)
        self.searches: list[tuple[str, int]] = []

    def search(
        self, name: str, vectors: Matrix, threshold: float, limit: int
    ) -> list[list[tuple[str, float]]]:
        self.searches.append((name, len(vectors)))
        return super().search(name, vectors, threshold, limit)


@pytest.fixture
def deduplicator(tmp_path: Path) -> Iterator[Callable[..., Deduplicator]]:
    """Makes deduplicators, each on its own database and store, closed after the test."""
    made: list[Deduplicator] = []

    def make(name: str, with_pixels: bool = False) -> Deduplicator:
        folder = tmp_path / name
        folder.mkdir()
        settings = DedupSettings(
            database_url=migrated_sqlite(folder / "dedup.db"), qdrant_path=folder / "vectors"
        )
        store = LocalFolderStore(folder / "objects") if with_pixels else None
        vectors = CountedSearches(settings)
        made.append(Deduplicator(settings, make_engine(settings.database_url), vectors, store))
        return made[-1]

    yield make
    for dedup in made:
        dedup.vectors.close()
        dedup.engine.dispose()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


def near(base: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly `cosine` from the unit vector `base`."""
    drawn = rng.normal(size=base.shape)
    other = unit(drawn - (drawn @ base) * base)
    return unit(cosine * base + np.sqrt(1 - cosine**2) * other)


def item(
    name: str, vector: np.ndarray | None, model: str = "m", threshold: float = 0.95, **extra: object
) -> InsertItem:
    fields: dict[str, object] = {
        "phash": None,
        "max_hamming": 4,
        "match_phash": False,
        **extra,
    }
    return InsertItem(
        sha256=sha(name),
        model=model if vector is not None else None,
        vector=vector,
        threshold=threshold,
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
def stored_and_batch(rng: np.random.Generator) -> tuple[list[InsertItem], list[InsertItem]]:
    """What is stored first, and a batch mixing every kind of decision: copies of stored
    images and of each other, a threshold stricter than the copy, another model (of another
    dimension), and an image known by its pHash alone."""
    bases = [unit(rng.normal(size=32)) for _ in range(6)]
    other_model = unit(rng.normal(size=16))
    stored = [item(f"stored {i}", base) for i, base in enumerate(bases)]
    stored.append(item("stored other", other_model, model="o"))
    stored.append(item("stored hash", None, phash="ffff0000ffff0000"))
    fresh = unit(rng.normal(size=32))
    batch = [
        item("copy of 0", near(bases[0], 0.99, rng)),
        item("unrelated", unit(rng.normal(size=32))),
        item("strict copy of 1", near(bases[1], 0.99, rng), threshold=0.995),
        item("fresh", fresh),
        item("copy of fresh", near(fresh, 0.98, rng)),
        item("copy of other", near(other_model, 0.99, rng), model="o"),
        item("far from other", unit(rng.normal(size=16)), model="o"),
        item("copy of 2", near(bases[2], 0.97, rng), threshold=0.96),
        item("hash copy", None, phash="ffff0000ffff0001", match_phash=True),
        item("stored 3", bases[3]),  # the same bytes again: its own point is not its original
    ]
    return stored, batch


def test_a_batch_is_decided_as_its_images_would_be_one_at_a_time(
    deduplicator: Callable[..., Deduplicator],
    stored_and_batch: tuple[list[InsertItem], list[InsertItem]],
) -> None:
    stored, batch = stored_and_batch
    at_once, one_by_one = deduplicator("a"), deduplicator("b")
    for dedup in (at_once, one_by_one):
        assert dedup.insert_many(NAMESPACE, stored) == [None] * len(stored)
    decided = at_once.insert_many(NAMESPACE, batch)
    alone = [one_by_one.insert_many(NAMESPACE, [i])[0] for i in batch]
    assert decided == alone
    originals = {i.sha256: (d.id if d else None) for i, d in zip(batch, decided, strict=True)}
    assert originals == {
        sha("copy of 0"): sha("stored 0"),
        sha("unrelated"): None,
        sha("strict copy of 1"): None,
        sha("fresh"): None,
        sha("copy of fresh"): sha("fresh"),
        sha("copy of other"): sha("stored other"),
        sha("far from other"): None,
        sha("copy of 2"): sha("stored 2"),
        sha("hash copy"): sha("stored hash"),
        sha("stored 3"): None,
    }
    assert decided[-2] == DuplicateOf(id=sha("stored hash"), by="phash", distance=1)


def test_a_batch_asks_the_store_once_per_collection_not_once_per_image(
    deduplicator: Callable[..., Deduplicator],
    stored_and_batch: tuple[list[InsertItem], list[InsertItem]],
) -> None:
    stored, batch = stored_and_batch
    dedup = deduplicator("a")
    dedup.insert_many(NAMESPACE, stored)
    searches = dedup.vectors.searches  # type: ignore[attr-defined]
    searches.clear()
    dedup.insert_many(NAMESPACE, batch)
    # each collection's images, in one search per threshold they ask for (two in "m")
    assert sorted(searches) == [
        ("default__m", 1),
        ("default__m", 1),
        ("default__m", 5),
        ("default__o", 2),
    ]


def test_with_the_pixel_check_the_batch_reads_ahead_and_decides_in_one_search_each(
    deduplicator: Callable[..., Deduplicator], rng: np.random.Generator
) -> None:
    """Images in the store are looked up twice a batch: once to read the candidates' pixels
    before the lock is taken, once under it to decide."""
    dedup = deduplicator("a", with_pixels=True)
    bases = [unit(rng.normal(size=32)) for _ in range(8)]
    dedup.insert_many(NAMESPACE, [item(f"s{i}", b, stored=True) for i, b in enumerate(bases)])
    searches: list[tuple[str, int]] = dedup.vectors.searches  # type: ignore[attr-defined]
    searches.clear()
    batch = [item(f"c{i}", near(b, 0.99, rng), stored=True) for i, b in enumerate(bases)]
    decided = dedup.insert_many(NAMESPACE, batch)
    # none of the bytes are in the store: the pixel check cannot read them, and the embedding
    # decides alone, as it does one image at a time
    assert [d.id if d else None for d in decided] == [sha(f"s{i}") for i in range(8)]
    assert searches == [("default__m", 8), ("default__m", 8)]
