"""Reference sets in SQL, and their centroids cached per replica until the set's version moves."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from services.common.database import session_scope
from services.common.errors import ServiceError
from services.common.vectors import vector_from_bytes, vector_to_bytes
from services.filter.tables import CalibrationRow, GroupSumRow, ReferenceRow, ReferenceSetRow

WHOLE_SET = ""


def unknown_set(name: str) -> ServiceError:
    return ServiceError(404, "unknown_set", f"no reference set named {name!r}", field="set")


@dataclass(frozen=True)
class Centroids:
    """The set's mean unit vector, and one per country group that has references."""

    reference_set: ReferenceSetRow
    whole: npt.NDArray[np.float64] | None
    by_country: dict[str, npt.NDArray[np.float64]]
    counts: dict[str, int]


class ReferenceStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[str, tuple[int, Centroids]] = {}
        self._cache_lock = threading.Lock()

    # ---- sets
    def create_set(
        self, name: str, model: str, description: str, dim: int | None
    ) -> ReferenceSetRow:
        row = ReferenceSetRow(name=name, model=model, description=description, dim=dim)
        try:
            with session_scope(self.engine) as session:
                session.add(row)
                session.flush()
                session.refresh(row)
        except IntegrityError as exc:
            raise ServiceError(409, "set_exists", f"a reference set named {name!r} exists") from exc
        return row

    def _get(self, session: Session, name: str) -> ReferenceSetRow:
        row = session.exec(select(ReferenceSetRow).where(ReferenceSetRow.name == name)).first()
        if row is None:
            raise unknown_set(name)
        return row

    def get_set(self, name: str) -> tuple[ReferenceSetRow, dict[str, int]]:
        with session_scope(self.engine) as session:
            row = self._get(session, name)
            return row, self._counts(session, row)

    @staticmethod
    def _counts(session: Session, row: ReferenceSetRow) -> dict[str, int]:
        sums = session.exec(select(GroupSumRow).where(GroupSumRow.set_id == row.id)).all()
        return {s.group_key: s.count for s in sums if s.count > 0}

    def list_sets(self) -> list[tuple[ReferenceSetRow, dict[str, int]]]:
        with session_scope(self.engine) as session:
            rows = session.exec(select(ReferenceSetRow).order_by(col(ReferenceSetRow.name))).all()
            return [(row, self._counts(session, row)) for row in rows]

    def delete_set(self, name: str) -> None:
        with session_scope(self.engine) as session:
            row = self._get(session, name)
            session.delete(row)

    @staticmethod
    def _lock_for_change(session: Session, row: ReferenceSetRow) -> None:
        """Bumps the version first: that write takes the row (PostgreSQL) or database (SQLite)
        lock, so concurrent changes to one set's sums are serialised, never lost."""
        session.execute(
            update(ReferenceSetRow)
            .where(col(ReferenceSetRow.id) == row.id)
            .values(version=ReferenceSetRow.version + 1)
        )
        session.refresh(row)

    # ---- references
    def add_references(
        self,
        name: str,
        vectors: npt.NDArray[np.float32],
        countries: list[str | None],
        sha256s: list[str | None],
        model: str | None = None,
    ) -> tuple[list[int], ReferenceSetRow]:
        """All references or none; the group sums change in the same transaction."""
        with session_scope(self.engine) as session:
            row = self._get(session, name)
            self._lock_for_change(session, row)
            if model is not None and model != row.model:
                raise model_mismatch(row, model)
            if row.dim is None:
                row.dim = int(vectors.shape[1])
                session.add(row)
            elif vectors.shape[1] != row.dim:
                raise ServiceError(
                    422,
                    "dimension_mismatch",
                    f"set {name!r} holds {row.dim}-d vectors of {row.model}; "
                    f"got {vectors.shape[1]}-d",
                    field="references",
                )
            references = [
                ReferenceRow(
                    set_id=row.id or 0, country=country, sha256=sha, vector=vector_to_bytes(v)
                )
                for v, country, sha in zip(vectors, countries, sha256s, strict=True)
            ]
            session.add_all(references)
            groups: dict[str, list[int]] = {WHOLE_SET: list(range(len(vectors)))}
            for index, country in enumerate(countries):
                if country is not None:
                    groups.setdefault(country, []).append(index)
            for group, members in groups.items():
                self._add_to_sum(
                    session,
                    row,
                    group,
                    vectors[members].astype(np.float64).sum(axis=0),
                    len(members),
                )
            session.flush()
            return [r.id or 0 for r in references], row

    @staticmethod
    def _add_to_sum(
        session: Session,
        row: ReferenceSetRow,
        group: str,
        delta: npt.NDArray[np.float64],
        count: int,
    ) -> None:
        existing = session.get(GroupSumRow, (row.id, group))
        if existing is None:
            existing = GroupSumRow(
                set_id=row.id or 0,
                group_key=group,
                count=0,
                vector_sum=vector_to_bytes(np.zeros_like(delta), "<f8"),
            )
        total = vector_from_bytes(existing.vector_sum, "<f8") + delta
        existing.count += count
        existing.vector_sum = vector_to_bytes(total, "<f8")
        session.add(existing)

    def delete_reference(self, name: str, reference_id: int) -> None:
        with session_scope(self.engine) as session:
            row = self._get(session, name)
            self._lock_for_change(session, row)
            reference = session.get(ReferenceRow, reference_id)
            if reference is None or reference.set_id != row.id:
                raise ServiceError(
                    404, "unknown_reference", f"set {name!r} has no reference {reference_id}"
                )
            vector = -vector_from_bytes(reference.vector).astype(np.float64)
            self._add_to_sum(session, row, WHOLE_SET, vector, -1)
            if reference.country is not None:
                self._add_to_sum(session, row, reference.country, vector, -1)
            session.delete(reference)

    # ---- scoring
    def centroids(self, name: str) -> Centroids:
        """From the cache while the set's version is unchanged; one small query per call."""
        with session_scope(self.engine) as session:
            row = self._get(session, name)
            with self._cache_lock:
                cached = self._cache.get(name)
            if (
                cached is not None
                and cached[0] == row.version
                and cached[1].reference_set.id == row.id
            ):
                return cached[1]
            sums = session.exec(select(GroupSumRow).where(GroupSumRow.set_id == row.id)).all()
        means = {
            s.group_key: vector_from_bytes(s.vector_sum, "<f8") / s.count
            for s in sums
            if s.count > 0
        }
        centroids = Centroids(
            reference_set=row,
            whole=means.pop(WHOLE_SET, None),
            by_country=means,
            counts={s.group_key: s.count for s in sums if s.count > 0},
        )
        with self._cache_lock:
            self._cache[name] = (row.version, centroids)
        return centroids

    def reference_count(self, name: str) -> int:
        with session_scope(self.engine) as session:
            row = self._get(session, name)
            count = session.exec(
                select(func.count()).select_from(ReferenceRow).where(ReferenceRow.set_id == row.id)
            ).one()
            return int(count)

    # ---- calibration
    def save_calibration(
        self, name: str, calibration: CalibrationRow, apply: bool
    ) -> CalibrationRow:
        with session_scope(self.engine) as session:
            row = self._get(session, name)
            calibration.set_id = row.id or 0
            if apply and calibration.recommended_rho is not None:
                self._lock_for_change(session, row)
                row.rho = calibration.recommended_rho
                calibration.applied = True
                session.add(row)
            session.add(calibration)
            session.flush()
            session.refresh(calibration)
            return calibration

    def list_calibrations(self, name: str) -> list[CalibrationRow]:
        with session_scope(self.engine) as session:
            row = self._get(session, name)
            return list(
                session.exec(
                    select(CalibrationRow)
                    .where(CalibrationRow.set_id == row.id)
                    .order_by(col(CalibrationRow.id))
                ).all()
            )

    def apply_calibration(self, name: str, calibration_id: int) -> ReferenceSetRow:
        with session_scope(self.engine) as session:
            row = self._get(session, name)
            calibration = session.get(CalibrationRow, calibration_id)
            if calibration is None or calibration.set_id != row.id:
                raise ServiceError(
                    404, "unknown_calibration", f"set {name!r} has no calibration {calibration_id}"
                )
            if calibration.recommended_rho is None:
                raise ServiceError(
                    409, "no_recommendation", "this calibration found no threshold to apply"
                )
            self._lock_for_change(session, row)
            row.rho = calibration.recommended_rho
            calibration.applied = True
            session.add_all([row, calibration])
            return row


def model_mismatch(row: ReferenceSetRow, model: str) -> ServiceError:
    """409: the request is well formed, but the set holds vectors of another model."""
    return ServiceError(
        409,
        "model_mismatch",
        f"set {row.name!r} holds {row.model} vectors; these are from {model}",
        field="model",
    )


def calibration_table(calibration: CalibrationRow) -> list[dict[str, Any]]:
    table: list[dict[str, Any]] = json.loads(calibration.table_json)
    return table
