# syntax=docker/dockerfile:1
# sdmatlas API image: a build stage makes a virtual environment from the wheels of the
# package registry; the runtime stage is python:slim with that environment only, run
# as an unprivileged user, with a health check on /health.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 NUMBA_CACHE_DIR=/opt/numba-cache
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# the index-map kernels compiled once here (numba's cache), not in every new container
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir '.[s3]' \
    && /opt/venv/bin/python -c "from sdmatlas.serve.tiles.tiling import warm_kernels; warm_kernels()"

FROM python:3.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="sdmatlas" \
      org.opencontainers.image.description="Species distribution maps: prediction, catalog, tiles, OGC services"
RUN groupadd --gid 10001 sdmatlas \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin sdmatlas \
    && mkdir -p /data \
    && chown sdmatlas:sdmatlas /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=10001:10001 /opt/numba-cache /opt/numba-cache
ENV PATH=/opt/venv/bin:$PATH \
    NUMBA_CACHE_DIR=/opt/numba-cache \
    PYTHONUNBUFFERED=1 \
    SDMATLAS_HOST=0.0.0.0 \
    SDMATLAS_PORT=8000 \
    SDMATLAS_DATA_DIR=/data
WORKDIR /app
USER 10001:10001
EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
CMD ["sdmatlas", "serve"]
