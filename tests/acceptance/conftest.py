"""Acceptance tests: the Done-when of issues 3 (admission) and 6 (billing), over HTTP.

Every test talks to running gateway processes (two on the production
profile, sharing PostgreSQL and Redis) in front of the fake provider, and
reads the money back the way an operator would: ``budget_status``,
``cost_report``, the ledger, the fake Slack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from pytest_django import Settings

from tests.acceptance.budget import BUDGET_ENVIRONMENT
from tests.acceptance.support import PROCESSES, SLACK_CHANNEL, SLACK_TOKEN, slack_environment
from tests.fakes.slack import FakeSlack, start_fake_slack
from tests.proxy.conftest import Gateway, free_token, gateway, paid_token, start_gateway  # noqa: F401
from tests.usage.conftest import private_redis  # noqa: F401


@pytest.fixture(scope="session")
def _acceptance_slack() -> Iterator[FakeSlack]:
    # One fake Slack for the session: gateways started with its address in
    # their environment are then reused from test to test.
    fake = start_fake_slack()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def slack(_acceptance_slack: FakeSlack, settings: Settings) -> FakeSlack:
    """The fake Slack, emptied, with this process's Slack settings pointing at it."""
    fake = _acceptance_slack
    fake.heal()
    with fake.lock:
        fake.messages.clear()
        fake.requests = fake.held = 0
    settings.SLACK_API_URL = fake.api_url
    settings.SLACK_BOT_TOKEN = SLACK_TOKEN
    settings.SLACK_CHANNEL = SLACK_CHANNEL
    return fake


@pytest.fixture
def budget_gateway(
    start_gateway: Callable[..., Gateway],  # noqa: F811
    slack: FakeSlack,
    settings: Settings,
) -> Gateway:
    """Gateways with the $1.00 budget of ``tests.acceptance.budget``, alerting the fake Slack."""
    settings.DAILY_BUDGET_USD = Decimal(BUDGET_ENVIRONMENT["DAILY_BUDGET_USD"])
    settings.BUDGET_WARNING_PERCENT = int(BUDGET_ENVIRONMENT["BUDGET_WARNING_PERCENT"])
    return start_gateway(PROCESSES, **BUDGET_ENVIRONMENT, **slack_environment(slack))
