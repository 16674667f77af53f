"""Every benchmark in its smoke size: it still runs end to end and prints its figures.

`make bench` runs the same scripts at full size; these runs prove only that the scripts work
(their numbers on a tiny input mean little), so they check the lines, not the values.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT

NUMBER = r"[0-9]+(?:\.[0-9]+)?"

TIERS = ("bronze", "silver", "gold", "platinum", "diamond")
TIER_COUNTS = ", ".join(rf"{name} \d+" for name in ("rejected", *TIERS))

SMOKE_RUNS = {
    "tier_defaults": (
        ["--limit", "80", "--sets", "200"],
        [
            r"\d+ pictures: \d+ photographs in \d+ series \(.*\), \d+ people photos "
            r"\(background only\)",
            r"200 reference sets \(seed 0\) from \d+ series of >= 6 pictures",
            r"pooled z of \d+ background cosines",
            *(rf">= {name} +{NUMBER}% +-?{NUMBER} +{NUMBER} +{NUMBER}" for name in TIERS),
            *(
                rf">= {name} +configured +{NUMBER}% +achieved {NUMBER}% "
                rf"\({NUMBER}%-{NUMBER}%\), mean {NUMBER}%"
                for name in TIERS
            ),
            r"held-out pictures of the reference series \(n=\d+\): rejected [0-9.]+%",
            r"README example: \d+ references of \S+ \(\|c\| [0-9.]+\), \d+ scored "
            r"\(\d+ same series, \d+ other series\)",
            rf"\(a\) paper's fixed bounds 0\.515/0\.525/0\.535/0\.545/0\.555: {TIER_COUNTS}",
            rf"\(b\) defaults t_k x \|c\| = [0-9./]+: {TIER_COUNTS}",
            r"(?m)^defaults: " + " ".join(rf"{name} 0\.[0-9]{{3}}" for name in TIERS) + "$",
        ],
    ),
    "embedder": (
        ["--crawl-images", "12", "--phone-images", "2", "--repeats", "1"],
        [
            rf"\(a\) raw pipeline, batch +\d+: +{NUMBER} images/s",
            rf"\(b\) service, concurrency 16: +{NUMBER} images/s .*ratio \(b\)/\(a\) = {NUMBER}",
        ],
    ),
    "filter": (
        ["--references", "300", "--queries", "64", "--repeats", "1"],
        [
            rf"\(a\) mean of cosines, one BLAS product: +{NUMBER} vectors/s",
            rf"ratio \(b\)/\(a\) = {NUMBER}x",
            rf"ratio \(c\)/\(a\) = {NUMBER}x",
        ],
    ),
    "crawl": (
        ["--images", "60", "--shard-size", "30", "--rounds", "1"],
        [
            r"60 crawl-size JPEGs per round \(distinct scenes\) in shards of 30",
            rf"round 1: \(a\) embedder alone +{NUMBER} images/s, \(b\) crawl ingest until done "
            rf"+{NUMBER} images/s, ratio \(b\)/\(a\) = {NUMBER}",
            rf"CPU per image in \(b\): embedder {NUMBER} ms, filter {NUMBER} ms, "
            rf"dedup {NUMBER} ms, gateway {NUMBER} ms",
            r"peak RSS in \(b\): \d+ MB all services \(embedder \d+ MB, filter \d+ MB, "
            r"dedup \d+ MB, gateway \d+ MB\)",
            r"crawl counts: seen 60 = accepted \d+ \+ rejected \d+ \+ duplicates \d+ "
            r"\+ failed 0 \(adds up\); stored 60",
            rf"median ratio \(b\)/\(a\) over 1 rounds = {NUMBER}",
            rf"\(c\) export: 124 records in {NUMBER} s, {NUMBER} records/s, {NUMBER} MB/s "
            r"\(1 shards, \d+ MB; 124 images stored by the crawls\)",
        ],
    ),
    "dedup": (
        ["--vectors", "2000", "--queries", "20", "--hashes", "5000"],
        [
            rf"pHash within 16 bits, 5000 stored: index {NUMBER} ms/query",
            rf"near-copy +: p50 {NUMBER} ms, p99 {NUMBER} ms \(20/20 found a neighbour\); "
            rf"exact numpy scan in process: p50 {NUMBER} ms",
            rf"no neighbour: p50 {NUMBER} ms, p99 {NUMBER} ms \(0/20 found a neighbour\)",
            rf"insert-if-unique: {NUMBER} inserts/s",
        ],
    ),
    "dedup_quality": (
        ["--photos", "3"],
        [
            r"3 pictures \(gnome-backgrounds 1, palapeli-data 1, scikit-learn 1\)",
            rf"kind grayscale strength - \(n=3\): old recall {NUMBER}, new recall {NUMBER}",
            rf"kind centre crop strength 80% \(n=3\): old recall {NUMBER}, new recall {NUMBER}",
            rf"old overall: recall {NUMBER} precision {NUMBER} at ε {NUMBER}",
            rf"new overall: recall {NUMBER} precision {NUMBER} from cosine {NUMBER}, pixel-checked",
            rf"new hard negatives: false-match rate {NUMBER} \(\d+/12: ",
            rf"ROC embedding cosine: AUC {NUMBER}",
            rf"ROC pHash distance: AUC {NUMBER}",
            rf"ROC pixel check \(new; -1 below the candidate cosine\): AUC {NUMBER}",
            rf"pixel check: local features {NUMBER} ms per image, {NUMBER} ms per candidate",
        ],
    ),
    "dedup_threshold": (
        ["--edits", "1"],
        [
            r"10 to choose the threshold on, 10 held out",
            rf"threshold chosen on the choice half: {NUMBER}",
            rf"configured default \(efficientnet-lite0\) +{NUMBER} +recall\(edits\) {NUMBER}",
        ],
    ),
    "privacy_quality": (
        ["--photos", "1", "--repeat", "1"],
        [
            r"1 people photos \(3 faces, 0 plates\), 1 negatives \(gnome-backgrounds 1\)",
            *(
                rf"{kind} {name}: recall {NUMBER} \(non-hard {NUMBER}\) covered {NUMBER}, "
                rf"precision {NUMBER}, fp/photo {NUMBER}, fp/negative {NUMBER}, {NUMBER} ms"
                for kind, name in (
                    ("faces", "blazeface@640"),
                    ("faces", "blazeface@640/384"),
                    ("faces", "blazeface@1024"),
                    ("faces", "blazeface@640/0.5"),
                    ("faces", "mtcnn@640"),
                    ("faces", "mtcnn@1024"),
                    ("faces", "mtcnn@480"),
                    ("faces", "mtcnn@640/min32"),
                    ("faces", "haar-default@1024"),
                    ("faces", "haar-alt2@1024"),
                    ("faces", r"haar-default\+profile@1024"),
                    ("faces", "skimage-lbp@640"),
                    ("faces", "nudenet-320n@1024"),
                    ("plates", "haar-russian@640"),
                    ("plates", "haar-russian@640/vehicles"),
                    ("plates", "haar-russian@1024"),
                    ("plates", "haar-rus16@1024"),
                )
            ),
            *(
                rf"small faces {name}: 3% \d+/\d+, 4% \d+/\d+, 6% \d+/\d+, 10% \d+/\d+"
                for name in ("blazeface@640", "blazeface@640/384", "mtcnn@640", "mtcnn@640/min32")
            ),
            rf"vehicle share: photos with a plate {NUMBER} and up; of the \d+ others, \d+ at or "
            rf"above {NUMBER} \(plates looked for\), median {NUMBER}",
            rf"cost: encoder {NUMBER} ms, default detectors {NUMBER} ms per image -> pipeline "
            rf"ratio {NUMBER} \(target >= 0.6",
            r"best default faces: \S+",
            r"best default plates: \S+",
        ],
    ),
    "privacy_pipeline": (
        ["--images", "8", "--rounds", "1"],
        [
            r"8 crawl-size JPEGs per round, POST /v1/images until all done, unsafe-content "
            r"model (on|not prepared)",
            rf"round 1: privacy on +{NUMBER} images/s, off +{NUMBER} images/s, ratio on/off = "
            rf"{NUMBER}",
            rf"CPU per image, privacy on: embedder {NUMBER} ms, .*; all {NUMBER} ms",
            rf"median ratio on/off over 1 rounds = {NUMBER} \(target >= 0.6\)",
        ],
    ),
    "pipeline": (
        ["--images", "20", "--rounds", "1"],
        [
            r"20 crawl-size JPEGs per round \(distinct scenes\)",
            rf"round 1: \(a\) embedder alone +{NUMBER} images/s, \(b\) POST /v1/images until "
            rf"all done +{NUMBER} images/s \(\d+% kept unique\), ratio \(b\)/\(a\) = {NUMBER}",
            rf"median ratio \(b\)/\(a\) over 1 rounds = {NUMBER}",
        ],
    ),
}


@pytest.mark.parametrize("script", sorted(SMOKE_RUNS))
def test_benchmark_smoke_run(script: str, models_dir: Path, tmp_path: Path) -> None:
    arguments, expected_lines = SMOKE_RUNS[script]
    env = {
        **os.environ,
        "SEAVL_EMBEDDER_MODELS_DIR": str(models_dir),
        "SEAVL_STORAGE_DIR": str(tmp_path / "objects"),
    }
    finished = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{script}.py"), *arguments],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    print(finished.stdout)
    for pattern in expected_lines:
        assert re.search(pattern, finished.stdout), f"{pattern!r} not in:\n{finished.stdout}"
