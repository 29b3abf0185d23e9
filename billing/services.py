"""Writes of billing: pause and resume (with their audit trail), the daily rollup, retention."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import Count, Sum

from billing import budget
from billing.models import BudgetAuditEvent, DailyRollup, PauseState, PrunedDay
from gateway.core import clock
from usage.days import next_day_start

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
    until = datetime.fromtimestamp(next_day_start(clock.now()), tz=UTC)
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

    if PrunedDay.objects.filter(budget_day=day).exists():
        # Handed to retention: the rollups are the ledger; records still
        # there are about to be deleted and must not replace them.
        return DailyRollup.objects.filter(budget_day=day).count()
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


# --- Retention ---------------------------------------------------------------


class LedgerMismatch(Exception):
    """A day's rollups do not add up to its records (a record arrived while folding)."""


@dataclass(frozen=True)
class PruneResult:
    days: list[date]
    records: int


def usage_day_seal(*, day: date) -> PrunedDay:
    """Fold ``day`` and make its rollups its ledger of record; idempotent.

    The rollups are checked against the records (count and cost) in the
    same transaction before the seal is written: from then on reports read
    the day from its rollups only, so deleting its records changes no total.
    A record written for a sealed day later would be ignored by reports and
    deleted; retention only seals days far older than any spool replays.
    """
    from usage.models import UsageRecord

    with transaction.atomic():
        sealed = PrunedDay.objects.filter(budget_day=day).first()
        if sealed is not None:
            return sealed
        rollup_day(day)
        records = UsageRecord.objects.filter(budget_day=day).aggregate(
            n=Count("id"), c=Sum("cost_usd")
        )
        rollups = DailyRollup.objects.filter(budget_day=day).aggregate(
            n=Sum("requests"), c=Sum("cost_usd")
        )
        zero = Decimal("0")
        if (records["n"], records["c"] or zero) != (rollups["n"] or 0, rollups["c"] or zero):
            raise LedgerMismatch(f"rollups of {day.isoformat()} do not match its records")
        return PrunedDay.objects.create(
            budget_day=day,
            requests=records["n"],
            cost_usd=records["c"] or zero,
            sealed_at=_now(),
        )


def usage_prune(*, before: date, batch_size: int) -> PruneResult:
    """Delete the usage records of budget days before ``before``, a day at a time.

    Each day is sealed first (``usage_day_seal``), then its records go in
    batches of ``batch_size``, each batch its own short transaction, so the
    table is never locked for long. Safe to re-run after a stop at any point:
    a sealed day whose records remain is simply finished.
    """
    from usage.models import UsageRecord

    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    days: list[date] = []
    deleted = 0
    old = UsageRecord.objects.filter(budget_day__lt=before).order_by("budget_day")
    while (day := old.values_list("budget_day", flat=True).first()) is not None:
        usage_day_seal(day=day)
        while ids := list(
            UsageRecord.objects.filter(budget_day=day).values_list("id", flat=True)[:batch_size]
        ):
            deleted += UsageRecord.objects.filter(id__in=ids).delete()[0]
        days.append(day)
        logger.info("retention: pruned the usage records of %s", day.isoformat())
    return PruneResult(days=days, records=deleted)
