"""Budget days: calendar days in ``BUDGET_TIMEZONE``, read from the gateway clock.

A request belongs to the budget day in which it was admitted; its cost is
attributed to that day even when it settles after midnight.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from django.conf import settings


@lru_cache(maxsize=4)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def budget_day(now: float) -> date:
    """The budget day of the instant ``now`` (epoch seconds)."""
    return datetime.fromtimestamp(now, _zone(settings.BUDGET_TIMEZONE)).date()


def day_start(day: date) -> float:
    """Epoch seconds at which ``day`` begins in ``BUDGET_TIMEZONE``."""
    return _day_start(day, settings.BUDGET_TIMEZONE)


# Every admission asks for the next day's start (the end of an automatic
# pause); it changes once a day, and a zone's rules do not change in a process.
@lru_cache(maxsize=8)
def _day_start(day: date, zone: str) -> float:
    return datetime.combine(day, time(0), tzinfo=_zone(zone)).timestamp()


def day_end(day: date) -> float:
    """Epoch seconds at which the budget day after ``day`` begins."""
    return day_start(day + timedelta(days=1))


def next_day_start(now: float) -> float:
    """Epoch seconds at which the budget day after the one of ``now`` begins."""
    return day_end(budget_day(now))
