"""The gunicorn worker class for production: uvicorn, without its proxy-header rewrite.

uvicorn trusts X-Forwarded-For from loopback peers by default and rewrites
the ASGI client address. The gateway decides who the client is itself
(gateway.core.client_ip, against TRUSTED_PROXIES), so the server must pass the real
socket peer through untouched.
"""

from __future__ import annotations

from typing import Any

from uvicorn_worker import UvicornWorker


class GatewayWorker(UvicornWorker):
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop",
        "http": "httptools",
        "proxy_headers": False,
        "lifespan": "on",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # gunicorn's cap on simultaneous clients per worker (worker_connections,
        # set in gunicorn.conf.py), which uvicorn's worker would ignore: past it
        # uvicorn answers 503 at once instead of taking on more.
        self.config.limit_concurrency = self.cfg.worker_connections
