# The embedder on NVIDIA GPUs: onnxruntime-gpu (in the project's embedder group) on the CUDA base
# image it needs. docker build -f deploy/docker/embedder-gpu.Dockerfile -t seavl-embedder:gpu .
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
CMD ["seavl", "serve", "embedder"]
