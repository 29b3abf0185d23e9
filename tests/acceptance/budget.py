"""The budget scenario shared by the budget and alert tests.

A request's worst case (its input bound plus ``max_tokens`` at the route's
prices) is about $0.30 here: openai-gpt-5 at $15 per 1M output tokens with
``max_tokens`` 20000 (the paid cap is raised to allow it), against a $1.00
budget. Held rounds keep the admitted requests waiting at the fake provider
until every request has been answered or is waiting there, so their
reservations overlap for certain, whatever the machine's speed.
"""

from __future__ import annotations

from typing import Any

from tests.acceptance.support import (
    Call,
    InFlight,
    Outcome,
    budget_status,
    chat,
    ledger_cost,
    spread,
    usd,
)
from tests.fakes.provider import FakeProvider
from tests.fakes.slack import FakeSlack
from tests.proxy.conftest import Gateway, ledger
from tests.support.processes import wait_for

BUDGET = 1_000_000  # micro-dollars
MAX_TOKENS = 20_000
# Each admitted request really costs about $0.10: 6666 output tokens at $15 per 1M.
HELD = "Hi [[tokens:6666]] [[fault:hold]]"

BUDGET_ENVIRONMENT = {
    "DAILY_BUDGET_USD": "1.00",
    "BUDGET_PAUSE_REMAINING_USD": "0.05",
    "BUDGET_WARNING_PERCENT": "50",
    "MAX_TOKENS_PAID": str(MAX_TOKENS),
    "DEVICE_DAILY_BUDGET_USD_PAID": "0",
    "UPSTREAM_TIMEOUT_SECONDS": "30",
    # Twenty at once from one device: the in-flight layer is not the one tested.
    "MAX_CONCURRENT_REQUESTS_PAID": "50",
}


def big(token: str, text: str = HELD) -> Call:
    return chat(token, text, model="openai-gpt-5", max_tokens=MAX_TOKENS)


def held_round(
    gateway: Gateway, provider: FakeProvider, calls: list[Call]
) -> tuple[dict[str, Any], list[Outcome]]:
    """Send ``calls`` at once; while the admitted ones wait upstream, read budget_status."""
    provider.hold()
    flight = InFlight(gateway, spread(calls))
    wait_for(
        lambda: flight.finished + provider.held == len(calls),
        timeout=30,
        what="every request refused or waiting upstream",
    )
    during = budget_status()
    provider.release_held()
    return during, flight.result()


def settled(count: int) -> dict[str, Any]:
    """budget_status once ``count`` records are in the ledger and nothing is reserved."""
    records = ledger(count)
    wait_for(lambda: budget_status()["reservedUsd"] == 0, timeout=15, what="reservations settled")
    status = budget_status()
    today = [record for record in records if record.budget_day.isoformat() == status["day"]]
    assert status["spentUsd"] == usd(ledger_cost(today))
    return status


def small(token: str, server: int = 0) -> Call:
    return chat(token, "Hi [[tokens:5]]", model="openai-gpt-5", max_tokens=100, server=server)


def budget_alerts(slack: FakeSlack) -> list[str]:
    # Registering devices alerts too (new_device): only budget alerts count here.
    return [
        text for text in slack.texts() if text.startswith((":warning: Budget", ":no_entry: Budget"))
    ]


def wait_for_budget_alerts(slack: FakeSlack, count: int) -> list[str]:
    wait_for(lambda: len(budget_alerts(slack)) >= count, timeout=15, what=f"{count} budget alerts")
    return budget_alerts(slack)
