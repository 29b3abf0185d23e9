from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client
from pytest_django import Settings

from billing import alerts
from billing.models import AlertLog
from billing.services import budget_auto_pause
from gateway.core import lifecycle
from tests.billing.factories import create_records
from tests.conftest import TestClock, gateway_environment
from tests.fakes.slack import FakeSlack
from tests.support.processes import python_child
from tests.support.store import forget_store_counters
from usage import breakers
from usage.days import budget_day

SESSION_TOKEN = "hzt_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v"
PROVIDER_KEY = "sk-proj-" + "Zx9" * 16
TOKEN_HASH = "ab12" * 16
SECRET_SHAPES = re.compile(r"hzt_|sk-|xox[abposr]-|\b[0-9a-f]{64}\b")


@pytest.fixture(autouse=True)
def _idle_alert_worker() -> Iterator[None]:
    """Nothing queued by an earlier test reaches this one's fake Slack, or the next."""
    assert alerts.drain()
    yield
    assert alerts.drain()


def _check_budget() -> str:
    out = io.StringIO()
    call_command("check_budget", stdout=out)
    return out.getvalue()


def _sent_once(fake_slack: FakeSlack, kind: str) -> str:
    """check_budget sends the ``kind`` alert, and then knows it sent it today; its text."""
    assert f"{kind}: sent" in _check_budget()
    assert f"{kind}: already sent today" in _check_budget()
    (text,) = fake_slack.texts()
    return text


def _spend_today(clock: TestClock, usd: str) -> None:
    create_records(1, budget_day=budget_day(clock.now()), cost_usd=Decimal(usd))
    # The store learns spend when requests settle; records written straight to
    # the ledger are seen once its counters are rebuilt from it.
    forget_store_counters()


def test_a_new_device_alert_arrives_once_with_its_admin_link(fake_slack: FakeSlack) -> None:
    assert alerts.alert_new_device(
        device_id="dev_123", name="Ana's laptop", platform="macos", ip="203.0.113.9"
    )
    assert alerts.drain()
    (message,) = fake_slack.messages
    assert message.channel == "#hanzo-test"
    assert "Ana's laptop" in message.text and "macos" in message.text
    assert "203.0.113.9" in message.text
    assert "/admin/devices/device/dev_123/change/" in message.text
    assert message.authorization == "Bearer xoxb-test-only-token-0000000000"
    assert "xoxb" not in message.text


def test_a_suspicious_device_alert_names_the_device_and_the_reason(fake_slack: FakeSlack) -> None:
    alerts.alert_suspicious_device(device_id="dev_9", name="kiosk", reason="used from 21 IPs today")
    assert alerts.drain()
    (text,) = fake_slack.texts()
    assert "kiosk" in text and "used from 21 IPs today" in text
    assert "/admin/devices/device/dev_9/change/" in text


def test_no_message_ever_carries_a_key_a_token_or_a_token_hash(fake_slack: FakeSlack) -> None:
    leaky = f"{SESSION_TOKEN} {PROVIDER_KEY} {TOKEN_HASH} Bearer {SESSION_TOKEN}"
    alerts.alert_new_device(device_id="dev_1", name=leaky, platform=leaky, ip="198.51.100.1")
    alerts.alert_suspicious_device(device_id="dev_1", name=leaky, reason=f"token {SESSION_TOKEN}")
    assert alerts.drain()
    texts = fake_slack.texts()
    assert len(texts) == 2
    for text in texts:
        assert not SECRET_SHAPES.search(text), text
        assert SESSION_TOKEN[4:] not in text and PROVIDER_KEY[3:] not in text


def test_a_device_name_cannot_forge_a_slack_link(fake_slack: FakeSlack) -> None:
    alerts.alert_new_device(
        device_id="dev_1", name="<https://evil.example|Approve>", platform="x", ip="192.0.2.1"
    )
    assert alerts.drain()
    (text,) = fake_slack.texts()
    assert "<https://evil.example" not in text
    assert "&lt;https://evil.example|Approve&gt;" in text


@pytest.mark.django_db(transaction=True)
def test_the_budget_warning_is_sent_once_per_budget_day(
    fake_slack: FakeSlack, clock: TestClock, settings: Settings
) -> None:
    settings.DAILY_BUDGET_USD = Decimal("10")
    settings.BUDGET_WARNING_PERCENT = 80
    _spend_today(clock, "7.99")
    assert "no alert due" in _check_budget()
    assert fake_slack.requests == 0
    _spend_today(clock, "0.01")
    text = _sent_once(fake_slack, "budget_warning")
    assert "Budget warning" in text and "$8.000000 of $10.000000 (80.0%)" in text
    assert AlertLog.objects.get().kind == "budget_warning"


@pytest.mark.django_db(transaction=True)
def test_the_exhausted_alert_is_sent_once_when_spend_reaches_the_budget(
    fake_slack: FakeSlack, clock: TestClock, settings: Settings
) -> None:
    settings.DAILY_BUDGET_USD = Decimal("10")
    _spend_today(clock, "8.5")
    _check_budget()
    _spend_today(clock, "1.5")
    assert "budget_exhausted: sent" in _check_budget()
    _check_budget()
    alerts.alert_budget_exhausted(
        day=budget_day(clock.now()), spent_micro=10_000_000, budget_micro=10_000_000
    )
    assert alerts.drain()
    texts = fake_slack.texts()
    assert len(texts) == 2
    assert "Budget warning" in texts[0]
    assert "Budget exhausted" in texts[1] and "paused" in texts[1]


@pytest.mark.django_db(transaction=True)
def test_check_budget_sends_the_exhausted_alert_when_the_gateway_paused_itself_short_of_it(
    fake_slack: FakeSlack, clock: TestClock, settings: Settings
) -> None:
    # The gateway pauses when a worst case no longer fits, with spend still
    # under the budget; if Slack was down then, cron must still send it.
    settings.DAILY_BUDGET_USD = Decimal("1")
    settings.BUDGET_WARNING_PERCENT = 50
    _spend_today(clock, "0.9")
    budget_auto_pause(reason="daily budget exhausted")
    text = _sent_once(fake_slack, "budget_exhausted")
    assert "Budget exhausted" in text
    clock.advance(86400)  # yesterday's pause is not today's
    assert "no alert due" in _check_budget()


@pytest.mark.django_db(transaction=True)
def test_the_next_budget_day_gets_its_own_alerts(
    fake_slack: FakeSlack, clock: TestClock, settings: Settings
) -> None:
    settings.DAILY_BUDGET_USD = Decimal("1")
    _spend_today(clock, "0.9")
    _check_budget()
    clock.advance(86400)
    _spend_today(clock, "0.95")
    _check_budget()
    assert len(fake_slack.texts()) == 2
    assert AlertLog.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_check_budget_from_several_processes_at_once_sends_one_alert(
    fake_slack: FakeSlack, clock: TestClock
) -> None:
    _spend_today(clock, "45")  # 90% of the default 50 USD budget
    env = gateway_environment(
        SLACK_API_URL=fake_slack.api_url,
        SLACK_BOT_TOKEN="xoxb-test-only-token-0000000000",
        SLACK_CHANNEL="#hanzo-test",
    )
    processes = [python_child("manage.py", "check_budget", env=env) for _ in range(2)]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert len(fake_slack.texts()) == 1
    assert AlertLog.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_slack_outage_fails_nobody_and_the_alert_is_retried_later(
    fake_slack: FakeSlack, clock: TestClock, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.DAILY_BUDGET_USD = Decimal("10")
    _spend_today(clock, "9")
    fake_slack.fail_with_status(500)
    assert "budget_warning: not sent (will retry)" in _check_budget()
    assert fake_slack.requests >= 1 and fake_slack.texts() == []
    assert "slack alert failed" in caplog.text
    assert not AlertLog.objects.exists()
    fake_slack.heal()
    assert "budget_warning: sent" in _check_budget()
    _check_budget()
    assert len(fake_slack.texts()) == 1


def test_a_slack_error_answer_is_logged_not_raised(
    fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake_slack.fail_with_error("channel_not_found")
    assert alerts.alert_new_device(device_id="d", name="n", platform="p", ip="192.0.2.1")
    assert alerts.drain()
    assert "channel_not_found" in caplog.text
    fake_slack.heal()
    alerts.alert_new_device(device_id="d2", name="n2", platform="p", ip="192.0.2.1")
    assert alerts.drain()
    assert len(fake_slack.texts()) == 1


def test_a_hung_slack_never_blocks_the_caller_and_a_full_queue_drops(
    fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake_slack.hold()
    assert alerts.alert_new_device(device_id="d0", name="first", platform="p", ip="192.0.2.1")
    fake_slack.wait_for_held(1)  # the worker is stuck inside Slack now...
    results = [
        alerts.alert_new_device(device_id=f"d{n}", name="n", platform="p", ip="192.0.2.1")
        for n in range(1, 151)
    ]
    # ...and every call above returned: queued while there was room, dropped after.
    assert results.count(True) == alerts.QUEUE_SIZE
    assert results.count(False) == 150 - alerts.QUEUE_SIZE
    assert "alert dropped, queue full" in caplog.text
    fake_slack.release()
    assert alerts.drain(timeout=60)
    assert len(fake_slack.texts()) == 1 + alerts.QUEUE_SIZE


def test_without_a_token_alerts_are_only_logged(
    fake_slack: FakeSlack, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.SLACK_BOT_TOKEN = ""
    caplog.set_level(logging.WARNING, logger="billing.alerts")
    alerts.alert_new_device(device_id="dev_5", name="tablet", platform="ios", ip="192.0.2.5")
    assert alerts.drain()
    assert fake_slack.requests == 0
    assert "Slack not configured" in caplog.text and "tablet" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_registering_a_device_alerts_slack_once_without_its_token(
    fake_slack: FakeSlack, client: Client
) -> None:
    response = client.post(
        "/v1/devices/register",
        {"deviceName": "Ana's phone", "platform": "ios", "version": "1.2.0"},
        content_type="application/json",
    )
    assert response.status_code == 201
    body = response.json()
    assert alerts.drain()
    (message,) = fake_slack.messages
    assert body["deviceId"] in message.text and "Ana's phone" in message.text
    assert f"/admin/devices/device/{body['deviceId']}/change/" in message.text
    assert body["sessionToken"] not in message.text


# --- Circuit breakers ------------------------------------------------------------


async def test_a_breaker_alerts_once_when_it_opens_and_once_when_it_closes(
    fake_slack: FakeSlack, clock: TestClock, settings: Settings
) -> None:
    settings.BREAKER_FAILURES = 2
    settings.BREAKER_COOLDOWN_SECONDS = 30.0
    route = breakers.route_target("<https://evil.example|llama>")
    first, second = breakers.Breakers(), breakers.Breakers()  # two gateway processes
    for process in (first, second):
        process.report(route, "failure")
        process.report(route, "failure")
        await process.sync()
    assert alerts.drain()
    (opened,) = fake_slack.texts()
    assert opened.startswith(":red_circle: Circuit breaker opened for route *&lt;https://evil")
    assert "<https://evil.example" not in opened
    assert "2 failures within 30 s" in opened and "skip it for 30 s" in opened

    clock.advance(31)
    assert await second.allow(route) and not await first.allow(route)
    second.report(route, "ok")
    await lifecycle._drain_background()
    await first.sync()
    assert alerts.drain()
    assert fake_slack.texts()[1:] == [
        ":white_check_mark: Circuit breaker closed for route "
        "*&lt;https://evil.example|llama&gt;*: its probe succeeded."
    ]


def test_a_key_breaker_alert_names_the_provider_and_the_fingerprint_only(
    fake_slack: FakeSlack,
) -> None:
    target = breakers.Target.parse(breakers.key_target("openai", "k1a2b3"))
    assert alerts.alert_breaker(target, "opened")
    assert alerts.drain()
    (text,) = fake_slack.texts()
    assert "Circuit breaker opened for openai key `k1a2b3`" in text
    assert not SECRET_SHAPES.search(text), text
