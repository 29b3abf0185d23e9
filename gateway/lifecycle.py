"""Process start-up and shutdown hooks, run by the ASGI lifespan protocol.

Long-lived resources (HTTP client pools, Redis clients, the usage spool)
register an async closer here so a graceful shutdown releases them after
in-flight requests have drained.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]

_startup: list[Hook] = []
_shutdown: list[Hook] = []


def on_startup(hook: Hook) -> Hook:
    _startup.append(hook)
    return hook


def on_shutdown(hook: Hook) -> Hook:
    _shutdown.append(hook)
    return hook


async def run_startup() -> None:
    for hook in _startup:
        await hook()


async def run_shutdown() -> None:
    # Shutdown runs every hook even if one fails: a stuck client must not keep
    # the spool from being flushed.
    for hook in reversed(_shutdown):
        try:
            await hook()
        except Exception:
            logger.exception("shutdown hook %s failed", getattr(hook, "__qualname__", hook))
