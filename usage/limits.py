"""Admission: every rate layer, the pause and the budget reservation, atomically.

``admit`` checks, in SPEC's order and in one atomic step of the store (one
Lua script in Redis, one lock in process):

1. the pause (503 ``service_paused``); less than ``BUDGET_PAUSE_REMAINING_USD``
   left after settled spend pauses the service until the next budget day
   (``auto_paused``),
2. the device day, IP day, user day (devices with an owner), device burst
   (per minute) and global day request limits (429, the layer's code),
3. the device's requests in flight (429 ``concurrency_limit_exceeded``),
4. the device's daily dollar cap against the request's worst case (429
   ``device_budget_exceeded``),
5. the global daily budget against it (503 ``budget_exceeded``; it pauses
   nothing),

and takes them all, or nothing when any refuses. ``settle`` then replaces
the reservation with the actual cost, exactly once; a reservation lives as
long as the process holding it (``usage.liveness``). Windows and their
precision: ``usage.windows`` and docs/rate-limits.md.

Money is integer micro-USD. Identities: ``ip`` is ``client_ip.limit_key`` of
the client address; ``user_id`` is the owner exactly as ``UsageRecord.owner``
stores it, so counters rebuilt from the ledger match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.conf import settings
from django.db import transaction

from gateway.core import clock
from gateway.core.money import usd_to_micro
from gateway.core.store import bump_epoch
from usage import liveness
from usage.backends import get_backend
from usage.backends.base import (
    AdmitPlan,
    Backend,
    BudgetFigures,
    Expectation,
    Outcome,
    Pause,
    Reservation,
    Settled,
    SettleTerms,
    layer_keys,
)
from usage.days import budget_day, day_end
from usage.rebuild import follow_operator_pause, set_pause_source, until_live, until_live_sync
from usage.types import LayerName, Refusal, Tier
from usage.windows import BURST_SECONDS, DAY

__all__ = [
    "Admission",
    "AdmissionRequest",
    "BudgetState",
    "Expectation",
    "Layer",
    "Pause",
    "Reservation",
    "StaleView",
    "admit",
    "budget_state",
    "budget_state_sync",
    "layer_state",
    "service_pause",
    "service_resume",
    "set_pause_source",
    "settle",
]

# A refusal caused only by other requests' reservations clears when they
# settle, usually within seconds: say so instead of "come back tomorrow".
IN_FLIGHT_RETRY_SECONDS = 5
CONCURRENCY_RETRY_SECONDS = 1


@dataclass(frozen=True)
class AdmissionRequest:
    request_id: str
    device_id: str
    ip: str  # client_ip.limit_key(client address)
    user_id: str | None  # the device's owner (UsageRecord.owner), None without one
    tier: Tier
    reserve_micro_usd: int  # the request's worst-case cost
    expect: Expectation | None = None  # admit from the caller's cached view (see Expectation)


class StaleView(Exception):
    """The admission's ``expect`` no longer holds: nothing was taken; read the store."""


@dataclass(frozen=True)
class Layer:
    name: LayerName
    limit: int
    remaining: int  # after this request when it was admitted
    reset_at: float  # epoch seconds: when the next counted request leaves the window

    @property
    def window(self) -> str:
        return "1 minute" if self.name == "burst" else "24 hours"


@dataclass(frozen=True)
class Admission:
    admitted: bool
    refused_by: Refusal | None
    auto_paused: bool  # this call paused the service (alert, persist the pause)
    layers: dict[LayerName, Layer]
    reservation: Reservation | None
    retry_after: int | None  # seconds, for every refusal
    pause: Pause | None = None  # the pause that refused it, or the one it caused


@dataclass(frozen=True)
class BudgetState:
    day: date
    budget_micro_usd: int
    spent_micro_usd: int
    reserved_micro_usd: int
    pause: Pause | None

    @property
    def remaining_micro_usd(self) -> int:
        return self.budget_micro_usd - self.spent_micro_usd - self.reserved_micro_usd

    @property
    def is_paused(self) -> bool:
        return self.pause is not None


def micro_usd(amount: Decimal) -> int:
    return usd_to_micro(amount)


def pause_below_micro_usd() -> int:
    """The automatic pause's floor: ``BUDGET_PAUSE_REMAINING_USD`` (1% of the budget unset)."""
    floor = settings.BUDGET_PAUSE_REMAINING_USD
    if floor is None:
        return micro_usd(settings.DAILY_BUDGET_USD) // 100
    return micro_usd(floor)


def _plan(request: AdmissionRequest, *, now: float, is_peek: bool = False) -> AdmitPlan:
    tier, user_id = request.tier, request.user_id
    try:
        tier_limits = settings.RATE_LIMITS[tier]
    except KeyError:
        raise ValueError(f"unknown tier {tier!r}") from None
    limits: dict[LayerName, int] = {
        "device": tier_limits["device_per_day"],
        "ip": tier_limits["ip_per_day"],
        "burst": tier_limits["device_per_minute"],
        "global": settings.RATE_LIMIT_GLOBAL_PER_DAY,
    }
    if user_id is not None:
        limits["user"] = tier_limits["user_per_day"]
    day = budget_day(now)
    return AdmitPlan(
        now=now,
        request_id=request.request_id,
        device_id=request.device_id,
        keys=layer_keys(request.device_id, request.ip, user_id),
        limits=limits,
        day_spec=DAY,
        burst_seconds=BURST_SECONDS,
        budget_day=day.isoformat(),
        budget_micro_usd=micro_usd(settings.DAILY_BUDGET_USD),
        device_cap_micro_usd=micro_usd(settings.DEVICE_DAILY_BUDGET_USD[tier]),
        reserve_micro_usd=request.reserve_micro_usd,
        pause_below_micro_usd=pause_below_micro_usd(),
        concurrency_limit=settings.MAX_CONCURRENT_REQUESTS[tier],
        process_id=liveness.process_id(),
        liveness_seconds=liveness.liveness_seconds(),
        next_day_at=day_end(day),
        is_peek=is_peek,
        expect=request.expect,
    )


def _seconds_until(moment: float, now: float) -> int:
    return max(1, math.ceil(moment - now))


def _layers(plan: AdmitPlan, outcome: Outcome) -> dict[LayerName, Layer]:
    return {
        name: Layer(name, plan.limits[name], max(0, plan.limits[name] - count), reset_at)
        for name, (count, reset_at) in outcome.counts.items()
    }


def _admission(plan: AdmitPlan, outcome: Outcome) -> Admission:
    layers = _layers(plan, outcome)
    if outcome.status == "admitted":
        reservation = Reservation(
            request_id=plan.request_id,
            device_id=plan.device_id,
            budget_day=plan.budget_day,
            amount_micro_usd=plan.reserve_micro_usd,
            process_id=plan.process_id,
            generation=outcome.generation,
            day_ends_at=plan.next_day_at,
            budget_micro_usd=plan.budget_micro_usd,
            pause_below_micro_usd=plan.pause_below_micro_usd,
        )
        return Admission(True, None, False, layers, reservation, None)
    refused_by = outcome.refused_by
    if refused_by == "paused":
        until = outcome.pause.until if outcome.pause and outcome.pause.until else None
        retry_after = _seconds_until(until or plan.next_day_at, plan.now)
    elif refused_by == "device_budget" or refused_by == "budget":
        hard = outcome.is_hard
        retry_after = (
            _seconds_until(plan.next_day_at, plan.now) if hard else IN_FLIGHT_RETRY_SECONDS
        )
    elif refused_by == "concurrency":
        retry_after = CONCURRENCY_RETRY_SECONDS
    else:
        assert refused_by is not None
        retry_after = _seconds_until(layers[refused_by].reset_at, plan.now)
    return Admission(
        False, refused_by, outcome.auto_paused, layers, None, retry_after, outcome.pause
    )


async def _live_backend() -> Backend:
    backend = get_backend()
    if backend.name == "memory":
        await follow_operator_pause(backend)
    return backend


async def admit(request: AdmissionRequest) -> Admission:
    """Check and take every limit and the reservation, all or nothing.

    Raises ``StoreUnavailable`` (503) when the store cannot answer.
    """
    if request.reserve_micro_usd < 0:
        raise ValueError("reserve_micro_usd must not be negative")
    backend = await _live_backend()

    async def attempt() -> Admission | None:
        plan = _plan(request, now=clock.now())
        outcome = await backend.admit(plan)
        if outcome.status == "stale":
            raise StaleView()
        return None if outcome.status == "not_live" else _admission(plan, outcome)

    return await until_live(backend, attempt)


def _settle_terms(reservation: Reservation) -> SettleTerms:
    now = clock.now()
    return SettleTerms(
        now=now,
        budget_micro_usd=reservation.budget_micro_usd,
        pause_below_micro_usd=reservation.pause_below_micro_usd,
        # A late settle of yesterday pauses nothing today.
        next_day_at=reservation.day_ends_at if now < reservation.day_ends_at else None,
    )


async def settle(reservation: Reservation, *, actual_micro_usd: int) -> Settled:
    """Replace the reservation by the actual cost (0 releases it).

    ``is_first`` the first time; False for any later call, concurrent ones
    included. The cost goes to the budget day the request was admitted in.
    A reservation whose process was declared dead already counts as spent at
    its worst case: this replaces that by the actual cost. ``auto_paused``:
    this settlement left less than the floor of today's budget.
    """
    if actual_micro_usd < 0:
        raise ValueError("actual_micro_usd must not be negative")
    backend = get_backend()
    return await until_live(
        backend, lambda: backend.settle(reservation, actual_micro_usd, _settle_terms(reservation))
    )


async def layer_state(
    *, device_id: str, ip: str, user_id: str | None, tier: Tier
) -> dict[LayerName, Layer]:
    """Limit, remaining and reset of each layer, without admitting (usage stats)."""
    backend = await _live_backend()
    request = AdmissionRequest("", device_id, ip, user_id, tier, reserve_micro_usd=0)

    async def attempt() -> dict[LayerName, Layer] | None:
        plan = _plan(request, now=clock.now(), is_peek=True)
        outcome = await backend.admit(plan)
        return None if outcome.status == "not_live" else _layers(plan, outcome)

    return await until_live(backend, attempt)


def _budget(day: date, figures: BudgetFigures) -> BudgetState:
    return BudgetState(
        day=day,
        budget_micro_usd=micro_usd(settings.DAILY_BUDGET_USD),
        spent_micro_usd=figures.spent_micro_usd,
        reserved_micro_usd=figures.reserved_micro_usd,
        pause=figures.pause,
    )


async def budget_state(day: date | None = None) -> BudgetState:
    """Spent, reserved and the pause for a budget day (today by default).

    Spent comes from the fast counters; after a store restart only today's is
    rebuilt from the ledger, so read past days from the ledger (reports do).
    """
    backend = await _live_backend()

    async def attempt() -> BudgetState | None:
        now = clock.now()
        wanted = day or budget_day(now)
        figures = await backend.budget(wanted.isoformat(), now, liveness.liveness_seconds())
        return None if figures is None else _budget(wanted, figures)

    return await until_live(backend, attempt)


def budget_state_sync(day: date | None = None) -> BudgetState:
    """``budget_state`` for synchronous callers (``budget_status``, the dashboard)."""
    backend = get_backend()

    def attempt() -> BudgetState | None:
        now = clock.now()
        wanted = day or budget_day(now)
        figures = backend.budget_sync(wanted.isoformat(), now, liveness.liveness_seconds())
        return None if figures is None else _budget(wanted, figures)

    return until_live_sync(backend, attempt)


def _announce_pause_change(backend: Backend) -> None:
    # Other processes of the in-process profile follow the epoch and re-read
    # billing's copy; with Redis the pause itself is shared.
    if backend.name == "memory":
        transaction.on_commit(bump_epoch)


def service_pause(*, reason: str, until: float | None = None) -> Pause:
    """Pause the service (operator): every admission answers ``service_paused``.

    Billing's ``pause_service`` writes its database copy first, then calls
    this (inside or outside its transaction). ``until`` None = until resumed.
    """
    pause = Pause(reason=reason, is_automatic=False, since=clock.now(), until=until)
    backend = get_backend()
    backend.set_pause(pause)
    _announce_pause_change(backend)
    return pause


def service_resume() -> None:
    """Lift any pause, automatic or not (billing's ``resume_service``)."""
    backend = get_backend()
    backend.set_pause(None)
    _announce_pause_change(backend)
