"""Default tier bounds for the default model, measured on real photographs, for any reference set.

The SEA-VL paper's tiers are fixed cosines for its CLIP encoders (Bronze >= 0.515 ... Diamond
>= 0.555); with EfficientNet-Lite0 every image scores below 0.515, so the numbers do not carry
over. The paper also gives each tier's share of a crawl (CC3M, its Table 5): Bronze 0.40%, Silver
0.23%, Gold 0.13%, Platinum 0.07%, Diamond 0.05%; so from the top, >= Bronze 0.88% ... >= Diamond
0.05%. This script measures, on a background corpus, the cosines that keep those shares.

A set's score is s = x̂ · c, c the mean of its unit references (not re-normalised), so
s = |c| · t with t = x̂ · ĉ, the cosine to the centroid's direction. The defaults are five t_k,
one per tier; a set's bound for tier k is t_k · |c| on its own score scale.

How: `--sets` reference sets are drawn (seeded): a series (one theme, >= 6 pictures), 4..12 of
its pictures as references; the background is every picture of the other series (and the people
photos, which are background only). Per set the background's t are standardised (z = (t - mean)
/ sd); the z of all sets are pooled and cut at the cumulative shares (their tails are heavier
than a normal's, so no normal fit); t_k = median per-set mean + z_k x median per-set sd.

Transfer check: leave one series out (t_k derived without its pictures, anywhere), then on the
sets drawn from it: the share of their background at or above each bound, and the tiers of its
held-out pictures (same series, not references: the "relevant" images).

README example: 12 references of one series, 40 pictures scored (29 of that series, 11 of
others), counted per tier under (a) the paper's fixed bounds and (b) the defaults t_k · |c|.

Pictures: bench/dedup_quality.py's (Debian's picture packages, scikit-learn's samples; `make
photos`) and bench/_people_photos.py's, embedded in process by the default model exactly as the
embedder does (`CurrentMethod.features`).

    .venv/bin/python bench/tier_defaults.py [--sets 3000] [--seed 0] [--limit N]

Prints the corpus, the per-set background statistics, the pooled z per tier, the pasteable line
`defaults: bronze ... diamond ...`, the leave-one-series-out figures and the README example.
About half a minute on 2 CPU cores, most of it reading the pictures out of their packages.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._copies import encode  # noqa: E402
from bench._people_photos import MissingPackageError, people_photos  # noqa: E402
from bench.dedup_quality import (  # noqa: E402
    ORIGINAL_JPEG_QUALITY,
    CurrentMethod,
    crawl_size,
    load_pictures,
)
from services.common.tiers import PAPER_BOUNDARIES, TIER_FIELDS, TierShares  # noqa: E402

TIERS = TIER_FIELDS
# Each tier's share of the crawl in the paper's Table 5 (CC3M); Rejected is the other 99.12%.
TIER_SHARES = tuple(TierShares().per_tier())
# Share of the crawl at or above each tier's lower bound: >= Bronze 0.88% ... >= Diamond 0.05%.
CUMULATIVE_SHARES = tuple(TierShares().at_or_above())
# the paper's fixed cosines (CLIP encoders)
PAPER_BOUNDS = tuple(float(bound or 0) for bound in PAPER_BOUNDARIES.ranked())

PEOPLE_SERIES = "people-photos"  # background only: a mixed set, not one theme
MIN_SERIES_PICTURES = 6
MIN_REFERENCES, MAX_REFERENCES = 4, 12
MIN_HELD_OUT = 2  # pictures of the series kept out of the references, to see where they land
EXAMPLE_REFERENCES, EXAMPLE_SAME, EXAMPLE_OTHER = 12, 29, 11
# 300 sets leave Diamond's t_k +-0.015 from seed to seed (its 0.05% tail is a few dozen pairs);
# 3000 keep every t_k within +-0.003, for a second of arithmetic.
SETS = 3000

Floats = npt.NDArray[np.float64]
Indices = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Corpus:
    """Unit embeddings of every picture and the series (theme) each belongs to."""

    vectors: Floats  # (n, dim), unit rows
    series: npt.NDArray[np.str_]
    reference_series: list[str]  # the series reference sets are drawn from
    model: str


@dataclass(frozen=True)
class ReferenceSet:
    """One drawn set: its references, and every picture's cosine to its centroid's direction."""

    series: str
    references: Indices
    held_out: Indices  # same series, not references
    centroid_norm: float  # |c|
    cosines: Floats  # t = x̂ · ĉ of every picture of the corpus


@dataclass(frozen=True)
class Defaults:
    """t_k and what they were made of."""

    centre: float  # median of the per-set background means
    spread: float  # median of the per-set background standard deviations
    z: Floats  # pooled empirical z at each cumulative share
    bounds: Floats  # t_k = centre + z_k x spread
    pooled: int


def embed_corpus(limit: int | None) -> tuple[Corpus, float, int]:
    """The pictures embedded as the embedder does; returns the corpus, the seconds spent
    embedding, and how many people photos joined (0 when their packages are absent)."""
    pictures = load_pictures(limit)
    images = [picture.image for picture in pictures]
    series = [picture.series for picture in pictures]
    try:
        people = people_photos()
    except MissingPackageError as missing:
        print(f"people photos left out ({missing}; scripts/ensure-people-photos.sh)")
        people = []
    images += [crawl_size(photo.image) for photo in people]
    series += [PEOPLE_SERIES] * len(people)
    method = CurrentMethod()
    began = time.perf_counter()
    vectors = method.features([encode(image, quality=ORIGINAL_JPEG_QUALITY) for image in images])
    seconds = time.perf_counter() - began
    units = vectors.vectors.astype(np.float64)
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    counts = Counter(series)
    eligible = sorted(
        name
        for name, count in counts.items()
        if count >= MIN_SERIES_PICTURES and name != PEOPLE_SERIES
    )
    corpus = Corpus(units, np.array(series), eligible, method.model_name)
    return corpus, seconds, len(people)


def make_set(corpus: Corpus, series: str, references: Indices, held_out: Indices) -> ReferenceSet:
    centroid = corpus.vectors[references].mean(axis=0)
    norm = float(np.linalg.norm(centroid))
    return ReferenceSet(series, references, held_out, norm, corpus.vectors @ (centroid / norm))


def draw_sets(corpus: Corpus, count: int, rng: np.random.Generator) -> list[ReferenceSet]:
    """Series drawn uniformly (a big series must not stand for all), then 4..12 references,
    always leaving a few of its pictures out."""
    sets = []
    for _ in range(count):
        series = corpus.reference_series[int(rng.integers(len(corpus.reference_series)))]
        members = np.flatnonzero(corpus.series == series)
        most = min(MAX_REFERENCES, len(members) - MIN_HELD_OUT)
        size = int(rng.integers(MIN_REFERENCES, most + 1))
        chosen = rng.permutation(members)
        sets.append(make_set(corpus, series, chosen[:size], np.sort(chosen[size:])))
    return sets


def background(corpus: Corpus, reference_set: ReferenceSet, without: str | None) -> Floats:
    """t of the pictures of every other series, leaving out the series `without` as well."""
    keep: npt.NDArray[np.bool_] = corpus.series != reference_set.series
    if without is not None:
        keep &= corpus.series != without
    return reference_set.cosines[keep]


def derive(corpus: Corpus, sets: list[ReferenceSet], without: str | None = None) -> Defaults:
    """t_k from the sets not drawn from `without`, none of its pictures in any background."""
    means, sds, pooled = [], [], []
    for reference_set in sets:
        if reference_set.series == without:
            continue
        values = background(corpus, reference_set, without)
        mean, sd = float(values.mean()), float(values.std(ddof=1))
        means.append(mean)
        sds.append(sd)
        pooled.append((values - mean) / sd)
    z_all = np.concatenate(pooled)
    z = np.quantile(z_all, 1.0 - np.array(CUMULATIVE_SHARES))
    centre, spread = float(np.median(means)), float(np.median(sds))
    return Defaults(centre, spread, z, centre + z * spread, len(z_all))


def tier_counts(values: Floats, bounds: Floats) -> npt.NDArray[np.int64]:
    """How many values fall in Rejected, Bronze ... Diamond (a bound is inclusive)."""
    tiers = np.searchsorted(bounds, values, side="right")
    return np.bincount(tiers, minlength=len(bounds) + 1).astype(np.int64)


def shares_at_or_above(values: Floats, bounds: Floats) -> Floats:
    return np.array([float(np.mean(values >= bound)) for bound in bounds])


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def tier_line(counts: npt.NDArray[np.int64], as_share: bool = False) -> str:
    total = max(int(counts.sum()), 1)
    names = ("rejected", *TIERS)
    if as_share:
        return ", ".join(f"{n} {100 * c / total:.1f}%" for n, c in zip(names, counts, strict=True))
    return ", ".join(f"{n} {c}" for n, c in zip(names, counts, strict=True))


def bounds_text(bounds: Floats | tuple[float, ...]) -> str:
    return "/".join(f"{bound:.3f}" for bound in bounds)


def print_corpus(corpus: Corpus, seconds: float, people: int) -> None:
    counts = Counter(str(name) for name in corpus.series)
    themed = sum(count for name, count in counts.items() if name != PEOPLE_SERIES)
    listing = ", ".join(f"{n} {c}" for n, c in sorted(counts.items()) if n != PEOPLE_SERIES)
    print(
        f"{len(corpus.series)} pictures: {themed} photographs in {len(counts) - (people > 0)} "
        f"series ({listing}), {people} people photos (background only)"
    )
    print(
        f"model {corpus.model}, {corpus.vectors.shape[1]}-d, embedded in process in {seconds:.1f} s"
    )


def print_derivation(corpus: Corpus, sets: list[ReferenceSet], defaults: Defaults) -> None:
    means = np.array([background(corpus, s, None).mean() for s in sets])
    sds = np.array([background(corpus, s, None).std(ddof=1) for s in sets])
    sizes = [len(background(corpus, s, None)) for s in sets]
    norms = np.array([s.centroid_norm for s in sets])
    p10, p90 = np.quantile(means, [0.1, 0.9])
    s10, s90 = np.quantile(sds, [0.1, 0.9])
    n10, n90 = np.quantile(norms, [0.1, 0.9])
    print(
        f"background t = x̂·ĉ per set: mean median {defaults.centre:.3f} (p10 {p10:.3f}, "
        f"p90 {p90:.3f}), sd median {defaults.spread:.3f} (p10 {s10:.3f}, p90 {s90:.3f}); "
        f"|c| median {np.median(norms):.3f} (p10 {n10:.3f}, p90 {n90:.3f})"
    )
    print(
        f"pooled z of {defaults.pooled} background cosines ({int(np.median(sizes))} per set), "
        "cut at the paper's cumulative shares:"
    )
    print("  tier          share  z pooled  z normal  t_k")
    for k, name in enumerate(TIERS):
        normal = NormalDist().inv_cdf(1.0 - CUMULATIVE_SHARES[k])
        print(
            f"  >= {name:9s} {percent(CUMULATIVE_SHARES[k]):>6s}  {defaults.z[k]:8.2f}  "
            f"{normal:8.2f}  {defaults.bounds[k]:.3f}"
        )
    print(
        "defaults: " + " ".join(f"{n} {b:.3f}" for n, b in zip(TIERS, defaults.bounds, strict=True))
    )
    print("(a set's bound for tier k on its scores s = x̂·c: t_k x |c|)")


def print_transfer(corpus: Corpus, sets: list[ReferenceSet]) -> None:
    """Each series' sets judged by bounds derived without that series: a new topic, seen by
    bounds that never saw it."""
    achieved: list[Floats] = []
    relevant = np.zeros(len(TIERS) + 1, dtype=np.int64)
    rest = np.zeros(len(TIERS) + 1, dtype=np.int64)
    print("transfer, leave one series out (t_k derived without the series, used on its sets):")
    for series in corpus.reference_series:
        own = [s for s in sets if s.series == series]
        if not own or all(s.series == series for s in sets):
            continue  # no set to test, or none left to derive from
        held = derive(corpus, sets, without=series)
        shares = [shares_at_or_above(background(corpus, s, None), held.bounds) for s in own]
        achieved += shares
        for reference_set in own:
            relevant += tier_counts(reference_set.cosines[reference_set.held_out], held.bounds)
            rest += tier_counts(background(corpus, reference_set, None), held.bounds)
        print(
            f"  {series:20s} {len(own):3d} sets  t_k {bounds_text(held.bounds)}  background "
            f">= bronze {percent(float(np.mean([a[0] for a in shares])))}, "
            f">= diamond {percent(float(np.mean([a[-1] for a in shares])))}"
        )
    if not achieved:
        print("  needs sets of two series at least: raise --sets or --limit")
        return
    table = np.array(achieved)
    print(
        f"  over {len(table)} sets: tier, configured share, achieved share median (p10-p90), mean"
    )
    for k, name in enumerate(TIERS):
        p10, p50, p90 = np.quantile(table[:, k], [0.1, 0.5, 0.9])
        print(
            f"  >= {name:9s} configured {percent(CUMULATIVE_SHARES[k]):>6s}  achieved "
            f"{percent(p50)} ({percent(p10)}-{percent(p90)}), mean {percent(table[:, k].mean())}"
        )
    print(
        f"  held-out pictures of the reference series (n={relevant.sum()}): "
        + tier_line(relevant, True)
    )
    print(f"  background (n={rest.sum()}): {tier_line(rest, True)}")


def print_readme_example(corpus: Corpus, defaults: Defaults, rng: np.random.Generator) -> None:
    """The largest series gives the references; the scores are the service's s = x̂ · c."""
    series = max(corpus.reference_series, key=lambda name: int(np.sum(corpus.series == name)))
    members = rng.permutation(np.flatnonzero(corpus.series == series))
    references = min(EXAMPLE_REFERENCES, len(members) // 2)
    same = members[references : references + EXAMPLE_SAME]
    others = rng.permutation(np.flatnonzero(corpus.series != series))[:EXAMPLE_OTHER]
    centroid = corpus.vectors[members[:references]].mean(axis=0)
    norm = float(np.linalg.norm(centroid))
    scored = np.concatenate([same, others])
    scores = corpus.vectors[scored] @ centroid
    paper = np.array(PAPER_BOUNDS)
    ours = defaults.bounds * norm
    print(
        f"README example: {references} references of {series} (|c| {norm:.3f}), "
        f"{len(scored)} scored ({len(same)} same series, {len(others)} other series), "
        f"scores {scores.min():.3f}..{scores.max():.3f}"
    )
    print(
        f"  (a) paper's fixed bounds {bounds_text(PAPER_BOUNDS)}: "
        + tier_line(tier_counts(scores, paper))
    )
    print(f"  (b) defaults t_k x |c| = {bounds_text(ours)}: {tier_line(tier_counts(scores, ours))}")
    print(
        f"      same series: {tier_line(tier_counts(scores[: len(same)], ours))}; other series: "
        f"{tier_line(tier_counts(scores[len(same) :], ours))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sets", type=int, default=SETS, help="reference sets drawn")
    parser.add_argument("--seed", type=int, default=0, help="the draws of sets and the example")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N pictures")
    args = parser.parse_args()
    if args.sets < 1:
        parser.error("--sets must be at least 1")

    corpus, seconds, people = embed_corpus(args.limit)
    print_corpus(corpus, seconds, people)
    if not corpus.reference_series:
        sys.exit(f"no series has {MIN_SERIES_PICTURES} pictures: raise --limit")
    rng = np.random.default_rng(args.seed)
    sets = draw_sets(corpus, args.sets, rng)
    drawn = Counter(s.series for s in sets)
    print(
        f"{len(sets)} reference sets (seed {args.seed}) from {len(corpus.reference_series)} "
        f"series of >= {MIN_SERIES_PICTURES} pictures ("
        + ", ".join(f"{name} {drawn[name]}" for name in corpus.reference_series)
        + f"), {MIN_REFERENCES}..{MAX_REFERENCES} references each; background: every picture "
        "of another series"
    )
    defaults = derive(corpus, sets)
    print_derivation(corpus, sets, defaults)
    print_transfer(corpus, sets)
    print_readme_example(corpus, defaults, np.random.default_rng(args.seed))


if __name__ == "__main__":
    main()
