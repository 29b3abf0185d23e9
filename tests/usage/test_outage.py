"""Redis failures, restarts and several processes sharing one Redis."""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from pytest_django import Settings

from gateway.core.store import StoreUnavailable, sync_redis
from tests.conftest import gateway_environment
from tests.support.processes import PrivateRedis, python_child
from tests.usage.conftest import FrozenClock, reservation
from usage import guard, limits
from usage.backends.base import Backend
from usage.days import budget_day
from usage.limits import AdmissionRequest
from usage.models import UsageRecord

_ids = itertools.count()


def request(device: str = "dev-1", reserve: int = 0) -> AdmissionRequest:
    return AdmissionRequest(f"out-{next(_ids)}", device, "203.0.113.7", None, "free", reserve)


def ledger(now: float, rows: Iterable[tuple[str, str]]) -> None:
    for device, cost in rows:
        UsageRecord.objects.create(
            request_id=f"out-led-{next(_ids)}",
            device_id=device,
            ip="203.0.113.7",
            model="llama3-8b-instruct",
            provider="digitalocean",
            tier="free",
            cost_usd=Decimal(cost),
            status=UsageRecord.Status.OK,
            budget_day=budget_day(now - 60),
            created_at=datetime.fromtimestamp(now - 60, UTC),
        )


def assert_unavailable(error: StoreUnavailable) -> None:
    assert error.status == 503
    assert error.code == "service_unavailable"
    assert error.headers()["Retry-After"] == "5"


@pytest.mark.django_db(transaction=True)
async def test_redis_stopped_mid_test_is_503_and_started_empty_it_admits_with_rebuilt_counters(
    private_redis: PrivateRedis,
    limits_config: Callable[..., None],
    settings: Settings,
    frozen_clock: FrozenClock,
) -> None:
    limits_config(device=5)
    settings.DAILY_BUDGET_USD = Decimal("1.00")
    settings.DEVICE_DAILY_BUDGET_USD = {"free": Decimal("0"), "paid": Decimal("0")}
    now = frozen_clock.now()
    await sync_to_async(ledger)(now, [("dev-1", "0.50"), ("dev-1", "0.40")])
    in_flight = await limits.admit(request(reserve=50_000))
    assert in_flight.layers["device"].remaining == 2

    private_redis.stop()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: limits.admit(request()),
        lambda: limits.settle(reservation(in_flight), actual_micro_usd=1),
        lambda: limits.budget_state(),
        lambda: limits.layer_state(device_id="dev-1", ip="203.0.113.7", user_id=None, tier="free"),
        lambda: guard.check_ip("203.0.113.7"),
        lambda: guard.record_auth_failure("203.0.113.7"),
        lambda: guard.admit_registration("203.0.113.7"),
        lambda: sync_to_async(limits.budget_state_sync)(),
        lambda: sync_to_async(limits.service_pause)(reason="x"),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable) as caught:
            await call()
        assert_unavailable(caught.value)

    private_redis.start()  # same port, nothing in it (no scripts either)
    again = await limits.admit(request(reserve=50_000))
    assert again.admitted
    # 2 requests in the ledger + this one; the one in flight has no record yet.
    assert again.layers["device"].remaining == 2
    state = await limits.budget_state()
    assert (state.spent_micro_usd, state.reserved_micro_usd) == (900_000, 50_000)
    # The request admitted before the restart settles into the rebuilt day, once.
    assert await limits.settle(reservation(in_flight), actual_micro_usd=30_000)
    assert not await limits.settle(reservation(in_flight), actual_micro_usd=30_000)
    assert (await limits.budget_state()).spent_micro_usd == 930_000


@pytest.mark.django_db
@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_a_script_cache_emptied_by_redis_is_loaded_again(backend: Backend) -> None:
    assert (await limits.admit(request())).admitted
    sync_redis().script_flush()
    assert (await limits.admit(request())).admitted


@pytest.mark.django_db(transaction=True)
def test_two_processes_of_fifty_simultaneous_admissions_admit_exactly_twenty(
    shared_redis_url: str, tmp_path: Path
) -> None:
    env = gateway_environment(
        REDIS_URL=shared_redis_url,
        RATE_LIMIT_FREE_DEVICE_PER_DAY="20",
        RATE_LIMIT_FREE_DEVICE_PER_MINUTE="1000",
        MAX_CONCURRENT_REQUESTS_FREE="1000",  # admitted, never settled: not the layer tested
    )
    go = tmp_path / "go"
    workers = [
        python_child("-m", "tests.usage.admission_worker", str(go), "50", f"p{n}", env=env)
        for n in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stderr is not None
            assert worker.stdout.readline().strip() == "ready", worker.stderr.read()
        go.touch()
        outputs = [worker.communicate(timeout=60) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sum(s["admitted"] for s in summaries) == 20
    assert {layer for s in summaries for layer in s["refused_by"]} == {"device"}
    assert sum(s["rebuilt"] for s in summaries) == 1  # one rebuild across both processes
