"""A background task in each gateway process: flush last-seen, record ended suspensions.

Started and stopped by the ASGI lifespan (``gateway.core.lifecycle``); the task
is held by reference and awaited at shutdown, after a final flush.
"""

from __future__ import annotations

import asyncio
import logging

from devices import activity
from devices.services import device_end_expired_suspensions, device_record_activity
from gateway.core.db import run_sync
from gateway.core.errors import ServiceUnavailable
from gateway.core.loops import BackgroundTask

logger = logging.getLogger(__name__)

_task = BackgroundTask("devices-housekeeping")


async def flush_activity() -> None:
    seen = activity.take()
    if not seen:
        return
    try:
        await run_sync(device_record_activity, seen=seen)
    except ServiceUnavailable:
        activity.give_back(seen)
        raise


async def run_once() -> None:
    await flush_activity()
    ended = await run_sync(device_end_expired_suspensions)
    if ended:
        logger.info("recorded the end of %s expired suspension(s)", ended)


async def _loop() -> None:
    while True:
        await asyncio.sleep(activity.FLUSH_SECONDS)
        try:
            await run_once()
        except ServiceUnavailable:
            logger.warning("device housekeeping skipped: database unavailable")
        except Exception:  # a bug here must not stop every later flush
            logger.exception("device housekeeping failed")


async def start() -> None:
    _task.start(_loop)


async def stop() -> None:
    await _task.stop()
    try:
        await flush_activity()
    except ServiceUnavailable:
        logger.warning("last-seen times not saved at shutdown: database unavailable")
