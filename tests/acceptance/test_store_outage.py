"""Issues 3 and 6 over HTTP: Redis lost, stopped or flushed; the ledger rebuilds the counters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.acceptance.support import (
    PROCESSES,
    Call,
    budget_status,
    chat,
    codes,
    ledger_cost,
    send_all,
    spread,
    usd,
)
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger
from tests.support.processes import PrivateRedis, wait_for
from tests.support.store import forget_store_counters

pytestmark = pytest.mark.production_only

LIMITS = {
    "RATE_LIMIT_FREE_DEVICE_PER_DAY": "20",
    "RATE_LIMIT_FREE_DEVICE_PER_MINUTE": "1000",
    "MAX_CONCURRENT_REQUESTS_FREE": "20",  # a few at once from one device
}


def spending(token: str) -> Call:
    return chat(token, "Spend a little [[tokens:40]]")


def settled_spend(count: int) -> dict[str, Any]:
    records = ledger(count)
    wait_for(lambda: budget_status()["reservedUsd"] == 0, timeout=15, what="reservations settled")
    status = budget_status()
    assert status["spentUsd"] == usd(ledger_cost(records)) > 0
    return status


def _get(gateway: Gateway, path: str, token: str, server: int) -> httpx.Response:
    return httpx.get(
        f"{gateway.servers[server].url}{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_redis_stopped_is_503_with_retry_after_and_started_empty_it_serves_with_rebuilt_counters(
    start_gateway: Callable[..., Gateway],
    private_redis: PrivateRedis,
    provider: FakeProvider,
    free_token: str,
) -> None:
    gateway = start_gateway(PROCESSES, REDIS_URL=private_redis.url, **LIMITS)
    assert codes(send_all(gateway, spread([spending(free_token)] * 3))) == {(200, None): 3}
    before = settled_spend(3)

    private_redis.stop()
    streams = [chat(free_token, stream=True)] * 2
    outcomes = send_all(gateway, spread([spending(free_token)] * 4 + streams))
    assert codes(outcomes) == {(503, "service_unavailable"): 6}
    assert all(int(o.headers["retry-after"]) > 0 for o in outcomes)
    for server in range(PROCESSES):
        for path in ("/v1/models", "/v1/usage/stats"):
            response = _get(gateway, path, free_token, server)
            assert response.status_code == 503, (path, response.text)
            assert response.json()["error"]["code"] == "service_unavailable"
            assert int(response.headers["retry-after"]) > 0
        ready = httpx.get(f"{gateway.servers[server].url}/health/ready", timeout=30)
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] == "down"
    assert "Traceback" not in gateway.logs()
    assert len(provider.requests) == 3

    private_redis.start()  # the same port, and nothing in it
    outcomes = send_all(gateway, spread([spending(free_token)] * PROCESSES))
    assert [o.status for o in outcomes] == [200] * PROCESSES
    # The day's window was rebuilt from the three records, not restarted at zero.
    remaining = sorted(int(o.headers["x-ratelimit-remaining-device"]) for o in outcomes)
    assert remaining == list(range(17 - PROCESSES, 17))
    after = settled_spend(3 + PROCESSES)
    assert after["spentUsd"] > before["spentUsd"]
    stats = _get(gateway, "/v1/usage/stats", free_token, 0).json()
    assert stats["limits"]["device"]["remaining"] == 17 - PROCESSES
    assert stats["today"]["requests"] == 3 + PROCESSES


def test_flushing_redis_mid_day_rebuilds_the_spend_from_the_ledger_on_the_next_request(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, free_token: str
) -> None:
    gateway = start_gateway(PROCESSES, **LIMITS)
    assert codes(send_all(gateway, spread([spending(free_token)] * 3))) == {(200, None): 3}
    before = settled_spend(3)

    forget_store_counters()
    (outcome,) = send_all(gateway, [spending(free_token)])
    assert outcome.status == 200
    assert outcome.headers["x-ratelimit-remaining-device"] == "16"
    after = settled_spend(4)
    assert after["spentUsd"] > before["spentUsd"]
