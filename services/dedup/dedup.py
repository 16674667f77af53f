"""Near-duplicate checks and race-free insert-if-unique, over the vector store and pHashes.

Insert-if-unique holds a per-namespace lock for its whole check-then-write: a row of
`dedup_insert_locks` updated first in the transaction, which PostgreSQL keeps locked (and SQLite
keeps the database write lock) until commit. Every replica takes the same lock, so of several
near-duplicates inserted at once, to one replica or many, the first to get it is kept and the
others find it when their turn comes. Vectors are written (to Qdrant with `wait=True`) before
commit, so the next holder's search sees them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.common.database import insert_if_new, session_scope
from services.common.errors import ServiceError
from services.common.schemas import DuplicateOf, PHashMatch
from services.common.storage import ObjectStore
from services.dedup.config import DedupSettings
from services.dedup.embedded import EmbeddedVectorStore
from services.dedup.phash_index import PHashIndex, phash_to_int, to_signed, to_unsigned
from services.dedup.tables import InsertLockRow, PHashRow
from services.dedup.vectors import VectorStore
from services.dedup.verification import LocalFeatures, PixelChecker, Verdict, first_copy

Matrix = npt.NDArray[np.float32]


def collection_name(namespace: str, model: str) -> str:
    return f"{namespace}__{model}"


def unknown_collection(namespace: str, model: str) -> ServiceError:
    return ServiceError(
        404,
        "unknown_collection",
        f"nothing is stored for model {model!r} in namespace {namespace!r}",
    )


def candidate_floor(threshold: float, candidate_threshold: float | None) -> float:
    """The lowest cosine at which a stored image is a candidate for the pixel check."""
    return threshold if candidate_threshold is None else min(threshold, candidate_threshold)


def decision(
    candidates: Sequence[tuple[str, float]],
    threshold: float,
    check: Callable[[str, float], Verdict] | None = None,
) -> DuplicateOf | None:
    """The decision on (id, cosine) candidates, nearest first (`first_copy`); without a pixel
    check every verdict is "unsure", which leaves the embedding's rule: the nearest at >= ε."""
    decided = first_copy(candidates, threshold, check or (lambda _, __: Verdict.UNSURE))
    if decided is None:
        return None
    match_id, cosine, verdict = decided
    return DuplicateOf(
        id=match_id, by="pixels" if verdict is Verdict.COPY else "embedding", score=cosine
    )


@dataclass(frozen=True)
class InsertItem:
    """One image to insert unless a near-duplicate is stored (or kept earlier in its batch)."""

    sha256: str
    model: str | None
    vector: npt.NDArray[np.float32] | None
    phash: str | None
    threshold: float
    max_hamming: int
    match_phash: bool
    # with `stored`, the image is in the shared store under its id and near candidates (cosine
    # from `candidate_threshold`) are checked on their pixels
    stored: bool = False
    candidate_threshold: float | None = None


@dataclass
class _NamespaceHashes:
    index: PHashIndex
    last_seq: int = 0


class Deduplicator:
    def __init__(
        self,
        settings: DedupSettings,
        engine: Engine,
        vectors: VectorStore,
        store: ObjectStore | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """`registry`: where the pixel check's counters are served."""
        self.settings = settings
        self.engine = engine
        self.vectors = vectors
        self.pixels = (
            PixelChecker(store, settings.verification, registry)
            if store is not None and settings.verification.enabled
            else None
        )
        self._hashes: dict[str, _NamespaceHashes] = {}
        self._hashes_lock = threading.Lock()

    # ---- pHashes
    def _catch_up(self, session: Session, namespace: str) -> PHashIndex:
        """Applies the pHash rows written (by any replica) since this one last looked."""
        with self._hashes_lock:
            state = self._hashes.setdefault(namespace, _NamespaceHashes(PHashIndex()))
            rows = session.exec(
                select(PHashRow)
                .where(PHashRow.namespace == namespace, col(PHashRow.seq) > state.last_seq)
                .order_by(col(PHashRow.seq))
            ).all()
            added_ids: list[str] = []
            added_hashes: list[int] = []
            for row in rows:
                if row.deleted:
                    if added_ids and row.sha256 in added_ids:
                        position = added_ids.index(row.sha256)
                        del added_ids[position], added_hashes[position]
                    state.index.remove(row.sha256)
                else:
                    added_ids.append(row.sha256)
                    added_hashes.append(to_unsigned(row.phash))
                state.last_seq = max(state.last_seq, row.seq or 0)
            if added_ids:
                state.index.add(added_ids, added_hashes)
            return state.index

    def check_phashes(
        self, namespace: str, phashes: list[str], max_hamming: int
    ) -> list[list[PHashMatch]]:
        with session_scope(self.engine) as session:
            index = self._catch_up(session, namespace)
        return [
            [PHashMatch(id=i, distance=d) for i, d in index.search(phash_to_int(p), max_hamming)]
            for p in phashes
        ]

    # ---- vectors
    def check_vectors(
        self, namespace: str, model: str, vectors: Matrix, threshold: float, limit: int
    ) -> list[list[tuple[str, float]]]:
        """Nothing stored yet for the model means nothing is a duplicate."""
        name = self._checked_collection(namespace, model, vectors)
        return self.vectors.search(name, vectors, threshold, limit)

    def check_vectors_without_waiting(
        self, namespace: str, model: str, vectors: Matrix, threshold: float, limit: int
    ) -> list[list[tuple[str, float]]] | None:
        """As `check_vectors` when it needs no wait (the embedded store, its graph not being
        written), else None: the event loop answers a small check itself, without the hand-off
        to a worker thread and back, and leaves the rest to a thread."""
        if not isinstance(self.vectors, EmbeddedVectorStore):
            return None  # a Qdrant server is a network call
        name = self._checked_collection(namespace, model, vectors)
        return self.vectors.search_without_waiting(name, vectors, threshold, limit)

    def decide_checks(
        self,
        namespace: str,
        model: str,
        vectors: Matrix,
        threshold: float,
        candidate_threshold: float,
        images: list[bytes],
    ) -> list[DuplicateOf | None]:
        """What an insert of each image (not stored: its bytes are here) would decide."""
        name = self._checked_collection(namespace, model, vectors)
        if self.vectors.dim(name) is None:
            return [None] * len(images)
        pixels = self.pixels
        floor, limit = self._reach(threshold, candidate_threshold, pixels is not None)
        neighbours = self.vectors.search(name, vectors, floor, limit + 1)
        decisions = []
        for data, found in zip(images, neighbours, strict=True):

            def query(data: bytes = data) -> LocalFeatures | None:
                return pixels.features_of_bytes(data) if pixels is not None else None

            decisions.append(
                self.decide(threshold, candidate_threshold, query if pixels else None, found)
            )
        return decisions

    def _checked_collection(self, namespace: str, model: str, vectors: Matrix) -> str:
        name = collection_name(namespace, model)
        dim = self.vectors.dim(name)
        if dim is not None and dim != vectors.shape[1]:
            raise ServiceError(
                422,
                "dimension_mismatch",
                f"{model} vectors in {namespace!r} have {dim} dimensions; got {vectors.shape[1]}",
                field="vectors",
            )
        return name

    # ---- insert-if-unique
    def _lock_namespace(self, session: Session, namespace: str) -> None:
        session.execute(insert_if_new(self.engine, InsertLockRow).values(key=namespace, version=0))
        session.execute(
            update(InsertLockRow)
            .where(col(InsertLockRow.key) == namespace)
            .values(version=InsertLockRow.version + 1)
        )

    def insert_many(self, namespace: str, items: list[InsertItem]) -> list[DuplicateOf | None]:
        """Insert-if-unique for each item, in order, under one lock and one transaction.

        Each item is checked against what is stored and against the items of this batch that
        were kept before it; the kept vectors are then written in one batch per model.
        """
        self._read_pixels_ahead(namespace, items)
        with session_scope(self.engine) as session:
            self._lock_namespace(session, namespace)
            # the store is not written until every item is decided: one search answers them all
            neighbours = self._stored_neighbours(namespace, items)
            kept: list[InsertItem] = []
            outcomes: list[DuplicateOf | None] = []
            for index, item in enumerate(items):
                duplicate = self._find_duplicate(
                    session, namespace, item, kept, neighbours.get(index)
                )
                outcomes.append(duplicate)
                if duplicate is None and all(k.sha256 != item.sha256 for k in kept):
                    kept.append(item)
            by_model: dict[str, list[InsertItem]] = {}
            for item in kept:
                if item.vector is not None and item.model is not None:
                    by_model.setdefault(item.model, []).append(item)
            for model, group in by_model.items():
                extra = [{"phash": i.phash} if i.phash is not None else {} for i in group]
                vectors = np.stack([i.vector for i in group if i.vector is not None])
                self.vectors.upsert(
                    collection_name(namespace, model), [i.sha256 for i in group], vectors, extra
                )
            self._record_phashes(
                session, namespace, {i.sha256: i.phash for i in kept if i.phash is not None}
            )
            return outcomes

    def _read_pixels_ahead(self, namespace: str, items: list[InsertItem]) -> None:
        """Reads the pixels the decisions will compare before the namespace lock is taken, so
        that no insert anywhere waits on the store or a decode: each stored image that has a
        near candidate, and its nearest one (inside the lock they are then in the cache)."""
        if self.pixels is None:
            return
        checked = [item for item in items if item.stored]
        for index, found in self._stored_neighbours(namespace, checked).items():
            nearest = [i for i, _ in found if i != checked[index].sha256]
            if nearest:
                self.pixels.features(checked[index].sha256)
                self.pixels.features(nearest[0])

    def _reach(
        self, threshold: float, candidate_threshold: float | None, with_pixels: bool
    ) -> tuple[float, int]:
        """The lowest cosine and the number of candidates one decision weighs (a search asks
        for one more: the image itself, when it is stored already)."""
        if not with_pixels or self.pixels is None:
            return threshold, 1
        return candidate_floor(threshold, candidate_threshold), self.pixels.settings.max_candidates

    def _stored_neighbours(
        self, namespace: str, items: list[InsertItem]
    ) -> dict[int, list[tuple[str, float]]]:
        """Each vector item's stored neighbours as its decision reads them (by its index in
        `items`), in one search per collection and reach instead of one per image: with a
        Qdrant server, one round trip a batch. Items of a collection not made yet, or of
        another dimension than its, are left out (their decision refuses or finds nothing)."""
        groups: dict[tuple[str, float, int], dict[int, Matrix]] = {}
        for index, item in enumerate(items):
            if item.vector is None or item.model is None:
                continue
            name = collection_name(namespace, item.model)
            if self.vectors.dim(name) != item.vector.size:
                continue
            reach = self._reach(item.threshold, item.candidate_threshold, item.stored)
            groups.setdefault((name, *reach), {})[index] = item.vector
        found: dict[int, list[tuple[str, float]]] = {}
        for (name, floor, limit), vectors in groups.items():
            answers = self.vectors.search(name, np.stack(list(vectors.values())), floor, limit + 1)
            found.update(zip(vectors, answers, strict=True))
        return found

    def _find_duplicate(
        self,
        session: Session,
        namespace: str,
        item: InsertItem,
        kept: list[InsertItem],
        neighbours: list[tuple[str, float]] | None,
    ) -> DuplicateOf | None:
        if item.vector is not None:
            assert item.model is not None
            found = self._find_by_vector(namespace, item, kept, neighbours)
            if found is not None:
                return found
        if item.phash is not None and (item.match_phash or item.vector is None):
            query = phash_to_int(item.phash)
            stored = self._catch_up(session, namespace).search(query, item.max_hamming)
            in_batch_hashes = [
                (k.sha256, (phash_to_int(k.phash) ^ query).bit_count())
                for k in kept
                if k.phash is not None and k.sha256 != item.sha256
            ]
            matches_by_hash = sorted(
                [(i, d) for i, d in stored if i != item.sha256]
                + [(i, d) for i, d in in_batch_hashes if d <= item.max_hamming],
                key=lambda match: match[1],
            )
            if matches_by_hash:
                match_id, distance = matches_by_hash[0]
                return DuplicateOf(id=match_id, by="phash", distance=distance)
        return None

    def _find_by_vector(
        self,
        namespace: str,
        item: InsertItem,
        kept: list[InsertItem],
        neighbours: list[tuple[str, float]] | None,
    ) -> DuplicateOf | None:
        """The stored (or earlier kept) image this one duplicates by its embedding, and by its
        pixels when it is in the store. `neighbours`: its stored ones, as the batch's search
        found them; None when the batch found its collection missing (made now, it holds
        nothing) or of another dimension (refused here)."""
        assert item.vector is not None and item.model is not None
        name = collection_name(namespace, item.model)
        self.vectors.ensure(name, item.vector.size)
        in_batch = [
            (k.sha256, float(k.vector @ item.vector))
            for k in kept
            if k.model == item.model and k.vector is not None and k.sha256 != item.sha256
        ]
        pixels = self.pixels if item.stored else None
        return self.decide(
            item.threshold,
            item.candidate_threshold,
            (lambda: pixels.features(item.sha256, sent_as_stored=True))
            if pixels is not None
            else None,
            neighbours or [],
            exclude=item.sha256,
            also=in_batch,
        )

    def decide(
        self,
        threshold: float,
        candidate_threshold: float | None,
        query_pixels: Callable[[], LocalFeatures | None] | None,
        found: Sequence[tuple[str, float]],
        exclude: str | None = None,
        also: Sequence[tuple[str, float]] = (),
    ) -> DuplicateOf | None:
        """One image's decision, the same for an insert and a check: with its pixels, the
        nearest candidates (cosine from the candidate threshold, `max_candidates` of them) are
        checked on theirs (`first_copy`); without, the nearest at cosine >= ε. `found`: the
        stored neighbours a search answered (`_reach` says how far it looks); `also`: more
        (id, cosine) candidates (a batch's images kept before this one)."""
        pixels = self.pixels if query_pixels is not None else None
        floor, limit = self._reach(threshold, candidate_threshold, pixels is not None)
        candidates = sorted(
            [(i, s) for i, s in found if i != exclude] + [(i, s) for i, s in also if s >= floor],
            key=lambda match: -match[1],
        )[:limit]
        if pixels is None or query_pixels is None:
            return decision(candidates, threshold)
        query: list[LocalFeatures | None] = []  # read once, at the first candidate

        def check(candidate: str, cosine: float) -> Verdict:
            if not query:
                query.append(query_pixels())
            return pixels.check(query[0], candidate, cosine)

        return decision(candidates, threshold, check)

    def _record_phashes(self, session: Session, namespace: str, phashes: dict[str, str]) -> None:
        """Appends a row for each image whose live pHash is not already this one."""
        if not phashes:
            return
        rows = session.exec(
            select(PHashRow)
            .where(PHashRow.namespace == namespace, col(PHashRow.sha256).in_(list(phashes)))
            .order_by(col(PHashRow.seq))
        ).all()
        latest = {row.sha256: row for row in rows}  # in seq order: the last one wins
        for sha256, phash in phashes.items():
            value = to_signed(phash_to_int(phash))
            current = latest.get(sha256)
            if current is None or current.deleted or current.phash != value:
                session.add(PHashRow(namespace=namespace, sha256=sha256, phash=value))

    def _forget_phashes(self, session: Session, namespace: str, sha256s: list[str]) -> int:
        """Marks the images' pHashes deleted; how many were stored."""
        rows = session.exec(
            select(PHashRow)
            .where(PHashRow.namespace == namespace, col(PHashRow.sha256).in_(sha256s))
            .order_by(col(PHashRow.seq))
        ).all()
        latest = {row.sha256: row for row in rows}  # in seq order: the last one wins
        live = [row for row in latest.values() if not row.deleted]
        for row in live:
            session.add(
                PHashRow(namespace=namespace, sha256=row.sha256, phash=row.phash, deleted=True)
            )
        return len(live)

    def delete(self, namespace: str, model: str, sha256: str) -> None:
        name = collection_name(namespace, model)
        if self.vectors.dim(name) is None:
            raise unknown_collection(namespace, model)
        with session_scope(self.engine) as session:
            self._lock_namespace(session, namespace)
            removed = self.vectors.delete(name, sha256)
            if not (self._forget_phashes(session, namespace, [sha256]) or removed):
                raise ServiceError(404, "unknown_point", f"no stored image {sha256} in {name}")

    def drop(self, namespace: str, model: str) -> int:
        """Forgets a collection with its points' pHashes, for `seavl dedup reindex` to insert
        them again; returns how many points it held."""
        name = collection_name(namespace, model)
        if self.vectors.dim(name) is None:
            raise unknown_collection(namespace, model)
        held = 0
        with session_scope(self.engine) as session:
            self._lock_namespace(session, namespace)
            for page in self.vectors.pages(name):
                self._forget_phashes(session, namespace, [point.sha256 for point in page])
                held += len(page)
            self.vectors.drop(name)
        return held

    def phash_count(self, namespace: str) -> int:
        with session_scope(self.engine) as session:
            return len(self._catch_up(session, namespace))
