"""Near-duplicate checks and race-free insert-if-unique, over Qdrant and the pHash index.

Insert-if-unique holds a per-namespace lock for its whole check-then-write: a row of
`dedup_insert_locks` updated first in the transaction, which PostgreSQL keeps locked (and SQLite
keeps the database write lock) until commit. Every replica takes the same lock, so of several
near-duplicates inserted at once, to one replica or many, the first to get it is kept and the
others find it when their turn comes. Vectors are written with `wait=True` before commit, so the
next holder's search sees them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.common.database import is_postgres, session_scope
from services.common.errors import ServiceError
from services.common.schemas import DuplicateOf, PHashMatch
from services.dedup.config import DedupSettings
from services.dedup.phash_index import PHashIndex, phash_to_int, to_signed, to_unsigned
from services.dedup.tables import InsertLockRow, PHashRow
from services.dedup.vectors import VectorStore

Matrix = npt.NDArray[np.float32]


def collection_name(namespace: str, model: str) -> str:
    return f"{namespace}__{model}"


def unknown_collection(namespace: str, model: str) -> ServiceError:
    return ServiceError(
        404,
        "unknown_collection",
        f"nothing is stored for model {model!r} in namespace {namespace!r}",
    )


@dataclass
class _NamespaceHashes:
    index: PHashIndex
    last_seq: int = 0


class Deduplicator:
    def __init__(self, settings: DedupSettings, engine: Engine, vectors: VectorStore) -> None:
        self.settings = settings
        self.engine = engine
        self.vectors = vectors
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
        name = collection_name(namespace, model)
        dim = self.vectors.dim(name)
        if dim is not None and dim != vectors.shape[1]:
            raise ServiceError(
                422,
                "dimension_mismatch",
                f"{model} vectors in {namespace!r} have {dim} dimensions; got {vectors.shape[1]}",
                field="vectors",
            )
        return self.vectors.search(name, vectors, threshold, limit)

    # ---- insert-if-unique
    def _lock_namespace(self, session: Session, namespace: str) -> None:
        insert = postgres_insert if is_postgres(self.engine) else sqlite_insert
        session.execute(
            insert(InsertLockRow).values(key=namespace, version=0).on_conflict_do_nothing()
        )
        session.execute(
            update(InsertLockRow)
            .where(col(InsertLockRow.key) == namespace)
            .values(version=InsertLockRow.version + 1)
        )

    def insert_if_unique(
        self,
        namespace: str,
        sha256: str,
        model: str | None,
        vector: Matrix | None,
        phash: str | None,
        threshold: float,
        max_hamming: int,
        match_phash: bool,
    ) -> DuplicateOf | None:
        """None when inserted (or when this very image was stored before), else the match."""
        with session_scope(self.engine) as session:
            self._lock_namespace(session, namespace)
            if vector is not None:
                assert model is not None
                name = collection_name(namespace, model)
                self.vectors.ensure(name, vector.size)
                found = self.vectors.search(name, vector[None], threshold, limit=2)[0]
                others = [(i, s) for i, s in found if i != sha256]
                if others:
                    return DuplicateOf(id=others[0][0], by="embedding", score=others[0][1])
            if phash is not None and (match_phash or vector is None):
                index = self._catch_up(session, namespace)
                matches = [
                    m for m in index.search(phash_to_int(phash), max_hamming) if m[0] != sha256
                ]
                if matches:
                    return DuplicateOf(id=matches[0][0], by="phash", distance=matches[0][1])
            if vector is not None:
                assert model is not None
                extra = {"phash": phash} if phash is not None else {}
                self.vectors.upsert(
                    collection_name(namespace, model), [sha256], vector[None], [extra]
                )
            if phash is not None:
                self._record_phash(session, namespace, sha256, phash)
            return None

    def _record_phash(self, session: Session, namespace: str, sha256: str, phash: str) -> None:
        latest = session.exec(
            select(PHashRow)
            .where(PHashRow.namespace == namespace, PHashRow.sha256 == sha256)
            .order_by(col(PHashRow.seq).desc())
        ).first()
        value = to_signed(phash_to_int(phash))
        if latest is None or latest.deleted or latest.phash != value:
            session.add(PHashRow(namespace=namespace, sha256=sha256, phash=value))

    def delete(self, namespace: str, model: str, sha256: str) -> None:
        name = collection_name(namespace, model)
        if self.vectors.dim(name) is None:
            raise unknown_collection(namespace, model)
        with session_scope(self.engine) as session:
            self._lock_namespace(session, namespace)
            removed = self.vectors.delete(name, sha256)
            latest = session.exec(
                select(PHashRow)
                .where(PHashRow.namespace == namespace, PHashRow.sha256 == sha256)
                .order_by(col(PHashRow.seq).desc())
            ).first()
            if latest is not None and not latest.deleted:
                session.add(
                    PHashRow(namespace=namespace, sha256=sha256, phash=latest.phash, deleted=True)
                )
                removed = True
            if not removed:
                raise ServiceError(404, "unknown_point", f"no stored image {sha256} in {name}")

    def phash_count(self, namespace: str) -> int:
        with session_scope(self.engine) as session:
            return len(self._catch_up(session, namespace))
