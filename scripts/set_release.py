"""Sets the registry and tag of a release in the Kubernetes manifests, everywhere they appear:
the base's `images` (each service's newName and newTag) and the GPU overlay's (which names the
base's embedder image, as the base renders it, and tags it `<tag>-gpu`).

    python scripts/set_release.py REGISTRY TAG [--k8s deploy/k8s]
    (make release-manifests REGISTRY=ghcr.io/you TAG=0.2.0, beside make images)
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("embedder", "filter", "dedup", "captioner", "gateway", "worker")


def set_base(text: str, registry: str, tag: str) -> str:
    for service in SERVICES:
        pattern = re.compile(
            rf"(  - name: seavl/{service}\n    newName: )\S+(\n    newTag: )\"[^\"]*\""
        )
        text, found = pattern.subn(rf'\g<1>{registry}/{service}\g<2>"{tag}"', text)
        if found != 1:
            raise SystemExit(f"the base's images have no entry for seavl/{service}")
    return text


def set_gpu(text: str, registry: str, tag: str) -> str:
    pattern = re.compile(r"(images:\n  - name: )\S+(\n    newTag: )\"[^\"]*\"")
    text, found = pattern.subn(rf'\g<1>{registry}/embedder\g<2>"{tag}-gpu"', text)
    if found != 1:
        raise SystemExit("the GPU overlay has no image entry")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("registry", help="e.g. ghcr.io/seavl (the images are REGISTRY/SERVICE)")
    parser.add_argument("tag", help="e.g. 0.2.0 (the GPU embedder's is TAG-gpu)")
    parser.add_argument("--k8s", type=Path, default=ROOT / "deploy" / "k8s")
    args = parser.parse_args()
    registry = args.registry.rstrip("/")
    base = args.k8s / "base" / "kustomization.yaml"
    gpu = args.k8s / "overlays" / "gpu" / "kustomization.yaml"
    base.write_text(set_base(base.read_text(), registry, args.tag))
    gpu.write_text(set_gpu(gpu.read_text(), registry, args.tag))


if __name__ == "__main__":
    main()
