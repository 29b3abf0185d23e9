"""Issue 6 over HTTP: a gateway process stopped or killed mid-request.

A stopped worker (SIGTERM) finishes its streams and records them; a killed
one (SIGKILL) cannot: its heartbeat stops, and once it has been silent for
``RESERVATION_LIVENESS_SECONDS`` its reservations count as spent at their
worst case, never released.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest
from pytest_django import Settings

from tests.acceptance.budget import MAX_TOKENS, big
from tests.acceptance.support import InFlight, budget_status, chat, send_all, usd, worst_case
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger


def test_a_stream_in_flight_when_its_worker_is_stopped_finishes_and_is_recorded(
    start_gateway: Callable[..., Gateway], paid_token: str
) -> None:
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
def test_reservations_of_a_killed_worker_count_as_spent_once_it_is_silent(
    start_gateway: Callable[..., Gateway],
    provider: FakeProvider,
    paid_token: str,
    settings: Settings,
) -> None:
    settings.DAILY_BUDGET_USD = Decimal("1.00")
    settings.RESERVATION_LIVENESS_SECONDS = LIVENESS
    environment = {
        "ACCEPTANCE_SCENARIO": "killed mid-request",
        "DAILY_BUDGET_USD": "1.00",
        "MAX_TOKENS_PAID": str(MAX_TOKENS),
        "UPSTREAM_TIMEOUT_SECONDS": "30",
        "RESERVATION_LIVENESS_SECONDS": str(LIVENESS),
    }
    gateway = start_gateway(1, **environment)
    worst = worst_case(big(paid_token), MAX_TOKENS)
    flight = InFlight(gateway, [big(paid_token)] * 3)
    provider.wait_for_held(3)
    killed_at = time.monotonic()
    gateway.servers[0].process.kill()
    gateway.servers[0].process.wait(30)
    provider.release_held()
    with pytest.raises(httpx.HTTPError):
        flight.result()
    status = budget_status()
    assert (status["reservedUsd"], status["spentUsd"]) == (usd(3 * worst), 0)

    # A new worker: the dead one's reservations still count...
    gateway = start_gateway(1, **environment)
    (outcome,) = send_all(gateway, [big(paid_token, "Hi")])
    assert (outcome.status, outcome.code) == (503, "budget_exceeded")
    # ...and once it has been silent for the liveness period, they are spent,
    # at their worst case: the provider may have billed all of it.
    time.sleep(max(0.0, killed_at + LIVENESS + 0.5 - time.monotonic()))
    status = budget_status()
    assert (status["reservedUsd"], status["spentUsd"]) == (0, usd(3 * worst))
    assert send_all(gateway, [big(paid_token, "Hi")])[0].code == "budget_exceeded"
    (outcome,) = send_all(gateway, [chat(paid_token, "Hi", model="openai-gpt-5", max_tokens=10)])
    assert outcome.status == 200
    assert ledger(1)[0].status == "ok"


# Real time (a process's life is not the gateway clock's): short enough to
# wait for here, long enough that a living worker's beats (every third of it)
# are not late on a loaded machine.
LIVENESS = 3
