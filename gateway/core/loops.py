"""Per-event-loop objects, stamped caches and the process's background tasks.

A lock, a Redis client or a connection pool belongs to the event loop that
made it. A server process runs one loop, but tests (and ``async_to_sync`` in
management commands) run many, so such objects live in a ``PerLoop``: one
per running loop, made on first use and dropped with its loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from asgiref.sync import sync_to_async

T = TypeVar("T")


class PerLoop(Generic[T]):
    """One ``factory()`` per running event loop."""

    __slots__ = ("_factory", "_items")

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        # Keyed by the loop itself, weakly: an id() could be reused by a
        # later loop once the first is gone.
        self._items: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        """The running loop's object (made now if it has none)."""
        loop = asyncio.get_running_loop()
        item = self._items.get(loop)
        if item is None:
            item = self._items[loop] = self._factory()
        return item

    def pop(self) -> T | None:
        """Take the running loop's object away (to close it), if it has one."""
        return self._items.pop(asyncio.get_running_loop(), None)

    def pop_all(self) -> list[T]:
        """Take every loop's object away."""
        items = list(self._items.values())
        self._items.clear()
        return items


class StampedCache(Generic[T]):
    """A value loaded from the database, kept until the store's stamp moves.

    The stamp is what the caller read from the store this request (the
    epoch, which every configuration save bumps). It is read *before* the
    load: a save committed during the load bumps it again, so the next
    request loads again rather than keeping a stale value. Concurrent
    requests on one loop share one load.
    """

    __slots__ = ("_entry", "_load", "_lock")

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._entry: tuple[object, T] | None = None
        self._lock: PerLoop[asyncio.Lock] = PerLoop(asyncio.Lock)

    def peek(self) -> tuple[object, T] | None:
        """(stamp, value) as cached, without loading."""
        return self._entry

    async def get(self, stamp: object) -> T:
        """The value for ``stamp``, loaded (in a thread) unless cached; load errors propagate."""
        entry = self._entry
        if entry is not None and entry[0] == stamp:
            return entry[1]
        async with self._lock.get():
            entry = self._entry
            if entry is not None and entry[0] == stamp:
                return entry[1]
            value = await sync_to_async(self._load)()
            self._entry = (stamp, value)
            return value

    def clear(self) -> None:
        self._entry = None


class BackgroundTask:
    """A named task that runs for the life of the process (a flusher, a housekeeper).

    Started by a start-up hook, cancelled by a shutdown hook; a forked child
    starts its own (a task never crosses ``fork``).
    """

    __slots__ = ("_pid", "_task", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[None] | None = None
        self._pid = 0

    def is_running(self) -> bool:
        return self._pid == os.getpid() and self._task is not None and not self._task.done()

    def start(self, run: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Run ``run()`` in the background unless it is running already; True if started."""
        if self.is_running():
            return False
        self._task = asyncio.get_running_loop().create_task(run(), name=self.name)
        self._pid = os.getpid()
        return True

    async def stop(self) -> None:
        """Cancel the task and wait for it to end."""
        task, self._task = self._task, None
        if task is None or self._pid != os.getpid():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
