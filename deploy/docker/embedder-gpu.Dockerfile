# The embedder on NVIDIA GPUs. docker build -f deploy/docker/embedder-gpu.Dockerfile \
#   -t ghcr.io/seavl/embedder:0.1.0-gpu .
# Pinned together: onnxruntime-gpu 1.31.1 (requirements/embedder-gpu.txt, the lock) is built for
# CUDA 13 and cuDNN 9 (its wheel's `cuda` and `cudnn` extras ask for nvidia-cuda-runtime~=13.0
# and nvidia-cudnn-cu13~=9.0), which this base image carries: CUDA 13.0.0 with cuDNN 9 on
# Ubuntu 24.04 (Python 3.12, glibc 2.39, as the lock was compiled for). The node needs an NVIDIA
# driver of the 580 series or later (CUDA 13.0's minimum); deploy/k8s/overlays/gpu selects such
# nodes. Changing one of the three means changing the others (tests/unit/test_deploy.py).
FROM nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DEBIAN_FRONTEND=noninteractive \
    SEAVL_EMBEDDER_RUNTIME__REQUIRE_GPU=true
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
# The embedder's lock for this base image's Python (scripts/lock.sh), then the project alone.
COPY requirements ./requirements
RUN pip install --no-cache-dir --require-hashes \
    -r requirements/embedder-gpu.txt -r requirements/build.txt
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && seavl models prepare --models-dir /app/var/models \
    && useradd --create-home --uid 10001 seavl && chown -R seavl /app/var

USER seavl
EXPOSE 8001
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=6 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/healthz')"]
CMD ["seavl", "serve", "embedder"]
