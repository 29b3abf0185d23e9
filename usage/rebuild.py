"""Counters rebuilt from the ledger when the store lost them.

Redis keeps nothing on disk, and an embedded process starts empty, so the
fast counters can vanish while the ledger (``UsageRecord``) remembers. One
marker key says "the counters are live"; every admission script checks it
and answers ``not_live`` without touching anything when it is missing. The
caller then runs ``ensure_live``:

1. whoever takes the rebuild lock (``SET NX`` with a short TTL) reads the
   ledger — today's spend per device and in total, the last 24 hours of
   requests per device, IP, user and in total, the last minute per device —
   and loads it with one script that also sets the marker;
2. everyone else waits for the marker (polling, with a deadline), then
   admits.

Correct under concurrent first requests and several processes: nothing is
admitted before the marker exists, and the load script refuses to write
when the marker already exists (a slow rebuilder whose lock expired cannot
overwrite counters that are already in use), so counters are loaded once.

Limits of a rebuild (documented in docs/rate-limits.md): requests still in
flight when the data was lost have no record yet, so they are not counted in
the rebuilt windows; their settle counts their cost (see ``settle.lua``).
Records still waiting in a process's spool are not in the ledger yet either.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TypeVar

from asgiref.sync import sync_to_async
from django.db import DatabaseError
from django.db.models import Sum

from gateway.core import clock
from gateway.core.errors import ServiceUnavailable
from gateway.core.money import usd_to_micro
from gateway.core.store import StoreUnavailable, read_versions
from usage.backends.base import Backend, Pause, Snapshot, layer_keys
from usage.days import budget_day
from usage.models import UsageRecord
from usage.windows import BURST_SECONDS, DAY

logger = logging.getLogger(__name__)

# The lock only saves duplicate ledger queries (the load script's marker check
# is what keeps the rebuild single); a short TTL lets another process take
# over quickly if the holder dies mid-rebuild.
REBUILD_LOCK_SECONDS = 10.0
WAIT_SECONDS = 15.0
# A store that keeps losing its data between rebuilds is unavailable.
ATTEMPTS = 3

T = TypeVar("T")

PauseSource = Callable[[], Pause | None]
_pause_source: PauseSource | None = None
performed = 0  # rebuilds loaded by this process (tests and metrics)


def set_pause_source(source: PauseSource | None) -> None:
    """Register billing's reader of the operator pause kept in the database.

    It is called (synchronously, in a worker thread) when counters are rebuilt,
    and on the in-process backend whenever the store's epoch changes, so a
    pause set by another process is mirrored here.
    """
    global _pause_source
    _pause_source = source


def _micro(amount: Decimal | None) -> int:
    return usd_to_micro(amount or Decimal(0))


def _identity(ip: str) -> str:
    from gateway.core.client_ip import limit_key

    try:
        return limit_key(ip)
    except ValueError:
        return ip  # already a /64 (or not an address): count it as recorded


def ledger_snapshot(now: float, day: date) -> Snapshot:
    """The counters as the ledger knows them at ``now`` (synchronous: ORM)."""
    spec = DAY
    bucket = spec.bucket_of(now)
    since = datetime.fromtimestamp((bucket - spec.buckets + 1) * spec.bucket_seconds, UTC)
    windows: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    logs: dict[str, list[tuple[float, str]]] = defaultdict(list)
    rows = UsageRecord.objects.filter(created_at__gte=since).values_list(
        "request_id", "device_id", "ip", "owner", "created_at"
    )
    for request_id, device_id, ip, owner, created_at in rows.iterator(chunk_size=2000):
        at = min(created_at.timestamp(), now)
        for layer, layer_key in layer_keys(device_id, _identity(ip), owner or None).items():
            if layer != "burst":
                windows[layer_key][spec.bucket_of(at)] += 1
            elif at > now - BURST_SECONDS:
                logs[layer_key].append((at, request_id))
    spent = (
        UsageRecord.objects.filter(budget_day=day)
        .values("device_id")
        .annotate(total=Sum("cost_usd"))
        .values_list("device_id", "total")
    )
    device_spent = {device_id: _micro(total) for device_id, total in spent}
    return Snapshot(
        day_spec=spec,
        windows={key: dict(counts) for key, counts in windows.items()},
        logs={key: sorted(entries) for key, entries in logs.items()},
        budget_day=day.isoformat(),
        spent_micro_usd=sum(device_spent.values()),
        device_spent_micro_usd=device_spent,
        pause=_pause_source() if _pause_source is not None else None,
    )


def _loaded(backend: Backend, is_loaded: bool) -> None:
    global performed
    if is_loaded:
        performed += 1
        # Expected once per process start on the in-process store; after a
        # Redis restart it is worth an operator's attention.
        level = logging.WARNING if backend.name == "redis" else logging.INFO
        logger.log(level, "admission counters rebuilt from the usage records")


async def ensure_live(backend: Backend) -> None:
    """Return once the backend's counters are live, rebuilding them if needed."""
    token = secrets.token_hex(8)
    deadline = time.monotonic() + WAIT_SECONDS
    delay = 0.005
    while not await backend.is_live():
        if await backend.take_rebuild_lock(token, REBUILD_LOCK_SECONDS):
            now = clock.now()
            try:
                snapshot = await sync_to_async(ledger_snapshot)(now, budget_day(now))
            except DatabaseError:
                logger.warning("cannot rebuild admission counters: database unavailable")
                raise ServiceUnavailable(retry_after=5) from None
            _loaded(backend, await backend.load(snapshot, token, secrets.token_hex(8)))
            continue
        if time.monotonic() > deadline:
            raise StoreUnavailable()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


def ensure_live_sync(backend: Backend) -> None:
    """``ensure_live`` for synchronous callers (management commands, admin)."""
    token = secrets.token_hex(8)
    deadline = time.monotonic() + WAIT_SECONDS
    delay = 0.005
    while not backend.is_live_sync():
        if backend.take_rebuild_lock_sync(token, REBUILD_LOCK_SECONDS):
            now = clock.now()
            try:
                snapshot = ledger_snapshot(now, budget_day(now))
            except DatabaseError:
                raise ServiceUnavailable(retry_after=5) from None
            _loaded(backend, backend.load_sync(snapshot, token, secrets.token_hex(8)))
            continue
        if time.monotonic() > deadline:
            raise StoreUnavailable()
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


async def until_live(backend: Backend, attempt: Callable[[], Awaitable[T | None]]) -> T:
    """``attempt()`` until it answers: None means "not live", so rebuild and try again.

    Every store operation that checks the live marker goes through here.
    """
    for _ in range(ATTEMPTS):
        result = await attempt()
        if result is not None:
            return result
        await ensure_live(backend)
    raise StoreUnavailable()


def until_live_sync(backend: Backend, attempt: Callable[[], T | None]) -> T:
    """``until_live`` for synchronous callers."""
    for _ in range(ATTEMPTS):
        result = attempt()
        if result is not None:
            return result
        ensure_live_sync(backend)
    raise StoreUnavailable()


_followed_epoch: dict[int, int] = {}


async def follow_operator_pause(backend: Backend) -> None:
    """In-process store: mirror a pause another process wrote to the database.

    A ``pause_service`` run as a separate process cannot reach this process's
    memory; it bumps the store epoch (a file on the embedded profile), and the
    next admission here re-reads the pause from billing's source.
    """
    if _pause_source is None:
        return
    _, epoch = await read_versions("-")
    if _followed_epoch.get(id(backend)) == epoch:
        return
    try:
        pause = await sync_to_async(_pause_source)()
    except DatabaseError:
        return  # keep the pause we have; retried on the next admission
    _followed_epoch[id(backend)] = epoch
    backend.set_pause(pause)  # in process: no I/O, safe on the loop
