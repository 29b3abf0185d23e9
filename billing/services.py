"""Writes of billing: pause and resume (with their audit trail) and the daily rollup."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

from django.db import transaction
from django.db.models import Count, Sum

from billing import budget
from billing.models import BudgetAuditEvent, DailyRollup, PauseState
from gateway import clock

logger = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.fromtimestamp(clock.now(), tz=UTC)


def _locked_pause_state() -> PauseState:
    PauseState.objects.get_or_create(id=PauseState.SINGLETON_ID)
    return PauseState.objects.select_for_update().get(id=PauseState.SINGLETON_ID)


def _set_pause(
    *,
    action: BudgetAuditEvent.Action,
    reason: str,
    actor: str,
    until: datetime | None,
    ip: str | None,
) -> PauseState:
    now = _now()
    with transaction.atomic():
        state = _locked_pause_state()
        state.is_paused = True
        state.reason = reason
        state.paused_at = now
        state.until = until
        state.paused_by = actor
        state.save()
        BudgetAuditEvent.objects.create(
            action=action, actor=actor, reason=reason, until=until, ip=ip, created_at=now
        )
    budget.mirror_pause_state()
    logger.warning("service paused by %s until %s: %s", actor, until or "resumed", reason)
    return state


def budget_pause(
    *, reason: str, actor: str, until: datetime | None = None, ip: str | None = None
) -> PauseState:
    """Pause the service for everyone (operator action); ``until`` None = until resumed."""
    if not reason.strip():
        raise ValueError("a pause needs a reason")
    return _set_pause(
        action=BudgetAuditEvent.Action.PAUSE, reason=reason, actor=actor, until=until, ip=ip
    )


def budget_auto_pause(*, reason: str, actor: str = "gateway") -> PauseState:
    """The budget is spent: pause until the next budget day begins (SPEC section 2).

    Sending the budget-exhausted alert is the caller's (billing.alerts), so
    this stays a pure state change.
    """
    until = datetime.fromtimestamp(budget.next_budget_day_start(clock.now()), tz=UTC)
    return _set_pause(
        action=BudgetAuditEvent.Action.AUTO_PAUSE, reason=reason, actor=actor, until=until, ip=None
    )


def budget_resume(*, actor: str, ip: str | None = None) -> PauseState:
    """Lift any pause, operator's or automatic; audited even if nothing was paused."""
    now = _now()
    with transaction.atomic():
        state = _locked_pause_state()
        state.is_paused = False
        state.until = None
        state.save()
        BudgetAuditEvent.objects.create(
            action=BudgetAuditEvent.Action.RESUME, actor=actor, ip=ip, created_at=now
        )
    budget.mirror_pause_state()
    logger.warning("service resumed by %s", actor)
    return state


def rollup_day(day: date) -> int:
    """Fold ``day``'s usage records into DailyRollup rows; returns the number of rows.

    Idempotent: the day's rollups are replaced by a fresh fold while records
    exist (late records replayed from a spool are picked up by running it
    again). Once retention has pruned the day's records, the rollups are the
    only copy, so a day without records is left untouched.
    """
    from usage.models import UsageRecord

    groups = (
        UsageRecord.objects.filter(budget_day=day)
        .values("model", "provider", "tier", "device_id")
        .annotate(
            requests=Count("id"),
            tokens_in=Sum("tokens_in"),
            tokens_out=Sum("tokens_out"),
            cost_usd=Sum("cost_usd"),
        )
        .order_by()
    )
    with transaction.atomic():
        rows = [DailyRollup(budget_day=day, **group) for group in groups]
        if not rows:
            return DailyRollup.objects.filter(budget_day=day).count()
        DailyRollup.objects.filter(budget_day=day).delete()
        DailyRollup.objects.bulk_create(rows)
    return len(rows)
