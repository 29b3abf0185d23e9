"""Reads for the staff dashboard: one call gathers everything the page shows.

Spend figures come from billing (``current_spend`` for today, the ledger's
``usage_groups`` for history), devices and audit trails from their apps, the
routes' circuit breakers from ``usage.breakers``. Money stays integer
micro-dollars here; templates format it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings

from billing.budget import current_spend, daily_budget_micro
from billing.models import BudgetAuditEvent, PauseState
from billing.pricing import usd_to_micro
from billing.selectors import UsageRow, pause_state_get, usage_groups
from devices.models import AuditEvent, Device
from devices.selectors import device_list
from gateway.core import clock
from gateway.models import ModelRoute
from usage import breakers
from usage.days import budget_day

HISTORY_DAYS = 30
TOP_DEVICES = 10
PENDING_SHOWN = 50
RECENT_EVENTS = 15


@dataclass(frozen=True)
class Spend:
    """Today's budget position, in micro-dollars."""

    day: date
    spent_micro: int
    reserved_micro: int
    budget_micro: int
    warning_percent: int
    is_paused: bool

    @property
    def remaining_micro(self) -> int:
        return max(0, self.budget_micro - self.spent_micro - self.reserved_micro)


@dataclass(frozen=True)
class Amount:
    """One labelled figure of a chart or table."""

    label: str
    cost_micro: int
    requests: int
    tokens: int
    title: str = ""  # a longer description (device name, full date)


@dataclass(frozen=True)
class Event:
    created_at: datetime
    actor: str
    action: str
    subject: str
    ip: str | None


@dataclass(frozen=True)
class RouteHealth:
    """A route's circuit breaker and error rate (the Providers panel)."""

    breaker: breakers.RouteBreaker
    provider: str  # "" for a route no longer enabled

    @property
    def open_until(self) -> datetime | None:
        until = self.breaker.open_until
        return None if until is None else datetime.fromtimestamp(until, tz=UTC)


@dataclass(frozen=True)
class Overview:
    spend: Spend
    pause: PauseState
    pending: list[Device]
    pending_count: int
    by_day: list[Amount]
    by_model: list[Amount]
    top_devices: list[Amount]
    events: list[Event]
    providers: list[RouteHealth]


def dashboard_overview() -> Overview:
    now = clock.now()
    today = budget_day(now)
    pending = device_list(status=Device.Status.PENDING_APPROVAL)
    return Overview(
        spend=spend_today(now),
        pause=pause_state_get(),
        pending=list(pending[:PENDING_SHOWN]),
        pending_count=pending.count(),
        by_day=spend_by_day(today),
        by_model=spend_by_model(today),
        top_devices=top_devices(today),
        events=recent_events(),
        providers=route_health(),
    )


def spend_today(now: float) -> Spend:
    spent, reserved, is_paused = current_spend()
    return Spend(
        day=budget_day(now),
        spent_micro=spent,
        reserved_micro=reserved,
        budget_micro=daily_budget_micro(),
        warning_percent=settings.BUDGET_WARNING_PERCENT,
        is_paused=is_paused,
    )


def route_health() -> list[RouteHealth]:
    """Each enabled route, and any other with attempts in the last hour, by name."""
    providers = {
        route.public_name: route.get_provider_display()
        for route in ModelRoute.objects.filter(is_enabled=True)
    }
    return [
        RouteHealth(breaker, providers.get(breaker.route, ""))
        for breaker in breakers.states_sync(providers)
    ]


def _amount(row: UsageRow, label: str, title: str = "") -> Amount:
    return Amount(
        label=label,
        cost_micro=usd_to_micro(row.cost_usd),
        requests=row.requests,
        tokens=row.tokens,
        title=title,
    )


def spend_by_day(today: date, days: int = HISTORY_DAYS) -> list[Amount]:
    """The last ``days`` budget days, oldest first, days without usage included as zero."""
    start = today - timedelta(days=days - 1)
    rows = {row.key: row for row in usage_groups(start=start, end=today, by="budget_day")}
    amounts = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        row = rows.get(day)
        label = day.strftime("%d")
        title = day.isoformat()
        amounts.append(_amount(row, label, title) if row else Amount(label, 0, 0, 0, title=title))
    return amounts


def spend_by_model(today: date) -> list[Amount]:
    """This calendar month (in budget days) per public model, most expensive first."""
    rows = usage_groups(start=today.replace(day=1), end=today, by="model")
    return [_amount(row, str(row.key)) for row in rows]


def top_devices(today: date, limit: int = TOP_DEVICES) -> list[Amount]:
    """Today's most expensive devices, labelled by name (the id as the title)."""
    rows = usage_groups(start=today, end=today, by="device_id", limit=limit)
    names = dict(Device.objects.filter(pk__in=[row.key for row in rows]).values_list("pk", "name"))
    return [_amount(row, names.get(row.key, row.key), title=str(row.key)) for row in rows]


def recent_events(limit: int = RECENT_EVENTS) -> list[Event]:
    """Device and budget audit events together, newest first."""
    device_events = [
        Event(event.created_at, event.actor, event.action, _device_subject(event), event.ip)
        for event in AuditEvent.objects.select_related("device")[:limit]
    ]
    budget_events = [
        Event(event.created_at, event.actor, event.action, event.reason or "service", event.ip)
        for event in BudgetAuditEvent.objects.order_by("-created_at", "-id")[:limit]
    ]
    merged = sorted(
        device_events + budget_events,
        key=lambda event: event.created_at or datetime.min.replace(tzinfo=UTC),
        reverse=True,
    )
    return merged[:limit]


def _device_subject(event: AuditEvent) -> str:
    detail: dict[str, Any] = event.changes or {}
    reason = detail.get("suspension_reason", {}).get("after") if event.action == "suspend" else None
    subject = f"{event.device.name} ({event.device_id})"
    return f"{subject}: {reason}" if reason else subject
