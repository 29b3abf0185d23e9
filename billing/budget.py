"""Budget days and the budget's figures, as billing sees them.

A budget day is a calendar day in ``settings.BUDGET_TIMEZONE`` (usage.days,
shared with the admission layer); a request belongs to the day in which it
was admitted. The live spent/reserved counters and the pause flag are kept
by the admission layer's store (usage.limits); the database keeps the pause
(billing.models.PauseState) so it survives a Redis restart, and this module
copies it into the store.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings

from billing.pricing import usd_to_micro
from billing.selectors import pause_state_get
from gateway.core import clock
from usage import limits
from usage.backends.base import Pause

__all__ = [
    "current_spend",
    "daily_budget_micro",
    "mirror_pause_state",
    "stored_pause",
]


def daily_budget_micro() -> int:
    return usd_to_micro(settings.DAILY_BUDGET_USD)


def current_spend() -> tuple[int, int, bool]:
    """(spent_micro, reserved_micro, paused) for the current budget day, from the store."""
    state = limits.budget_state_sync()
    return (state.spent_micro_usd, state.reserved_micro_usd, state.is_paused)


def stored_pause() -> Pause | None:
    """The pause kept in the database, if it is in force now (the store's pause source)."""
    row = pause_state_get()
    now = clock.now()
    if not row.is_active(datetime.fromtimestamp(now, tz=UTC)):
        return None
    return Pause(
        reason=row.reason,
        is_automatic=row.paused_by == AUTO_PAUSE_ACTOR,
        since=row.paused_at.timestamp() if row.paused_at else now,
        until=row.until.timestamp() if row.until else None,
    )


# The actor billing records for the automatic pause (billing.services.budget_auto_pause).
AUTO_PAUSE_ACTOR = "gateway"


def mirror_pause_state() -> None:
    """Copy the database's pause into the store, where every process's admission reads it."""
    pause = stored_pause()
    if pause is None:
        limits.service_resume()
    else:
        limits.service_pause(reason=pause.reason, until=pause.until)
