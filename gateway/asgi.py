"""ASGI entry point: ``gateway.asgi:application``.

Django serves everything except the hot path, which DESIGN.md routes to a
lean ASGI handler ahead of Django's (registered in ``LEAN_ROUTES``). In
front of both, every request body is read through ``gateway.proxy.bodies`` (its
size and time limits). The router also speaks the lifespan protocol, which
Django's handler does not, so start-up and graceful shutdown hooks run under
uvicorn and gunicorn.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

django_application = get_asgi_application()

from gateway import serving  # noqa: E402  (needs Django set up)
from gateway.core import lifecycle  # noqa: E402
from gateway.proxy.bodies import bound_bodies  # noqa: E402
from gateway.proxy.endpoints import (  # noqa: E402
    chat_completions,
    embeddings,
    messages,
    models,
)
from gateway.proxy.metrics_endpoint import metrics_endpoint  # noqa: E402

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# path -> lean handler; each handler answers every method on its path.
LEAN_ROUTES: dict[str, ASGIApp] = {
    "/v1/chat/completions": chat_completions,
    "/v1/embeddings": embeddings,
    "/v1/messages": messages,
    "/v1/models": models,
    "/metrics": metrics_endpoint,
}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await lifecycle.run_startup()
            except Exception as exc:  # report to the server, which refuses to start
                await send({"type": "lifespan.startup.failed", "message": type(exc).__name__})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await lifecycle.run_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _route(scope: Scope, receive: Receive, send: Send) -> None:
    await LEAN_ROUTES.get(scope["path"], django_application)(scope, receive, send)


_http = bound_bodies(_route)


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if not serving.is_checked():
        # Once per process, on the first call (lifespan or request).
        serving.disarm_proxy_headers(sys._getframe(1))
    if scope["type"] == "http":
        await _http(scope, receive, send)
        return
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await django_application(scope, receive, send)
