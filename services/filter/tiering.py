"""Which boundaries a set starts on, what ρ is in force, and fits asked for over HTTP: the
filter's rules on top of the pure maths in services/common/tiers.py."""

from __future__ import annotations

import json

import numpy as np

from services.common.errors import ServiceError
from services.common.reference_sets import FitTiersRequest, Label, TierBoundariesOut
from services.common.tiers import (
    Boundaries,
    ScoreSketch,
    TierBasis,
    TierShares,
    TierSource,
    fit_calibrated,
    fit_shares,
)
from services.filter.config import FilterSettings
from services.filter.store import NewTiers, ReferenceStore, TierDefaults, boundaries_of
from services.filter.tables import CalibrationRow, ReferenceSetRow, TierBoundariesRow


def tier_defaults(settings: FilterSettings) -> TierDefaults:
    """A model with shipped `shares` defaults starts on them (scaled to the set's centroid);
    any other on its fixed (`paper`) numbers."""

    def default(model: str, centroid_norm: float) -> NewTiers:
        shares_default = settings.shares_default_for(model)
        if shares_default is not None:
            return NewTiers(
                source=TierSource.SHARES,
                basis=TierBasis.MODEL_DEFAULT,
                boundaries=shares_default.for_centroid_norm(centroid_norm),
                description=f"{model}'s default at the CC3M shares, for a centroid of norm "
                f"{centroid_norm:.4f} ({shares_default.measured_on})",
                shares=TierShares(),
            )
        return NewTiers(
            source=TierSource.PAPER,
            basis=TierBasis.MODEL_DEFAULT,
            boundaries=settings.tiers_for(model).boundaries(),
            description="fixed numbers (the SEA-VL paper's unless configured for the model)",
        )

    return default


def rho_in_force(
    row: ReferenceSetRow, tiers: TierBoundariesRow | None, settings: FilterSettings
) -> tuple[float, str]:
    """ρ and where it comes from: a calibration's, else on `shares` boundaries the Platinum
    bound (the paper kept Platinum and up), else the model's configured ρ."""
    if row.rho is not None:
        return row.rho, "calibration"
    if tiers is not None and tiers.source == TierSource.SHARES and tiers.platinum is not None:
        return tiers.platinum, "platinum boundary"
    return settings.tiers_for(row.model).rho, "model default"


def tiers_out(row: TierBoundariesRow, references_version: int) -> TierBoundariesOut:
    return TierBoundariesOut(
        version=row.version,
        source=TierSource(row.source),
        basis=TierBasis(row.basis),
        boundaries=boundaries_of(row),
        shares=TierShares.model_validate_json(row.shares_json) if row.shares_json else None,
        samples=row.samples,
        description=row.description,
        references_version=row.references_version,
        stale=row.references_version != references_version,
        created_at=row.created_at,
    )


def _shares_fit(body: FitTiersRequest, shares: TierShares, scores: list[float]) -> NewTiers:
    try:
        boundaries = fit_shares(ScoreSketch.of(scores), shares)
    except ValueError as exc:
        raise ServiceError(422, "too_few_scores", str(exc), field="scores") from exc
    return NewTiers(
        source=TierSource.SHARES,
        basis=TierBasis.SAMPLE,
        boundaries=boundaries,
        description=body.description or f"fitted on {len(scores)} background scores",
        samples=len(scores),
        shares=shares,
    )


def _calibration_samples(calibration: CalibrationRow) -> tuple[np.ndarray, list[bool]]:
    if calibration.samples_json is None:
        raise ServiceError(
            409,
            "calibration_without_samples",
            f"calibration {calibration.id} was made before its scores were kept: calibrate again",
            field="calibration_id",
        )
    pairs = json.loads(calibration.samples_json)
    scores = np.array([float(score) for score, _ in pairs], dtype=np.float64)
    return scores, [Label(label) is Label.YES for _, label in pairs]


def fit(
    store: ReferenceStore, name: str, body: FitTiersRequest, settings: FilterSettings
) -> TierBoundariesRow:
    """Records the boundaries asked for as the set's new version."""
    if body.source is TierSource.PAPER:
        return store.record_tiers(
            name,
            lambda row: NewTiers(
                source=TierSource.PAPER,
                basis=TierBasis.SAMPLE,
                boundaries=settings.tiers_for(row.model).boundaries(),
                description=body.description or "fixed numbers chosen by an admin",
            ),
        )
    if body.source is TierSource.SHARES:
        shares = body.shares or settings.tier_shares
        if body.scores is None:
            raise ServiceError(
                422,
                "scores_required",
                "a `shares` fit needs the background sample's `scores` (with the set's "
                "`references_version` they were made at); crawls fit the set as they run",
                field="scores",
            )
        new = _shares_fit(body, shares, body.scores)
        return store.record_tiers(name, lambda row: new, body.references_version)
    if body.calibration_id is None:
        raise ServiceError(
            422, "calibration_required", "a `calibrated` fit names its calibration_id"
        )
    calibration = store.calibration(name, body.calibration_id)
    scores, is_yes = _calibration_samples(calibration)
    targets = body.targets or settings.calibration_targets
    boundaries: Boundaries = fit_calibrated(scores, is_yes, targets)
    if calibration.recommended_rho is None:
        raise ServiceError(
            409, "no_recommendation", "this calibration found no ρ reaching its precision"
        )
    new = NewTiers(
        source=TierSource.CALIBRATED,
        basis=TierBasis.LABELS,
        boundaries=boundaries,
        description=body.description
        or f"calibration {calibration.id}: {calibration.samples} labelled samples",
        samples=calibration.samples,
    )
    return store.record_tiers(
        name, lambda row: new, calibration.references_version, calibration_id=calibration.id
    )
