"""Issue 6 over HTTP: budget alerts reach Slack once per budget day, after real traffic."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from billing.models import AlertLog, PauseState
from tests.acceptance.budget import big, budget_alerts, settled, wait_for_budget_alerts
from tests.acceptance.support import chat, send_all
from tests.fakes.provider import FakeProvider
from tests.fakes.slack import FakeSlack
from tests.proxy.conftest import Gateway
from tests.support.processes import wait_for

pytestmark = pytest.mark.production_only  # the gateways share the budget counters

SPEND = "Spend [[tokens:20000]]"  # about $0.30, really spent


def spend(gateway: Gateway, token: str, times: int) -> None:
    for _ in range(times):
        assert send_all(gateway, [big(token, SPEND)])[0].status == 200


def exhaust(gateway: Gateway, token: str) -> None:
    """About $0.06 on top of $0.90 leaves less than the $0.05 floor: the gateway pauses."""
    last = chat(token, "Spend [[tokens:4000]]", model="openai-gpt-5", max_tokens=6000)
    assert send_all(gateway, [last])[0].status == 200
    wait_for(lambda: PauseState.objects.filter(is_paused=True).exists(), timeout=15, what="pause")


def test_check_budget_sends_the_warning_once_and_never_repeats_the_exhausted_alert(
    budget_gateway: Gateway, paid_token: str, slack: FakeSlack, provider: FakeProvider
) -> None:
    spend(budget_gateway, paid_token, 2)
    settled(2)  # $0.60 of $1.00: past the 50% warning
    call_command("check_budget")
    call_command("check_budget")
    (warning,) = budget_alerts(slack)
    assert warning.startswith(":warning: Budget warning") and "50%" in warning

    spend(budget_gateway, paid_token, 1)
    settled(3)
    exhaust(budget_gateway, paid_token)
    settled(4)
    alerts = wait_for_budget_alerts(slack, 2)
    call_command("check_budget")
    call_command("check_budget")
    assert budget_alerts(slack) == alerts
    assert alerts[1].startswith(":no_entry: Budget exhausted")
    assert all(
        message.authorization == "Bearer xoxb-test-only-token-0000000000"
        for message in slack.messages
    )
    for text in alerts:
        assert not any(secret in text for secret in ("xoxb-", "hzt_", *provider.keys.values()))


def test_an_exhausted_alert_that_slack_failed_is_sent_by_the_next_check_budget(
    budget_gateway: Gateway, paid_token: str, slack: FakeSlack
) -> None:
    spend(budget_gateway, paid_token, 3)
    settled(3)
    slack.fail_with_status(500)
    failures = budget_gateway.logs().count("slack alert failed")
    exhaust(budget_gateway, paid_token)
    settled(4)
    exhausted = AlertLog.objects.filter(kind=AlertLog.Kind.BUDGET_EXHAUSTED)
    # The gateway tried, Slack failed, and the claim was given back for a retry.
    wait_for(
        lambda: (
            budget_gateway.logs().count("slack alert failed") > failures and not exhausted.exists()
        ),
        timeout=15,
        what="the gateway's failed alert",
    )
    assert budget_alerts(slack) == []

    slack.heal()
    call_command("check_budget")
    call_command("check_budget")
    (alert,) = budget_alerts(slack)
    assert alert.startswith(":no_entry: Budget exhausted")
    assert exhausted.count() == 1
