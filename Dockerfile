# syntax=docker/dockerfile:1
#
# Hanzo AI Gateway: production image.
#
#   docker build -t hanzo-ai-gateway .
#
# Two stages: "builder" turns requirements.txt into wheels (it has the
# compilers, in case a pinned package has no wheel for this platform); the
# final image installs those wheels offline and carries no compiler, no pip
# cache and no build tools. Needs BuildKit (the default builder of Docker
# Engine 23+ and of `docker compose build`) for the RUN --mount below.

# --- builder -----------------------------------------------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build
COPY requirements.txt .
RUN pip wheel --wheel-dir /wheels -r requirements.txt

# --- runtime -----------------------------------------------------------------
FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=gateway.settings

# Unprivileged user with a fixed uid/gid, so volume and policy rules
# (runAsUser, file ownership) can name it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /app --shell /usr/sbin/nologin app

# Install the wheels from the builder without copying them into a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,source=requirements.txt,target=/tmp/requirements.txt \
    pip install --no-index --find-links=/wheels -r /tmp/requirements.txt

WORKDIR /app
# Code stays owned by root: the app user can read it but not change it.
COPY . /app

# Static files into STATIC_ROOT (/app/staticfiles), served by WhiteNoise.
# The settings need some SECRET_KEY to import; this throwaway value exists only
# for this one command (never an ENV, so it is not in the image config), and
# setting it keeps the embedded profile from writing a key file into var/.
RUN SECRET_KEY=collectstatic-build-only-not-a-secret \
    python manage.py collectstatic --noinput \
    && mkdir -p /app/var/spool \
    && chown -R 10001:10001 /app/var

# Gunicorn worker processes; override at run time (compose: .env). The
# workers share their Prometheus counters through files in
# PROMETHEUS_MULTIPROC_DIR, which gunicorn.conf.py (read by gunicorn from
# /app) empties when the server starts; compose mounts a tmpfs there.
ENV WEB_CONCURRENCY=2 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/hanzo-metrics

USER 10001:10001

EXPOSE 8000

# Liveness only (/health/ready would mark every replica unhealthy during a
# Redis or database blip). Django validates the Host header on /health, so
# the probe sends the first usable ALLOWED_HOSTS entry rather than
# "127.0.0.1", which an operator may have left out of ALLOWED_HOSTS.
# slim images have no curl: python's urllib does the request.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; hosts = [h.strip().lstrip('.') for h in os.environ.get('ALLOWED_HOSTS', 'localhost').split(',')]; host = next((h for h in hosts if h and h != '*'), 'localhost'); r = u.urlopen(u.Request('http://127.0.0.1:8000/health', headers={'Host': host}), timeout=4); sys.exit(0 if r.status == 200 else 1)"]

# gateway.workers.GatewayWorker: uvicorn-worker's worker (uvicorn.workers is deprecated)
# with uvicorn's proxy-header rewrite off, so the app sees the real socket peer.
# --graceful-timeout 100: a stream may run up to the 90 s upstream timeout,
#   so a SIGTERM lets in-flight streams finish (compose gives 110 s).
# --keep-alive 75: longer than nginx's upstream keepalive_timeout (60 s), so
#   nginx, not gunicorn, closes idle upstream connections.
# --no-control-socket: gunicorn 25.1+ would otherwise try to create a control
#   socket under $HOME (/app), which the app user cannot write.
# --worker-tmp-dir /dev/shm: worker heartbeats on tmpfs, not the overlay fs.
# Connections per worker: worker_connections in gunicorn.conf.py (1000), which
#   the worker class applies as uvicorn's limit_concurrency.
# No --forwarded-allow-ips: the app evaluates X-Forwarded-For itself against
#   TRUSTED_PROXIES. No access log here: the app logs one line per request.
# exec: gunicorn becomes PID 1 and receives docker's SIGTERM directly.
CMD ["sh", "-c", "exec gunicorn gateway.asgi:application --worker-class gateway.workers.GatewayWorker --bind 0.0.0.0:8000 --workers \"${WEB_CONCURRENCY:-2}\" --timeout 120 --graceful-timeout 100 --keep-alive 75 --worker-tmp-dir /dev/shm --no-control-socket --error-logfile -"]
