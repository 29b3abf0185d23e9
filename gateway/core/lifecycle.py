"""Process start-up and shutdown hooks, run by the ASGI lifespan protocol.

Long-lived resources (HTTP client pools, Redis clients, the usage spool)
register an async closer here so a graceful shutdown releases them after
in-flight requests have drained.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

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
    # What start-up built (Django, its settings, URL and template machinery,
    # every module) lives as long as the process: keep it out of the cyclic
    # collector's sight. Its full collections walked all of it, stalling
    # every request in flight (docs/benchmarks.md, "gc.freeze"). Collected
    # first, so no garbage is frozen with it.
    gc.collect()
    gc.freeze()


async def run_shutdown() -> None:
    # Background work (settlements, usage records) finishes first, so the
    # hooks after it (the spool's final flush) see everything it wrote.
    await _drain_background()
    # Every hook runs even if one fails: a stuck client must not keep the
    # spool from being flushed.
    for hook in reversed(_shutdown):
        try:
            await hook()
        except Exception:
            logger.exception("shutdown hook %s failed", getattr(hook, "__qualname__", hook))


# --- Background work ---------------------------------------------------------

_background: set[asyncio.Task[Any]] = set()


def spawn(coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run ``coroutine`` to completion even if the caller is cancelled.

    The task is held by reference until done, and shutdown waits for it, so
    settlement and usage records survive a client disconnect.
    """
    task = asyncio.get_running_loop().create_task(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


async def finish(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Await ``coroutine`` shielded from the caller's cancellation (it still completes)."""
    return await asyncio.shield(spawn(coroutine))


async def _drain_background() -> None:
    if _background:
        await asyncio.wait(set(_background), timeout=30)


# --- Work after the response --------------------------------------------------


class _AfterResponse:
    __slots__ = ("coroutines", "is_sent")

    def __init__(self) -> None:
        self.coroutines: list[Coroutine[Any, Any, Any]] = []
        self.is_sent = False


_after_response: contextvars.ContextVar[_AfterResponse | None] = contextvars.ContextVar(
    "after_response", default=None
)


def after_response(coroutine: Coroutine[Any, Any, Any]) -> None:
    """``spawn(coroutine)`` once the current response is sent (at once outside a request).

    For work the client need not wait for (the store's settlement): spawned
    right away it would run before the response goes out, since the event
    loop runs a new task before it resumes the request that created it.
    """
    pending = _after_response.get()
    if pending is None or pending.is_sent:
        spawn(coroutine)
    else:
        pending.coroutines.append(coroutine)


def hold_after_response() -> contextvars.Token[_AfterResponse | None]:
    """Start collecting ``after_response`` work for the request being served."""
    return _after_response.set(_AfterResponse())


def release_after_response(token: contextvars.Token[_AfterResponse | None]) -> None:
    """The response is sent (or failed): spawn what was held, in order."""
    pending = _after_response.get()
    _after_response.reset(token)
    if pending is not None:
        pending.is_sent = True  # tasks that copied the context spawn at once from now on
        for coroutine in pending.coroutines:
            spawn(coroutine)
