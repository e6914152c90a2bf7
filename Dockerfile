# syntax=docker/dockerfile:1
# The digest as a container image (docs/DEPLOYMENT.md, deploy/compose.yaml).
#   docker build -t verdicts-digest .      (or: podman build -t verdicts-digest .)
# One image for every process: the command picks the role
#   serve (the default), worker, schedule, init, check, status, run …
# Configuration: mount a config.toml at /srv/digest/config.toml (DIGEST_CONFIG);
# secrets only as environment variables (DIGEST_SECRET_KEY, DIGEST_DATABASE_URL …).

# --- build: the digest and every dependency as wheels -----------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY digest ./digest
COPY subscribers ./subscribers
COPY templates ./templates
COPY migrations ./migrations
RUN pip wheel --wheel-dir /wheels ".[postgres]"

# --- runtime: a venv from those wheels, no compiler, no pip in the venv -----------
FROM python:3.11-slim AS runtime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    DIGEST_CONFIG=/srv/digest/config.toml
# The wheels are bind-mounted from the build stage for this one step, never copied
# into a layer: the image holds only what was installed.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-index --find-links /wheels \
        "verdicts-digest[postgres]" \
    && groupadd --system --gid 10001 digest \
    && useradd --system --uid 10001 --gid digest --home-dir /srv/digest \
        --no-create-home --shell /usr/sbin/nologin digest \
    && mkdir -p /srv/digest /var/lib/digest \
    && chown digest:digest /srv/digest /var/lib/digest
# SQLite, when used without PostgreSQL: [database] url = "sqlite:////var/lib/digest/digest.db"
VOLUME ["/var/lib/digest"]
WORKDIR /srv/digest
USER digest:digest
EXPOSE 8000
# Liveness of 'digest serve' (GET /healthz); slim has no curl. Roles without a web
# server (worker, schedule) turn it off in compose.yaml.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]
# SIGTERM (docker stop): serve finishes open requests; a worker finishes the
# messages in flight and gives the rest back. Give it the grace time to do so.
STOPSIGNAL SIGTERM
ENTRYPOINT ["digest"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
