"""The server must hand the application the real socket peer.

The gateway decides who the client is itself (``gateway.core.client_ip``: the socket
peer, or the one header ``TRUSTED_PROXIES`` may set). uvicorn, by default,
rewrites the ASGI client address from ``X-Forwarded-For`` whenever the peer
is loopback (``--proxy-headers``, ``forwarded_allow_ips=127.0.0.1``): behind
nothing at all, every client could then pick its own address, and per-IP
limits, blocks and the admin lockout would fall. The commands the project
ships turn it off (``--no-proxy-headers``, ``gateway.workers.GatewayWorker``,
``forwarded_allow_ips`` in ``gunicorn.conf.py``); a server started any other
way is disarmed here, the first time it calls the application: its
proxy-headers middleware is found on the call stack and made to trust no
one, with a warning. If that cannot be done, the application refuses to run.
"""

from __future__ import annotations

import logging
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

# uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware
_MIDDLEWARE = "ProxyHeadersMiddleware"
_checked = False


class ServerRewritesClients(RuntimeError):
    """The server rewrites client addresses and could not be stopped from doing so."""


def _trusts_someone(hosts: object) -> bool:
    return bool(
        getattr(hosts, "always_trust", True)
        or getattr(hosts, "trusted_hosts", True)
        or getattr(hosts, "trusted_networks", True)
        or getattr(hosts, "trusted_literals", True)
    )


def disarm_proxy_headers(frame: FrameType | None) -> None:
    """Make any proxy-headers middleware calling the application trust no one.

    ``frame`` is the application's caller; the middleware, if the server
    installed one, is a frame or two up. Runs once per process.
    """
    global _checked
    if _checked:
        return
    _checked = True
    while frame is not None:
        middleware: Any = frame.f_locals.get("self")
        if type(middleware).__name__ == _MIDDLEWARE:
            hosts = getattr(middleware, "trusted_hosts", None)
            if hosts is None or not _trusts_someone(hosts):
                return
            try:
                middleware.trusted_hosts = type(hosts)([])
            except Exception as exc:  # an unknown uvicorn: refuse rather than guess
                raise ServerRewritesClients(
                    "the server rewrites client addresses from X-Forwarded-For; "
                    "start it with --no-proxy-headers"
                ) from exc
            if _trusts_someone(middleware.trusted_hosts):
                raise ServerRewritesClients(
                    "the server rewrites client addresses from X-Forwarded-For; "
                    "start it with --no-proxy-headers"
                )
            logger.warning(
                "the server was started with proxy headers on: it would rewrite client "
                "addresses from X-Forwarded-For; turned off (the gateway reads forwarded "
                "headers itself, from TRUSTED_PROXIES only). Start it with --no-proxy-headers."
            )
            return
        frame = frame.f_back


def is_checked() -> bool:
    return _checked


def reset() -> None:
    """Check again on the next call (tests)."""
    global _checked
    _checked = False
