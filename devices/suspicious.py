"""Suspicious-device detection: one device, too many client IPs in a budget day.

A session token used from more than ``SUSPICIOUS_IPS_PER_DEVICE_PER_DAY``
distinct client addresses in one budget day has probably leaked. The
request that brings the count *past* the threshold suspends the device
(``device_suspend``, actor "system", with the reason in the audit trail) and
sends a Slack alert; reaching the threshold is still fine. 0 turns the check off.

The distinct addresses of the day are an exact set in the admission store
(``Backend.distinct_add``: one atomic add-and-count, a Lua script in Redis).
The set stops growing at threshold + 1 members: past that the device has
been dealt with, so each device costs at most that much memory a day, and
the trigger fires once a day however many requests race (an operator who
re-approves the device is not overruled the same day). IPv6 addresses count
per /64 (``gateway.core.client_ip.limit_key``), as privacy addresses rotate inside it.

Each process remembers which (device, address, day) it has already reported,
so a device's steady traffic from one address costs no round trip at all.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from datetime import date

from django.conf import settings
from django.db import DatabaseError

from devices.errors import InvalidTransition
from devices.models import Device
from devices.services import device_suspend
from devices.signals import device_auto_suspended
from gateway.core import clock
from gateway.core.client_ip import limit_key
from gateway.core.db import run_sync
from gateway.core.errors import ServiceUnavailable
from gateway.core.lifecycle import spawn
from gateway.core.store import StoreUnavailable
from usage.backends import get_backend
from usage.backends.base import device_ips_key
from usage.days import budget_day, next_day_start

logger = logging.getLogger(__name__)

SUSPEND_HOURS = 24
REMEMBERED_SIGHTINGS = 50_000

_lock = threading.Lock()
_sightings: OrderedDict[tuple[str, str, date], None] = OrderedDict()


def clear_cache() -> None:
    """Forget this process's sightings (tests)."""
    with _lock:
        _sightings.clear()


async def note_device_ip(device_id: str, ip: str) -> None:
    """Count ``ip`` for ``device_id`` today; suspend the device when it goes past the limit.

    It never raises: a store or database outage is logged and the request goes on.
    """
    sighting = _new_sighting(device_id, ip)
    if sighting is not None:
        await _count(device_id, ip, *sighting)


def note_device_ip_soon(device_id: str, ip: str) -> None:
    """``note_device_ip`` beside the request, for every authenticated request.

    Only a pair this process has not counted today starts a task (and may
    cost a store round trip); the usual request, from a known address,
    costs a dictionary lookup.
    """
    sighting = _new_sighting(device_id, ip)
    if sighting is not None:
        spawn(_count(device_id, ip, *sighting))


def _new_sighting(device_id: str, ip: str) -> tuple[str, date, float, int] | None:
    """(address, day, now, threshold) when this pair must be counted, else None."""
    threshold = settings.SUSPICIOUS_IPS_PER_DEVICE_PER_DAY
    if threshold <= 0:
        return None
    now = clock.now()
    day = budget_day(now)
    address = limit_key(ip)
    if _seen_before(device_id, address, day):
        return None
    return address, day, now, threshold


async def _count(
    device_id: str, ip: str, address: str, day: date, now: float, threshold: int
) -> None:
    try:
        count = await _add(device_id, address, day, threshold, now)
    except StoreUnavailable:
        logger.error("suspicious-device check skipped: the shared store did not answer")
        return
    _remember(device_id, address, day)
    if count == threshold + 1:
        await _suspend(device_id, address, day, threshold, ip=ip)


def _seen_before(device_id: str, address: str, day: date) -> bool:
    with _lock:
        key = (device_id, address, day)
        if key in _sightings:
            _sightings.move_to_end(key)
            return True
        return False


def _remember(device_id: str, address: str, day: date) -> None:
    with _lock:
        _sightings[(device_id, address, day)] = None
        while len(_sightings) > REMEMBERED_SIGHTINGS:
            _sightings.popitem(last=False)


async def _add(device_id: str, address: str, day: date, threshold: int, now: float) -> int:
    # The set outlives its day by an hour, for requests admitted at midnight.
    ttl = next_day_start(now) - now + 3600
    key = device_ips_key(device_id, day.isoformat())
    return await get_backend().distinct_add(key, address, cap=threshold, now=now, ttl_seconds=ttl)


async def _forget(device_id: str, address: str, day: date) -> None:
    """Undo one count, so that the next new address triggers again."""
    with _lock:
        _sightings.pop((device_id, address, day), None)
    try:
        await get_backend().distinct_remove(device_ips_key(device_id, day.isoformat()), address)
    except StoreUnavailable:
        logger.error("could not undo the count of device %s after a failed suspension", device_id)


async def _suspend(device_id: str, address: str, day: date, threshold: int, *, ip: str) -> None:
    reason = (
        f"used from more than {threshold} client IPs in budget day {day.isoformat()} "
        "(its token may have leaked)"
    )
    try:
        device = await run_sync(_suspend_approved_device, device_id, reason, ip)
    except (ServiceUnavailable, DatabaseError):
        logger.error(
            "could not suspend suspicious device %s; will retry on its next new IP", device_id
        )
        await _forget(device_id, address, day)
        return
    if device is not None:
        logger.warning("device %s auto-suspended: %s", device_id, reason)
        device_auto_suspended.send_robust(sender=Device, device=device, reason=reason)


def _suspend_approved_device(device_id: str, reason: str, ip: str) -> Device | None:
    """Suspend the device if it is approved; None if it is not (nothing to do)."""
    device = Device.objects.filter(pk=device_id).first()
    if device is None or device.effective_status(clock.utcnow()) != Device.Status.APPROVED:
        return None  # an operator's suspension is not shortened, a revoked device stays so
    try:
        return device_suspend(
            device=device, actor="system", ip=ip, hours=SUSPEND_HOURS, reason=reason
        )
    except InvalidTransition:  # changed under us (revoked meanwhile)
        return None
