#!/usr/bin/env bash
# The images' lock files: every package each image installs, pinned with its hashes, resolved
# from pyproject.toml for the platform of the image (not of this machine). Run it after changing
# a dependency in pyproject.toml (`make lock`); tests/unit/test_dependencies.py fails until then.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-.venv/bin/uv}"
PYTHON="${PYTHON:-.venv/bin/python}"
OUT=requirements

# image group, Python and glibc of its base image: python:3.11.11-slim-bookworm (glibc 2.36) for
# the Dockerfile, nvidia/cuda:…-ubuntu24.04 (Python 3.12, glibc 2.39) for the GPU embedder.
compile() {
    local name=$1 group=$2 python=$3 platform=$4
    "$UV" pip compile pyproject.toml --quiet --extra "$group" --generate-hashes \
        --python-version "$python" --python-platform "$platform" \
        --no-config --index-url https://pypi.org/simple \
        --output-file "$OUT/$name.txt"
}

for group in embedder filter dedup captioner gateway; do
    compile "$group" "$group" 3.11 x86_64-manylinux_2_36
done
compile embedder-gpu embedder 3.12 x86_64-manylinux_2_39

# The build backend, so that the project itself installs with --no-build-isolation from pins too.
"$PYTHON" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
    | "$UV" pip compile - --quiet --generate-hashes --python-version 3.11 \
        --python-platform x86_64-manylinux_2_36 --no-config --index-url https://pypi.org/simple \
        --output-file "$OUT/build.txt"

# checkov, the scanner `make test` runs on deploy/, in a venv of its own: for whatever machine
# runs the tests (universal), so with markers instead of one platform.
CHECKOV_VERSION=3.3.30
echo "checkov==$CHECKOV_VERSION" \
    | "$UV" pip compile - --quiet --universal --generate-hashes --python-version 3.11 \
        --no-config --index-url https://pypi.org/simple --output-file "$OUT/tools/checkov.txt"

# What every service image shares, for the Dockerfile's shared layer.
"$PYTHON" scripts/common_lock.py
