"""Budget days, and the seams the lead connects to the shared-store counters.

A budget day is a calendar day in ``settings.BUDGET_TIMEZONE``; a request
belongs to the day in which it was admitted.

Two functions here are placeholders over the database until the admission
layer (usage/, issue 3) is merged:

* ``current_spend()`` reads the ledger (today's usage records) and reports
  nothing reserved; the lead switches it to the store's spent/reserved
  counters.
* ``mirror_pause_state()`` only bumps the store epoch so every process
  reloads; the lead makes it copy ``PauseState`` into the store.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Sum

from billing.pricing import usd_to_micro
from gateway import clock, store


@lru_cache(maxsize=8)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def budget_zone() -> ZoneInfo:
    return _zone(settings.BUDGET_TIMEZONE)


def budget_day(ts: float) -> date:
    """The budget day containing the instant ``ts`` (epoch seconds)."""
    return datetime.fromtimestamp(ts, tz=budget_zone()).date()


def budget_day_start(day: date) -> float:
    """The instant (epoch seconds) ``day`` begins in the budget time zone.

    If local midnight does not exist (a DST jump at midnight), zoneinfo's
    fold=0 reading places it at the first instant of the day.
    """
    return datetime.combine(day, time(0), tzinfo=budget_zone()).timestamp()


def next_budget_day_start(ts: float) -> float:
    """When the budget day after the one containing ``ts`` begins (epoch seconds)."""
    return budget_day_start(budget_day(ts) + timedelta(days=1))


def daily_budget_micro() -> int:
    return usd_to_micro(settings.DAILY_BUDGET_USD)


def _ledger_spent_micro(day: date) -> int:
    from usage.models import UsageRecord

    total = UsageRecord.objects.filter(budget_day=day).aggregate(total=Sum("cost_usd"))["total"]
    return usd_to_micro(total) if total is not None else 0


def current_spend() -> tuple[int, int, bool]:
    """(spent_micro, reserved_micro, paused) for the current budget day.

    For now spent is the ledger's sum for today and nothing is reserved; the
    lead switches this to the store counters written by the admission layer.
    """
    from billing.selectors import pause_state_get

    now = clock.now()
    paused = pause_state_get().is_active(datetime.fromtimestamp(now, tz=UTC))
    return (_ledger_spent_micro(budget_day(now)), 0, paused)


def mirror_pause_state() -> None:
    """Publish the database's PauseState to every process (the lead wires the store here)."""
    store.bump_epoch()
