"""Issues 3 and 6 over HTTP: the budget and the device's dollar cap hold under concurrency.

The scenario (worst cases of about $0.30 against $1.00, held upstream
answers) is described in ``tests.acceptance.budget``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from pytest_django import Settings

from billing.models import BudgetAuditEvent, PauseState
from tests.acceptance.budget import (
    BUDGET,
    MAX_TOKENS,
    big,
    budget_alerts,
    held_round,
    settled,
    small,
    wait_for_budget_alerts,
)
from tests.acceptance.support import (
    PROCESSES,
    Outcome,
    budget_status,
    chat,
    codes,
    ledger_cost,
    send_all,
    spread,
    usd,
    worst_case,
)
from tests.conftest import TestClock
from tests.devices.support import Registered
from tests.fakes.provider import FakeProvider
from tests.fakes.slack import FakeSlack
from tests.proxy.conftest import Gateway
from tests.support.processes import wait_for
from usage.days import next_day_start
from usage.models import UsageRecord

DEVICE_DAY = django_settings.RATE_LIMITS["paid"]["device_per_day"]  # the gateways' default

pytestmark = pytest.mark.production_only  # budget_status reads the counters the gateways share


def test_simultaneous_reservations_admit_only_what_fits_and_refusals_do_not_pause(
    budget_gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    worst = worst_case(big(paid_token), MAX_TOKENS)
    assert 3 * worst <= BUDGET < 4 * worst

    during, outcomes = held_round(budget_gateway, provider, [big(paid_token)] * 20)
    assert codes(outcomes) == {(200, None): 3, (503, "budget_exceeded"): 17}
    assert {o.headers["retry-after"] for o in outcomes if o.status == 503} == {"5"}
    assert during["reservedUsd"] == usd(3 * worst) and during["spentUsd"] == 0
    assert during["paused"] is False
    # The refusals took no request slot: only the admissions count.
    assert remaining_device(outcomes) == [DEVICE_DAY - 3, DEVICE_DAY - 2, DEVICE_DAY - 1]
    status = settled(3)
    assert 0 < status["spentUsd"] < 0.31 and status["paused"] is False

    # Settled at their real cost (about $0.10 each): what is left admits more.
    spent = round(status["spentUsd"] * 1_000_000)
    fits = (BUDGET - spent) // worst
    assert fits == 2
    during, outcomes = held_round(budget_gateway, provider, [big(paid_token)] * 20)
    assert codes(outcomes) == {(200, None): fits, (503, "budget_exceeded"): 20 - fits}
    assert during["spentUsd"] + during["reservedUsd"] <= 1.0
    assert during["paused"] is False
    assert remaining_device(outcomes) == [DEVICE_DAY - 5, DEVICE_DAY - 4]
    status = settled(3 + fits)
    assert status["spentUsd"] <= 1.0 and status["paused"] is False
    assert not PauseState.objects.filter(is_paused=True).exists()
    assert len(provider.requests) == 3 + fits


def remaining_device(outcomes: list[Outcome]) -> list[int]:
    admitted = (o for o in outcomes if o.status == 200)
    return sorted(int(o.headers["x-ratelimit-remaining-device"]) for o in admitted)


def test_a_devices_daily_dollar_cap_holds_under_simultaneous_requests(
    start_gateway: Callable[..., Gateway],
    provider: FakeProvider,
    make_device: Callable[..., Registered],
    settings: Settings,
    clock: TestClock,
) -> None:
    settings.DAILY_BUDGET_USD = Decimal("50")
    gateway = start_gateway(
        PROCESSES,
        DAILY_BUDGET_USD="50",
        MAX_TOKENS_PAID=str(MAX_TOKENS),
        DEVICE_DAILY_BUDGET_USD_PAID="1.00",
        UPSTREAM_TIMEOUT_SECONDS="30",
    )
    capped = make_device("approved", tier="paid", name="capped")
    other = make_device("approved", tier="paid", name="other").token
    worst = worst_case(big(capped.token), MAX_TOKENS)

    calls = [big(capped.token)] * 20 + [big(other)]
    during, outcomes = held_round(gateway, provider, calls)
    assert codes(outcomes[:20]) == {(200, None): 3, (429, "device_budget_exceeded"): 17}
    assert {o.headers["retry-after"] for o in outcomes[:20] if o.status == 429} == {"5"}
    assert outcomes[20].status == 200  # another device's cap is its own
    assert during["reservedUsd"] == usd(4 * worst) and during["paused"] is False
    settled(4)

    # Settled at about $0.10 each, the capped device may spend what is left of its cap.
    spent = round(_spent_by(capped.device.id) * 1_000_000)
    fits = (BUDGET - spent) // worst
    assert fits == 2
    _during, outcomes = held_round(gateway, provider, [big(capped.token)] * 20)
    assert codes(outcomes) == {(200, None): fits, (429, "device_budget_exceeded"): 20 - fits}
    settled(4 + fits)

    # Spent past the point where a worst case fits even alone: refused until
    # the next budget day, for that device only, and the service goes on.
    assert send_all(gateway, [big(capped.token, "Spend [[tokens:20000]]")])[0].status == 200
    settled(5 + fits)
    sent_at = clock.now()
    (refused,) = send_all(gateway, [big(capped.token, "Hi")])
    assert (refused.status, refused.code) == (429, "device_budget_exceeded")
    assert int(refused.headers["retry-after"]) >= next_day_start(sent_at) - clock.now()
    assert send_all(gateway, [big(other, "Hi")])[0].status == 200
    assert settled(6 + fits)["paused"] is False
    assert _spent_by(capped.device.id) <= Decimal("1.00")


def _spent_by(device_id: str) -> Decimal:
    return ledger_cost(list(UsageRecord.objects.filter(device_id=device_id)))


def assert_paused_until(outcome: Outcome, until: float, sent_at: float, answered_at: float) -> None:
    """503 service_paused, Retry-After reaching the end of the pause (the clock read around it)."""
    assert (outcome.status, outcome.code) == (503, "service_paused")
    retry_after = int(outcome.headers["retry-after"])
    assert until - answered_at <= retry_after <= until - sent_at + 1


def test_a_request_that_cannot_fit_is_refused_and_pauses_nothing(
    budget_gateway: Gateway, provider: FakeProvider, paid_token: str, clock: TestClock
) -> None:
    for _ in range(3):  # about $0.30 each, really spent: $0.90 of $1.00
        (outcome,) = send_all(budget_gateway, [big(paid_token, "Spend [[tokens:20000]]")])
        assert outcome.status == 200
    settled(3)

    # None of these fits, even alone: each is refused until the next budget day...
    sent_at = clock.now()
    outcomes = send_all(budget_gateway, spread([big(paid_token, "Hi")] * 10))
    assert codes(outcomes) == {(503, "budget_exceeded"): 10}
    until = next_day_start(clock.now())
    for outcome in outcomes:
        assert until - clock.now() <= int(outcome.headers["retry-after"]) <= until - sent_at + 1
    # ...and one large request never stops everyone else.
    outcomes = send_all(budget_gateway, spread([small(paid_token)] * PROCESSES))
    assert [o.status for o in outcomes] == [200] * PROCESSES
    assert settled(3 + PROCESSES)["paused"] is False
    assert not PauseState.objects.filter(is_paused=True).exists()


def test_settled_spend_that_leaves_less_than_the_floor_pauses_until_the_next_budget_day(
    budget_gateway: Gateway,
    provider: FakeProvider,
    paid_token: str,
    slack: FakeSlack,
    clock: TestClock,
) -> None:
    for _ in range(3):  # $0.90 of $1.00: $0.10 left, not less than the $0.05 floor
        (outcome,) = send_all(budget_gateway, [big(paid_token, "Spend [[tokens:20000]]")])
        assert outcome.status == 200
    assert settled(3)["paused"] is False
    # About $0.06 more leaves less than the floor: the service pauses itself.
    last = chat(paid_token, "Spend [[tokens:4000]]", model="openai-gpt-5", max_tokens=6000)
    assert send_all(budget_gateway, [last])[0].status == 200
    wait_for(
        lambda: PauseState.objects.filter(is_paused=True).exists(), timeout=15, what="the pause"
    )
    until = next_day_start(clock.now())
    state = PauseState.objects.get()
    assert state.until is not None
    assert state.until.timestamp() == until and state.paused_by == "gateway"
    auto_pauses = BudgetAuditEvent.objects.filter(action=BudgetAuditEvent.Action.AUTO_PAUSE)
    assert auto_pauses.count() == 1
    (alert,) = wait_for_budget_alerts(slack, 1)
    assert "Budget exhausted" in alert and "paused" in alert
    status = settled(4)
    assert status["paused"] is True and status["pauseReason"] == "daily budget exhausted"
    assert 0.95 < status["spentUsd"] <= 1.0

    # Everyone, on every process, small requests included, until the next budget day.
    for server in range(PROCESSES):
        sent_at = clock.now()
        (outcome,) = send_all(budget_gateway, [small(paid_token, server)])
        assert_paused_until(outcome, until, sent_at, clock.now())

    # The operator resumes: what fits is served, and its settlement does not pause again.
    call_command("resume_service")
    assert budget_status()["paused"] is False
    assert [o.status for o in send_all(budget_gateway, [small(paid_token)] * 2)] == [200, 200]
    settled(6)
    assert auto_pauses.count() == 1
    assert send_all(budget_gateway, [big(paid_token, "Hi")])[0].code == "budget_exceeded"

    # The next budget day starts with a whole budget.
    clock.advance(until - clock.now() + 1)
    outcomes = send_all(budget_gateway, spread([big(paid_token, "Hi")] * PROCESSES))
    assert [o.status for o in outcomes] == [200] * PROCESSES
    status = settled(6 + PROCESSES)
    assert status["paused"] is False and status["day"] > alert.split(" for ")[1][:10]
    # The exhausted alert went out once for the day.
    call_command("check_budget")
    assert budget_alerts(slack) == [alert]
    assert all(secret not in alert for secret in ("xoxb-", "hzt_", *provider.keys.values()))
