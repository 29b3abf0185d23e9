"""Objects that belong to one event loop (asyncio locks, connection pools).

A lock or a pool made on one event loop must not be used on another, and the
tests run many loops: such objects are kept per loop, and go with their loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """One ``T`` per running event loop and name, made on first use."""

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, T]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, name: str, make: Callable[[], T]) -> T:
        """The running loop's ``T`` for ``name``, made by ``make`` if it has none yet."""
        loop = asyncio.get_running_loop()
        made = self._by_loop.get(loop)
        if made is None:
            made = self._by_loop[loop] = {}
        value = made.get(name)
        if value is None:
            value = made[name] = make()
        return value

    def pop_running(self) -> dict[str, T]:
        """Forget the running loop's objects; returns them (to close them)."""
        return self._by_loop.pop(asyncio.get_running_loop(), {})
