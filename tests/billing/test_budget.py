from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from billing import budget
from billing.budget import current_spend
from billing.models import BudgetAuditEvent, PauseState
from billing.selectors import pause_state_get
from billing.services import budget_auto_pause, budget_pause, budget_resume
from gateway.core import store
from tests.billing.factories import create_records
from tests.conftest import TestClock
from tests.support.store import forget_store_counters
from usage import limits
from usage.days import budget_day, day_start, next_day_start


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _epoch() -> int:
    if settings.REDIS_URL:
        return int(store.sync_redis().get(store.EPOCH_KEY) or 0)
    return store._read_file_epoch()


def _run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def test_the_budget_day_follows_the_budget_timezone(settings: Settings) -> None:
    settings.BUDGET_TIMEZONE = "UTC"
    assert budget_day(_ts("2026-11-26T07:59:59+00:00")) == date(2026, 11, 26)
    settings.BUDGET_TIMEZONE = "America/Los_Angeles"
    assert budget_day(_ts("2026-11-26T07:59:59+00:00")) == date(2026, 11, 25)
    assert budget_day(_ts("2026-11-26T08:00:00+00:00")) == date(2026, 11, 26)
    assert next_day_start(_ts("2026-11-26T07:59:59+00:00")) == _ts("2026-11-26T08:00:00+00:00")


def test_a_budget_day_across_a_dst_change_has_its_real_length(settings: Settings) -> None:
    settings.BUDGET_TIMEZONE = "Europe/Berlin"
    noon = _ts("2026-03-29T12:00:00+02:00")  # clocks went forward at 02:00
    assert budget_day(noon) == date(2026, 3, 29)
    assert next_day_start(noon) - day_start(date(2026, 3, 29)) == 23 * 3600
    autumn = _ts("2026-10-25T12:00:00+01:00")
    assert next_day_start(autumn) - day_start(date(2026, 10, 25)) == 25 * 3600


def test_the_next_budget_day_always_starts_after_now_and_within_a_day(settings: Settings) -> None:
    settings.BUDGET_TIMEZONE = "Pacific/Chatham"  # +12:45 / +13:45
    start = _ts("2026-01-01T00:00:00+00:00")
    for hour in range(0, 24 * 400, 7):
        ts = start + hour * 3600 + 123.5
        following = next_day_start(ts)
        assert ts < following <= ts + 25 * 3600
        assert budget_day(following) == budget_day(ts) + timedelta(days=1)
        assert budget_day(following - 0.001) == budget_day(ts)


@pytest.mark.django_db
def test_pausing_keeps_the_state_audits_it_and_tells_every_process(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    before = _epoch()
    with django_capture_on_commit_callbacks(execute=True):
        budget_pause(reason="provider incident", actor="ops:ana", ip="198.51.100.7")
    state = pause_state_get()
    assert state.is_paused and state.reason == "provider incident"
    assert state.until is None and state.paused_by == "ops:ana"
    # The store every process admits through now says paused; on the embedded
    # profile the epoch moved so other processes re-read the database's copy.
    assert limits.budget_state_sync().is_paused
    if not settings.REDIS_URL:
        assert _epoch() > before
    (event,) = BudgetAuditEvent.objects.all()
    assert (event.action, event.actor, event.reason, event.ip) == (
        "pause",
        "ops:ana",
        "provider incident",
        "198.51.100.7",
    )


@pytest.mark.django_db
def test_resuming_lifts_the_pause_and_is_audited(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    budget_pause(reason="maintenance", actor="ops:ana")
    assert limits.budget_state_sync().is_paused
    before = _epoch()
    with django_capture_on_commit_callbacks(execute=True):
        budget_resume(actor="ops:bo")
    assert not pause_state_get().is_paused
    assert not limits.budget_state_sync().is_paused
    if not settings.REDIS_URL:
        assert _epoch() > before
    assert list(BudgetAuditEvent.objects.order_by("id").values_list("action", "actor")) == [
        ("pause", "ops:ana"),
        ("resume", "ops:bo"),
    ]


@pytest.mark.django_db
def test_a_pause_needs_a_reason() -> None:
    with pytest.raises(ValueError):
        budget_pause(reason="  ", actor="ops")
    assert not PauseState.objects.exists()


@pytest.mark.django_db
def test_the_automatic_pause_lasts_until_the_next_budget_day(
    clock: TestClock, settings: Settings
) -> None:
    settings.BUDGET_TIMEZONE = "UTC"
    state = budget_auto_pause(reason="daily budget exhausted")
    day_ends = datetime.fromtimestamp(next_day_start(clock.now()), tz=UTC)
    assert state.until == day_ends
    assert BudgetAuditEvent.objects.get().action == "auto_pause"
    assert current_spend()[2] is True
    clock.advance(day_ends.timestamp() - clock.now() + 1)
    assert current_spend()[2] is False


@pytest.mark.django_db
def test_current_spend_is_rebuilt_from_todays_ledger_when_the_store_is_empty(
    clock: TestClock, settings: Settings
) -> None:
    settings.BUDGET_TIMEZONE = "UTC"
    today = budget_day(clock.now())
    create_records(3, budget_day=today, cost_usd=Decimal("0.125000"))
    create_records(2, budget_day=today - timedelta(days=1), cost_usd=Decimal("9"))
    assert current_spend() == (375_000, 0, False)


@pytest.mark.django_db
def test_budget_status_reports_spend_reservations_and_pause_as_json(
    clock: TestClock, settings: Settings
) -> None:
    settings.BUDGET_TIMEZONE = "UTC"
    settings.DAILY_BUDGET_USD = Decimal("50")
    today = budget_day(clock.now())
    create_records(4, budget_day=today, cost_usd=Decimal("1.000001"))
    call_command("pause_service", "--reason", "too many tokens", stdout=io.StringIO())
    status = json.loads(_run("budget_status", "--format", "json"))
    assert status == {
        "day": today.isoformat(),
        "budgetUsd": 50.0,
        "spentUsd": 4.000004,
        "reservedUsd": 0.0,
        "remainingUsd": 45.999996,
        "paused": True,
        "pauseReason": "too many tokens",
    }
    assert "Paused      yes: too many tokens" in _run("budget_status")


@pytest.mark.django_db
def test_pause_and_resume_commands_change_the_state_and_leave_audit_records() -> None:
    assert "paused" in _run("pause_service", "--reason", "investigating spend")
    assert pause_state_get().is_active(datetime.now(tz=UTC))
    assert "resumed" in _run("resume_service")
    assert not pause_state_get().is_paused
    actions = list(BudgetAuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["pause", "resume"]
    last = BudgetAuditEvent.objects.first()
    assert last is not None and last.actor.startswith("manage.py")
    assert json.loads(_run("budget_status", "--format", "json"))["pauseReason"] is None


@pytest.mark.django_db
@pytest.mark.parametrize("args", [[], ["--reason", "   "], ["--reason", "x" * 501]])
def test_pause_service_refuses_a_missing_or_bad_reason(args: list[str]) -> None:
    with pytest.raises(CommandError):
        call_command("pause_service", *args, stdout=io.StringIO())
    assert not PauseState.objects.exists()


@pytest.mark.django_db
def test_a_pause_survives_the_store_losing_everything() -> None:
    budget_pause(reason="provider incident", actor="ops:ana")
    forget_store_counters()
    state = limits.budget_state_sync()
    assert state.is_paused
    assert state.pause is not None and state.pause.reason == "provider incident"


@pytest.mark.django_db
def test_mirroring_copies_the_database_pause_into_the_store() -> None:
    PauseState.objects.update_or_create(
        id=PauseState.SINGLETON_ID, defaults={"is_paused": True, "reason": "set elsewhere"}
    )
    budget.mirror_pause_state()
    pause = limits.budget_state_sync().pause
    assert pause is not None and pause.reason == "set elsewhere"
    PauseState.objects.filter(id=PauseState.SINGLETON_ID).update(is_paused=False)
    budget.mirror_pause_state()
    assert not limits.budget_state_sync().is_paused
