"""Database calls from async code: one thread hop, connection returned, 503 on outage."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection

from gateway.core.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def _closing(function: Callable[[], R]) -> R:
    try:
        return function()
    finally:
        # Outside Django's request cycle (the lean ASGI handler, background
        # tasks) nobody else gives the connection back to the pool. Inside a
        # transaction (a test, a caller's atomic block) it must stay open.
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


async def run_sync(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``function`` in Django's sync thread; a database outage is a 503."""
    try:
        return await sync_to_async(_closing)(partial(function, *args, **kwargs))
    except DatabaseError:
        logger.warning("database unavailable in %s", getattr(function, "__name__", function))
        raise ServiceUnavailable(retry_after=5) from None
