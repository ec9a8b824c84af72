# syntax=docker/dockerfile:1
# oaiserver and harvester in one image: `oaiserver serve` by default; compose.yaml also runs
# `oaiserver ingest` and `harvester schedule` from it. Build: docker build -t oai-repository .

# Build stage: the project and its runtime dependencies (with the PostgreSQL driver) in a venv.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/oai
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY oaiserver ./oaiserver
COPY harvester ./harvester
RUN /opt/oai/bin/pip install --no-cache-dir '.[postgres]'

# Run stage: the venv, the seeds and a configuration; no compiler, no pip cache, not root.
FROM python:3.11-slim
RUN useradd --system --user-group --home-dir /srv/oai --create-home --shell /usr/sbin/nologin oai \
 && install -d -o oai -g oai /srv/oai/data
COPY --from=build /opt/oai /opt/oai
COPY seeds /srv/oai/seeds
COPY deploy/config.yaml /etc/oaiserver/config.yaml
ENV PATH=/opt/oai/bin:$PATH \
    OAI_CONFIG=/etc/oaiserver/config.yaml \
    PYTHONUNBUFFERED=1
WORKDIR /srv/oai
# The SQLite store of the baked configuration (compose uses PostgreSQL instead).
VOLUME /srv/oai/data
USER oai
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["oaiserver", "serve", "--bind", "0.0.0.0:8000"]
