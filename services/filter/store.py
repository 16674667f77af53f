"""Reference sets in SQL, and their centroids cached per replica until the set's version moves."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from services.common.database import session_scope
from services.common.errors import ServiceError
from services.common.tiers import (
    Boundaries,
    ScoreSketch,
    TierBasis,
    TierShares,
    TierSource,
    fit_shares,
)
from services.common.vectors import vector_from_bytes, vector_to_bytes
from services.filter.tables import (
    CalibrationRow,
    GroupSumRow,
    ReferenceRow,
    ReferenceSetRow,
    ScoreSketchRow,
    TierBoundariesRow,
)

WHOLE_SET = ""
logger = logging.getLogger(__name__)
SetRowT = TypeVar("SetRowT", CalibrationRow, TierBoundariesRow)


def unknown_set(name: str) -> ServiceError:
    return ServiceError(404, "unknown_set", f"no reference set named {name!r}", field="set")


@dataclass(frozen=True)
class Centroids:
    """The set's mean unit vector, one per country group that has references, and the tier
    boundaries in force (None until the set has references)."""

    reference_set: ReferenceSetRow
    whole: npt.NDArray[np.float64] | None
    by_country: dict[str, npt.NDArray[np.float64]]
    counts: dict[str, int]
    tiers: TierBoundariesRow | None


@dataclass(frozen=True)
class NewTiers:
    """A version of boundaries to record."""

    source: TierSource
    basis: TierBasis
    boundaries: Boundaries
    description: str
    samples: int = 0
    shares: TierShares | None = None


@dataclass(frozen=True)
class SetView:
    """What a set's info shows: its row, reference counts by group, the boundaries in force,
    and the crawl scores its sketch holds for its current references."""

    row: ReferenceSetRow
    counts: dict[str, int]
    tiers: TierBoundariesRow | None
    observed_scores: int


# (model, norm of the set's centroid) → the boundaries a set starts on, before any fit
TierDefaults = Callable[[str, float], NewTiers]


def boundaries_of(row: TierBoundariesRow) -> Boundaries:
    return Boundaries(
        bronze=row.bronze,
        silver=row.silver,
        gold=row.gold,
        platinum=row.platinum,
        diamond=row.diamond,
    )


class ReferenceStore:
    def __init__(self, engine: Engine, tier_defaults: TierDefaults) -> None:
        self.engine = engine
        self.tier_defaults = tier_defaults
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

    def describe(self, name: str) -> SetView:
        """The set as its info shows it, read in one session."""
        with session_scope(self.engine) as session:
            return self._view(session, self._get(session, name))

    def describe_all(self) -> list[SetView]:
        with session_scope(self.engine) as session:
            rows = session.exec(select(ReferenceSetRow).order_by(col(ReferenceSetRow.name))).all()
            return [self._view(session, row) for row in rows]

    def _view(self, session: Session, row: ReferenceSetRow) -> SetView:
        sketch = session.get(ScoreSketchRow, row.id)
        current = sketch is not None and sketch.references_version == row.references_version
        return SetView(
            row=row,
            counts=self._counts(session, row),
            tiers=self._current_tiers(session, row),
            observed_scores=sketch.count if sketch is not None and current else 0,
        )

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
            self._references_changed(session, row)
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
            session.flush()
            self._references_changed(session, row)

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
            tiers = self._current_tiers(session, row)
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
            tiers=tiers,
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
        return self._rows_of_set(name, CalibrationRow, "id")

    def _rows_of_set(self, name: str, table: type[SetRowT], order: str) -> list[SetRowT]:
        """The set's rows of `table`, by the column `order`."""
        with session_scope(self.engine) as session:
            row = self._get(session, name)
            query = select(table).where(col(table.set_id) == row.id)
            query = query.order_by(col(getattr(table, order)))
            return list(session.exec(query).all())

    @staticmethod
    def _calibration(session: Session, row: ReferenceSetRow, calibration_id: int) -> CalibrationRow:
        calibration = session.get(CalibrationRow, calibration_id)
        if calibration is None or calibration.set_id != row.id:
            raise ServiceError(
                404, "unknown_calibration", f"set {row.name!r} has no calibration {calibration_id}"
            )
        return calibration

    def calibration(self, name: str, calibration_id: int) -> CalibrationRow:
        with session_scope(self.engine) as session:
            return self._calibration(session, self._get(session, name), calibration_id)

    def apply_calibration(self, name: str, calibration_id: int) -> ReferenceSetRow:
        with session_scope(self.engine) as session:
            row = self._get(session, name)
            calibration = self._calibration(session, row, calibration_id)
            if calibration.recommended_rho is None:
                raise ServiceError(
                    409, "no_recommendation", "this calibration found no threshold to apply"
                )
            self._lock_for_change(session, row)
            row.rho = calibration.recommended_rho
            calibration.applied = True
            session.add_all([row, calibration])
            return row

    # ---- tier boundaries
    @staticmethod
    def _current_tiers(session: Session, row: ReferenceSetRow) -> TierBoundariesRow | None:
        return session.exec(
            select(TierBoundariesRow)
            .where(TierBoundariesRow.set_id == row.id)
            .order_by(col(TierBoundariesRow.version).desc())
            .limit(1)
        ).first()

    def _record_tiers(
        self, session: Session, row: ReferenceSetRow, new: NewTiers
    ) -> TierBoundariesRow:
        """A new version in force; the caller holds the set's lock (`_lock_for_change`)."""
        current = self._current_tiers(session, row)
        bounds = new.boundaries
        recorded = TierBoundariesRow(
            set_id=row.id or 0,
            version=(current.version if current is not None else 0) + 1,
            source=new.source.value,
            basis=new.basis.value,
            bronze=bounds.bronze,
            silver=bounds.silver,
            gold=bounds.gold,
            platinum=bounds.platinum,
            diamond=bounds.diamond,
            shares_json=new.shares.model_dump_json() if new.shares is not None else None,
            samples=new.samples,
            description=new.description,
            references_version=row.references_version,
        )
        session.add(recorded)
        session.flush()
        session.refresh(recorded)
        return recorded

    def _references_changed(self, session: Session, row: ReferenceSetRow) -> None:
        """Scores are on a new scale: a set still on its model's default gets the default for
        its new centroid as a new version; fitted boundaries stay (and say they are stale)."""
        row.references_version += 1
        session.add(row)
        self._record_default(session, row)

    def _record_default(self, session: Session, row: ReferenceSetRow) -> None:
        whole = session.get(GroupSumRow, (row.id, WHOLE_SET))
        if whole is None or whole.count <= 0:
            return
        current = self._current_tiers(session, row)
        if current is not None and current.basis != TierBasis.MODEL_DEFAULT:
            return
        norm = float(np.linalg.norm(vector_from_bytes(whole.vector_sum, "<f8") / whole.count))
        default = self.tier_defaults(row.model, norm)
        if (
            current is not None
            and current.source == default.source
            and boundaries_of(current) == default.boundaries
        ):
            return
        self._record_tiers(session, row, default)

    def ensure_tiers(self, name: str) -> None:
        """Sets whose references predate tier versions start on their model's default."""
        with session_scope(self.engine) as session:
            row = self._get(session, name)
            self._lock_for_change(session, row)
            if self._current_tiers(session, row) is None:
                self._record_default(session, row)

    def record_tiers(
        self,
        name: str,
        make: Callable[[ReferenceSetRow], NewTiers],
        references_version: int | None = None,
        calibration_id: int | None = None,
    ) -> TierBoundariesRow:
        """Records the boundaries `make` computes for the set (under its lock), refusing when
        its references moved past `references_version`; a calibration's (`calibrated`) also
        makes its ρ the set's, as applying it does."""
        with session_scope(self.engine) as session:
            row = self._get(session, name)
            self._lock_for_change(session, row)
            if references_version is not None and references_version != row.references_version:
                raise ServiceError(
                    409,
                    "references_changed",
                    f"set {name!r} is at references version {row.references_version}; the "
                    f"scores were made at {references_version}: score the sample again",
                    field="references_version",
                )
            if session.get(GroupSumRow, (row.id, WHOLE_SET)) is None:
                raise ServiceError(409, "empty_set", f"set {name!r} has no references yet")
            recorded = self._record_tiers(session, row, make(row))
            if calibration_id is not None:
                calibration = self._calibration(session, row, calibration_id)
                row.rho = calibration.recommended_rho
                calibration.applied = True
                session.add_all([row, calibration])
            return recorded

    def list_tiers(self, name: str) -> list[TierBoundariesRow]:
        return self._rows_of_set(name, TierBoundariesRow, "version")

    def observe(
        self, name: str, scores: Sequence[float], references_version: int, shares: TierShares
    ) -> TierBoundariesRow | None:
        """Adds scores a crawl made to the set's sketch. A set on `shares` boundaries that are
        its model's default or came from this sketch is fitted again once the sketch holds
        enough scores for the shares, and again each time it has doubled: a new version, so
        the boundaries settle as the crawl runs. Scores of older references are not added."""
        with session_scope(self.engine) as session:
            row = self._get(session, name)
            # a write first takes the set's lock (as `_lock_for_change`), version unchanged
            session.execute(
                update(ReferenceSetRow)
                .where(col(ReferenceSetRow.id) == row.id)
                .values(version=ReferenceSetRow.version)
            )
            session.refresh(row)
            if references_version != row.references_version:
                return None
            sketch_row = session.get(ScoreSketchRow, row.id)
            if sketch_row is None or sketch_row.references_version != row.references_version:
                if sketch_row is not None:
                    session.delete(sketch_row)
                    session.flush()
                sketch_row = ScoreSketchRow(
                    set_id=row.id or 0,
                    references_version=row.references_version,
                    counts=ScoreSketch().to_bytes(),
                )
            sketch = ScoreSketch.from_bytes(sketch_row.counts)
            sketch.add(scores)
            sketch_row.counts = sketch.to_bytes()
            sketch_row.count = sketch.count
            session.add(sketch_row)
            current = self._current_tiers(session, row)
            if (
                current is None
                or current.source != TierSource.SHARES
                or current.basis not in (TierBasis.MODEL_DEFAULT, TierBasis.OBSERVED)
                or sketch.count < shares.min_samples()
                or sketch.count < 2 * sketch_row.fitted_at_count
            ):
                return None
            self._lock_for_change(session, row)
            sketch_row.fitted_at_count = sketch.count
            recorded = self._record_tiers(
                session,
                row,
                NewTiers(
                    source=TierSource.SHARES,
                    basis=TierBasis.OBSERVED,
                    boundaries=fit_shares(sketch, shares),
                    description=f"fitted on {sketch.count} scores observed during crawls",
                    samples=sketch.count,
                    shares=shares,
                ),
            )
            logger.info(
                "set %r: tier boundaries v%d fitted on %d observed scores: %s",
                name,
                recorded.version,
                sketch.count,
                boundaries_of(recorded).ranked(),
            )
            return recorded


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
