"""Issue 6 over HTTP: a gateway process stopped or killed mid-request.

A stopped worker (SIGTERM) finishes its streams and records them; a killed
one (SIGKILL) cannot, and its reservations are released once the longest
possible request has passed, never earlier.
"""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from django.conf import settings

from tests.acceptance.budget import MAX_TOKENS, big
from tests.acceptance.support import InFlight, budget_status, send_all, usd, worst_case
from tests.proxy.conftest import ledger
from usage.limits import RESERVATION_MARGIN_SECONDS


def test_a_stream_in_flight_when_its_worker_is_stopped_finishes_and_is_recorded(
    start_gateway, paid_token
):
    # A scenario name of its own: these servers are stopped, never shared.
    gateway = start_gateway(1, ACCEPTANCE_SCENARIO="stopped mid-stream")
    body = {
        "model": "llama3-8b-instruct",
        "messages": [{"role": "user", "content": "[[tokens:10]] [[fault:slow_chunks:delay=0.1]]"}],
        "stream": True,
    }
    lines = []
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {paid_token}"},
        timeout=30,
    ) as response:
        for line in response.iter_lines():
            lines.append(line)
            if len(lines) == 1:
                gateway.servers[0].process.terminate()
    assert [line for line in lines if line][-1] == "data: [DONE]"
    assert sum("tok" in line for line in lines) == 10
    (record,) = ledger(1)
    assert (record.status, record.tokens_out) == ("ok", 10)
    gateway.servers[0].process.wait(30)
    assert "Application shutdown complete" in gateway.logs()


@pytest.mark.production_only  # budget_status reads the counters the gateways share
def test_reservations_of_a_killed_worker_hold_until_the_longest_request_is_over(
    start_gateway, provider, paid_token, settings, clock
):
    settings.DAILY_BUDGET_USD = Decimal("1.00")
    environment = {
        "ACCEPTANCE_SCENARIO": "killed mid-request",
        "DAILY_BUDGET_USD": "1.00",
        "MAX_TOKENS_PAID": str(MAX_TOKENS),
        "UPSTREAM_TIMEOUT_SECONDS": "30",
    }
    gateway = start_gateway(1, **environment)
    worst = worst_case(big(paid_token), MAX_TOKENS)
    longest = reservation_seconds(environment)
    sent_at = clock.now()
    flight = InFlight(gateway, [big(paid_token)] * 3)
    provider.wait_for_held(3)
    admitted_by = clock.now()
    gateway.servers[0].process.kill()
    gateway.servers[0].process.wait(30)
    provider.release_held()
    with pytest.raises(httpx.HTTPError):
        flight.result()
    assert budget_status()["reservedUsd"] == usd(3 * worst)

    # A new worker: the dead one's reservations still count...
    gateway = start_gateway(1, **environment)
    (outcome,) = send_all(gateway, [big(paid_token, "Hi")])
    assert (outcome.status, outcome.code) == (503, "budget_exceeded")
    clock.advance(sent_at + longest - 3 - clock.now())
    assert send_all(gateway, [big(paid_token, "Hi")])[0].code == "budget_exceeded"
    # ...until the longest request it could have been running is over.
    clock.advance(admitted_by + longest + 1 - clock.now())
    assert budget_status()["reservedUsd"] == 0
    assert send_all(gateway, [big(paid_token, "Hi")])[0].status == 200
    assert ledger(1)[0].status == "ok"
    assert budget_status()["paused"] is False


def reservation_seconds(environment: dict[str, str]) -> float:
    """``usage.limits.reservation_seconds`` with the gateways' settings."""
    return (
        settings.UPSTREAM_CONNECT_TIMEOUT_SECONDS
        + float(environment["UPSTREAM_TIMEOUT_SECONDS"])
        + RESERVATION_MARGIN_SECONDS
    )
