"""gunicorn's configuration file: gunicorn reads ./gunicorn.conf.py by default.

The worker settings stay on the command line (Dockerfile ``CMD``); this file
adds the cap on connections per worker, one safety setting, and the server
hooks that prometheus-client's multiprocess mode needs (see
gateway/core/metrics.py; each worker records its counters in files named after
its pid in ``PROMETHEUS_MULTIPROC_DIR``, and ``/metrics`` sums them all).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Trust no one's X-Forwarded-For at the server, whatever the worker class
# (uvicorn's workers read this; its default trusts loopback peers and
# rewrites the client address). The gateway reads the forwarded header
# itself, from TRUSTED_PROXIES only (gateway.core.client_ip, gateway.serving).
forwarded_allow_ips = ""

# Connections one worker serves at once (gateway.workers.GatewayWorker makes it
# uvicorn's limit_concurrency); past it the worker answers 503 at once, so
# slow clients cannot pile up in a worker without bound. 1000: the size of
# the worker's provider connection pool (gateway.proxy.upstream.LIMITS), so each
# request it takes can be forwarded at once.
worker_connections = 1000


def _metrics_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def on_starting(server: Any) -> None:
    """Before any worker starts: empty the metrics directory.

    Files left by a previous run (a restart that kept the directory) would be
    summed into this run's counters, or be half-written garbage.
    """
    directory = _metrics_dir()
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        path.unlink(missing_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: drop its live gauges (its counters stay in the sum, as they must)."""
    if _metrics_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
