"""This process's heartbeat: what keeps its budget reservations alive.

A reservation lives as long as its request (SPEC section 2), whatever the
client or the provider do: a stalled reader, a slow first token, a stream of
an hour. So it has no deadline of its own; it names the process holding it,
and the process renews one heartbeat for all of them every
``liveness_seconds() / 3`` while it holds any: one store write a few seconds
apart, not a timer per request. Admission writes one too. A process silent
for ``liveness_seconds()`` of real time (a Redis key's PX; the gateway clock,
which tests move, is not a process's life) is dead: the next admission
counts its reservations as spent at their worst case (``purge_dead`` in the
Lua scripts, ``MemoryBackend._purge_dead``), and a late settle corrects them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid

from django.conf import settings

from gateway.core.errors import GatewayError

logger = logging.getLogger(__name__)

BEATS_PER_LIVENESS = 3

_identity: tuple[int, str] | None = None  # (pid, id): a forked child gets its own id
_held = 0
_beating: asyncio.Task[None] | None = None


def process_id() -> str:
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:
        _identity = (pid, f"{pid}-{uuid.uuid4().hex[:12]}")
    return _identity[1]


def liveness_seconds() -> float:
    return float(settings.RESERVATION_LIVENESS_SECONDS)


def hold() -> None:
    """An admitted reservation is held: beat until every held one is released."""
    global _held, _beating
    _held += 1
    loop = asyncio.get_running_loop()
    if _beating is None or _beating.done() or _beating.get_loop() is not loop:
        _beating = loop.create_task(_beat())


def release() -> None:
    """A reservation is settled in the store (or the store no longer knows it)."""
    global _held
    _held = max(0, _held - 1)


def held() -> int:
    return _held


async def _beat() -> None:
    from usage.backends import get_backend

    while _held > 0:
        await asyncio.sleep(liveness_seconds() / BEATS_PER_LIVENESS)
        if _held <= 0:
            return
        try:
            await get_backend().heartbeat(process_id(), liveness_seconds())
        except GatewayError:
            # The store is down: nothing can expire in it either; beat again soon.
            logger.warning("could not write this process's heartbeat")
