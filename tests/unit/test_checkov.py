"""checkov, the infrastructure-as-code scanner, over deploy/k8s as it is applied (rendered, base
and GPU overlay) and over every Dockerfile: no failed check, apart from the few skipped in
.checkov.yaml, each with its reason there (issue 17)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
CHECKOV = ROOT / "var" / "checkov" / "bin" / "checkov"
CONFIG = ROOT / ".checkov.yaml"
DOCKERFILES = [ROOT / "Dockerfile", *sorted((ROOT / "deploy").rglob("*Dockerfile"))]


def checkov(*arguments: str) -> list[dict[str, object]]:
    """The failed checks of a checkov run (its JSON report)."""
    assert CHECKOV.is_file(), f"{CHECKOV} is missing: `make checkov` installs it"
    done = subprocess.run(
        [str(CHECKOV), "--config-file", str(CONFIG), "--output", "json", *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports), done.stdout[-2000:]
    assert sum(r["summary"]["passed"] for r in reports) > 0, done.stdout[-2000:]
    return [check for r in reports for check in r["results"]["failed_checks"]]


def describe(failed: list[dict[str, object]]) -> list[str]:
    return [f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in failed]


def test_the_rendered_manifests_pass_checkov(tmp_path: Path) -> None:
    for overlay in ("base", "overlays/gpu"):
        rendered = render(ROOT / "deploy" / "k8s" / overlay)
        (tmp_path / f"{overlay.replace('/', '-')}.yaml").write_text(yaml.safe_dump_all(rendered))
    failed = checkov("--directory", str(tmp_path), "--framework", "kubernetes")
    assert failed == [], describe(failed)


def test_every_dockerfile_passes_checkov() -> None:
    assert len(DOCKERFILES) == 2
    files = [argument for path in DOCKERFILES for argument in ("--file", str(path))]
    failed = checkov(*files, "--framework", "dockerfile")
    assert failed == [], describe(failed)


def test_each_skipped_check_says_why() -> None:
    skipped = yaml.safe_load(CONFIG.read_text())["skip-check"]
    assert len(skipped) <= 5  # a short list
    lines = CONFIG.read_text().splitlines()
    for check in skipped:
        at = lines.index(f"  - {check}")
        reason = []
        for line in reversed(lines[:at]):
            if not line.strip().startswith("#"):
                break
            reason.append(line)
        assert len(" ".join(reason)) > 60, f"{check} is skipped without its reason"
        assert re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", check)
