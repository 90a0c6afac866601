# kisray image: the Ray head (Serve app) and the collector worker node run from it.
#
# Base: python:3.11-slim-bookworm. Same Python minor and Debian release as the development
# machines and CI, so what passes `make test` is what runs here. Ray, asyncpg and polars ship
# manylinux wheels, so no compiler is needed. The rayproject/ray images were not used: they bring
# their own Ray build (we pin ray[serve] in pyproject.toml and would reinstall it anyway) and are
# several times larger.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KISRAY_DATA_DIR=/var/lib/kisray \
    KISRAY_LOG_DIR=/var/log/kisray

# haproxy: in front of the API replicas when KISRAY_REPLICAS > 1 (api/cli/balancer.py).
RUN apt-get update && apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 kisray \
    && mkdir -p /var/lib/kisray /var/log/kisray /app \
    && chown kisray:kisray /var/lib/kisray /var/log/kisray

WORKDIR /app

# Dependencies first, from pyproject.toml alone: source edits then reuse this (large) layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY engine engine
COPY actors actors
COPY api api
COPY sql sql
COPY deploy deploy
# The /demo page's chart library, from the npm registry, checked against its pinned hash.
RUN pip install --no-deps . && python -m api.chart_library && chmod +x deploy/docker/*.sh

USER kisray
# 8000 API (Serve HTTP proxy) · 6379 Ray GCS · 8265 Ray dashboard and job/serve REST API
EXPOSE 8000 6379 8265
ENTRYPOINT ["/app/deploy/docker/head.sh"]
