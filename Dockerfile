# The RPS prediction service: core + `serve` extra only (no pandas, pyarrow, scikit-learn,
# MLflow or Airflow). Two targets:
#
#   docker build --target registry -t rps-api:dev .   # no model inside: follows the registry's
#                                                     # champion (RPS_MLFLOW_TRACKING_URI)
#   rps deploy build                                  # default target `baked`: fetches the
#   docker build --build-arg MODEL_DIR=model/ -t rps-api:v3 .   # champion into model/ first,
#                                                     # an immutable release (RPS_MODEL_DIR)
#
# BASE_IMAGE must provide `python3` 3.11 with the venv module (python:3.11-slim, or a local
# Debian bookworm rootfs with python3 + python3-venv where no registry is reachable).
# Builder and runtime share the base, so the venv's interpreter path is the same in both.
# Instructions are ordered for the layer cache: the lock, then the source, then the model
# (the only input that changes on a model-only release) come last.
ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------
# Shared base: LightGBM's OpenMP runtime (neither python:3.11-slim nor a minimal Debian ships
# libgomp1) and the unprivileged service user.
FROM ${BASE_IMAGE} AS base
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 rps \
    && useradd --system --uid 10001 --gid rps --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin rps \
    && mkdir -p /app /var/lib/rps \
    && chown rps:rps /var/lib/rps

# ---------------------------------------------------------------------------------------
FROM base AS builder
ARG UV_VERSION=0.13.9
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    UV_SYSTEM_CERTS=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /build
# Dependencies first (this layer is reused until the lock changes): core + serve, from the
# lock with its hashes; no dev group, no pipeline/airflow extras (no Airflow, MLflow, profiler).
COPY pyproject.toml uv.lock README.md ./
RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}" \
    && /opt/uv/bin/uv sync --frozen --no-dev --extra serve --no-install-project
# Then the package itself, non-editable so /build is not needed at run time.
COPY src ./src
RUN /opt/uv/bin/uv sync --frozen --no-dev --extra serve --no-editable \
    && /opt/venv/bin/python -c "import rps.cli, fastapi, uvicorn, lightgbm, prometheus_client" \
    && ! /opt/venv/bin/python -c "import airflow" 2>/dev/null \
    && ! /opt/venv/bin/python -c "import mlflow" 2>/dev/null \
    && ! /opt/venv/bin/python -c "import data_profiling" 2>/dev/null \
    && ! /opt/venv/bin/python -c "import pandas" 2>/dev/null \
    && ! /opt/venv/bin/python -c "import pyarrow" 2>/dev/null \
    && ! /opt/venv/bin/python -c "import sklearn" 2>/dev/null

# ---------------------------------------------------------------------------------------
# registry: no model inside; serves models:/<name>@champion and follows the alias.
FROM base AS registry
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RPS_ENV=production \
    RPS_PROJECT_ROOT=/app \
    RPS_PARAMS_PATH=/app/params.yaml \
    RPS_STATE_DIR=/var/lib/rps \
    RPS_API_HOST=0.0.0.0 \
    RPS_API_PORT=8000
WORKDIR /app
EXPOSE 8000
# Healthy = ready (a model is loaded; /health/live is the liveness probe). urllib from the
# standard library: no curl in the image. The port follows RPS_API_PORT so a container started
# with `--port N` (and RPS_API_PORT=N) stays healthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, sys, urllib.request; port = os.environ.get('RPS_API_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health/ready', timeout=4).status == 200 else 1)"]
CMD ["rps", "serve", "--host", "0.0.0.0", "--port", "8000"]
USER 10001:10001
COPY --from=builder /opt/venv /opt/venv
COPY params.yaml /app/params.yaml
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="rps-api" \
      org.opencontainers.image.description="RPS prediction service (hourly temperature forecasts)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${GIT_SHA}"

# ---------------------------------------------------------------------------------------
# baked (the default target): an immutable release with the bundle inside (RPS_MODEL_DIR).
FROM registry AS baked
ENV RPS_MODEL_DIR=/app/model
# A bundle directory inside the build context (written by `rps deploy fetch-model`, files
# world-readable: they are owned by root in the image and read by the service user).
ARG MODEL_DIR=model/
COPY ${MODEL_DIR} /app/model
ARG MODEL_VERSION=unknown
LABEL io.rps.model.version="${MODEL_VERSION}"
