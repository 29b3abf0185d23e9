"""Reads of the ledger for stats, reports and the budget.

Every figure is aggregated in the database, one GROUP BY per dimension over
``usage_usagerecord`` filtered by ``budget_day`` (indexes ``usage_day_model``
and ``usage_device_day``). Days whose usage records retention has pruned are
read from their DailyRollup rows instead: a day is *pruned* when retention
sealed it (billing.models.PrunedDay: its rollups were checked against its
records before any was deleted), or when it has rollups but no records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Q, QuerySet, Sum

from billing.models import BudgetAuditEvent, DailyRollup, PauseState, PrunedDay
from billing.pricing import SIX_PLACES, usd_number
from usage.days import budget_day, day_start
from usage.models import UsageRecord

ZERO = Decimal("0.000000")


def pause_state_get() -> PauseState:
    """The pause row (an unpaused default when none was ever written)."""
    state = PauseState.objects.filter(id=PauseState.SINGLETON_ID).first()
    return state if state is not None else PauseState(id=PauseState.SINGLETON_ID)


def auto_paused_on(day: date) -> bool:
    """Whether the gateway paused itself for an exhausted budget during budget ``day``."""
    start = datetime.fromtimestamp(day_start(day), tz=UTC)
    end = datetime.fromtimestamp(day_start(day + timedelta(days=1)), tz=UTC)
    return BudgetAuditEvent.objects.filter(
        action=BudgetAuditEvent.Action.AUTO_PAUSE, created_at__gte=start, created_at__lt=end
    ).exists()


@dataclass
class UsageRow:
    key: Any
    requests: int
    tokens: int
    cost_usd: Decimal

    def json(self, key_name: str) -> dict[str, Any]:
        key = self.key.isoformat() if isinstance(self.key, date) else self.key
        return {
            key_name: key,
            "requests": self.requests,
            "tokens": self.tokens,
            "costUsd": usd_number(self.cost_usd),
        }


def pruned_days(start: date, end: date) -> list[date]:
    """Days in [start, end] read from their rollups: sealed by retention, or without records."""
    sealed = set(
        PrunedDay.objects.filter(budget_day__range=(start, end)).values_list(
            "budget_day", flat=True
        )
    )
    rollup_days = set(
        DailyRollup.objects.filter(budget_day__range=(start, end))
        .exclude(budget_day__in=sealed)
        .values_list("budget_day", flat=True)
        .distinct()
    )
    if not rollup_days:
        return sorted(sealed)
    record_days = set(
        UsageRecord.objects.filter(budget_day__in=rollup_days)
        .values_list("budget_day", flat=True)
        .distinct()
    )
    return sorted(sealed | (rollup_days - record_days))


def _grouped(
    queryset: QuerySet[Any], by: str | None, *, requests: Any, tokens: Any
) -> list[UsageRow]:
    aggregates = {"n": requests, "t": tokens, "c": Sum("cost_usd")}
    if by is None:
        total = queryset.aggregate(**aggregates)
        if not total["n"]:
            return []
        return [UsageRow(None, total["n"], total["t"] or 0, total["c"] or ZERO)]
    rows = queryset.values(by).annotate(**aggregates).order_by()
    return [UsageRow(row[by], row["n"], row["t"] or 0, row["c"] or ZERO) for row in rows]


def usage_groups(
    *,
    start: date,
    end: date,
    by: str | None,
    device_id: str | None = None,
    limit: int | None = None,
    pruned: list[date] | None = None,
) -> list[UsageRow]:
    """Requests, tokens and cost over budget days [start, end], grouped by a field.

    ``by`` is a UsageRecord/DailyRollup field (``budget_day``, ``model``,
    ``provider``, ``tier``, ``device_id``) or None for one total row. Rows
    are sorted by cost (highest first, then key), except by day (ascending);
    ``limit`` keeps the first rows. ``pruned`` saves the query when the
    caller already knows the pruned days.
    """
    if pruned is None:
        pruned = pruned_days(start, end)
    filters = Q(budget_day__range=(start, end))
    if device_id is not None:
        filters &= Q(device_id=device_id)
    records = UsageRecord.objects.filter(filters)
    if pruned:
        # A sealed day's remaining records are being deleted: its rollups count.
        records = records.exclude(budget_day__in=pruned)
    record_aggregates = {
        "requests": Count("id"),
        "tokens": Sum(F("tokens_in") + F("tokens_out")),
    }
    if not pruned and limit is not None and by is not None:
        # Nothing to merge: let the database sort and cut.
        rows = (
            records.values(by)
            .annotate(n=record_aggregates["requests"], t=record_aggregates["tokens"])
            .annotate(c=Sum("cost_usd"))
            .order_by("-c", by)[:limit]
        )
        return [UsageRow(row[by], row["n"], row["t"] or 0, row["c"] or ZERO) for row in rows]
    merged: dict[Any, UsageRow] = {}
    parts = [_grouped(records, by, **record_aggregates)]
    if pruned:
        rollups = DailyRollup.objects.filter(filters & Q(budget_day__in=pruned))
        parts.append(
            _grouped(
                rollups,
                by,
                requests=Sum("requests"),
                tokens=Sum(F("tokens_in") + F("tokens_out")),
            )
        )
    for part in parts:
        for row in part:
            seen = merged.get(row.key)
            if seen is None:
                merged[row.key] = row
            else:
                seen.requests += row.requests
                seen.tokens += row.tokens
                seen.cost_usd += row.cost_usd
    for row in merged.values():
        row.cost_usd = Decimal(row.cost_usd).quantize(SIX_PLACES)
    if by == "budget_day":
        ordered = sorted(merged.values(), key=lambda row: row.key)
    else:
        ordered = sorted(merged.values(), key=lambda row: (-row.cost_usd, str(row.key)))
    return ordered[:limit] if limit is not None else ordered


def _summary(rows: list[UsageRow]) -> dict[str, Any]:
    total = rows[0] if rows else UsageRow(None, 0, 0, ZERO)
    return {
        "requests": total.requests,
        "tokens": total.tokens,
        "costUsd": usd_number(total.cost_usd),
    }


def usage_stats(*, device_id: str, now: float) -> dict[str, Any]:
    """The caller's "today" (budget day), "month" and month "byModel" (SPEC section 2).

    JSON-ready: ``costUsd`` are floats that print exactly to six places.
    ``requests`` counts every usage record, failed ones included; ``tokens``
    is input plus output.
    """
    today = budget_day(now)
    month_start = today.replace(day=1)
    pruned = pruned_days(month_start, today)

    def groups(start: date, by: str | None) -> list[UsageRow]:
        return usage_groups(start=start, end=today, by=by, device_id=device_id, pruned=pruned)

    return {
        "today": _summary(groups(today, None)),
        "month": _summary(groups(month_start, None)),
        "byModel": [row.json("model") for row in groups(month_start, "model")],
    }
