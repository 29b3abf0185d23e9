"""Counters rebuilt from the ledger when the store comes back empty."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from pytest_django import Settings

from gateway.core.store import bump_epoch
from tests.usage.conftest import FrozenClock
from usage import limits, rebuild
from usage.backends.base import Backend, Pause
from usage.days import budget_day
from usage.limits import AdmissionRequest
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

_ids = itertools.count()
HOUR = 3600.0


def make_record(
    *,
    at: float,
    device: str = "dev-1",
    ip: str = "203.0.113.7",
    owner: str = "",
    cost: str = "0",
) -> UsageRecord:
    return UsageRecord.objects.create(
        request_id=f"led-{next(_ids)}",
        device_id=device,
        owner=owner,
        ip=ip,
        model="llama3-8b-instruct",
        provider="digitalocean",
        tier="free",
        cost_usd=Decimal(cost),
        status=UsageRecord.Status.OK,
        budget_day=budget_day(at),
        created_at=datetime.fromtimestamp(at, UTC),
    )


def request(
    device: str = "dev-1", ip: str = "203.0.113.7", user: str | None = None, reserve: int = 0
) -> AdmissionRequest:
    return AdmissionRequest(f"rb-{next(_ids)}", device, ip, user, "free", reserve)


async def remaining(
    device: str = "dev-1", ip: str = "203.0.113.7", user: str | None = None
) -> dict[str, int]:
    layers = await limits.layer_state(device_id=device, ip=ip, user_id=user, tier="free")
    return {name: layer.remaining for name, layer in layers.items()}


async def test_counters_are_rebuilt_from_the_ledger_before_anything_is_admitted(
    backend: Backend,
    limits_config: Callable[..., None],
    settings: Settings,
    frozen_clock: FrozenClock,
) -> None:
    limits_config(device=10, ip=10, user=10, burst=5, global_=100)
    settings.DEVICE_DAILY_BUDGET_USD = {"free": Decimal("0.20"), "paid": Decimal("0")}
    now = frozen_clock.now()  # 08:00 UTC

    def ledger() -> None:
        make_record(at=now - 25 * HOUR, cost="0.07")  # outside the 24 hours, yesterday
        make_record(at=now - 23 * HOUR, cost="0.05")  # inside, but yesterday's budget day
        make_record(at=now - 2 * HOUR, cost="0.10")
        make_record(at=now - 30, cost="0.05")  # inside the burst minute too
        make_record(at=now - HOUR, device="dev-2", owner="alice", cost="0.20")
        make_record(at=now - 600, device="dev-3", ip="2001:db8::5", cost="0")

    await sync_to_async(ledger)()
    assert await remaining() == {"device": 7, "ip": 6, "burst": 4, "global": 95}
    assert (await remaining(device="dev-2", user="alice"))["user"] == 9
    assert (await remaining(device="dev-3", ip="2001:db8::/64"))["ip"] == 9
    state = await limits.budget_state()
    assert (state.spent_micro_usd, state.reserved_micro_usd) == (350_000, 0)
    # dev-1 spent $0.15 of its $0.20 today: a $0.10 worst case no longer fits.
    refused = await limits.admit(request(reserve=100_000))
    assert (refused.refused_by, refused.retry_after) == ("device_budget", 16 * 3600)
    admitted = await limits.admit(request(reserve=50_000))
    assert admitted.layers["device"].remaining == 6


async def test_concurrent_first_requests_rebuild_once_and_wait_for_it(
    backend: Backend, limits_config: Callable[..., None], frozen_clock: FrozenClock
) -> None:
    limits_config(device=20)
    now = frozen_clock.now()
    await sync_to_async(lambda: [make_record(at=now - n * 60) for n in range(1, 19)])()
    before = rebuild.performed
    results = await asyncio.gather(*(limits.admit(request()) for _ in range(50)))
    assert sum(a.admitted for a in results) == 2
    assert rebuild.performed == before + 1


async def test_a_pause_kept_by_billing_is_restored_by_the_rebuild(
    backend: Backend, frozen_clock: FrozenClock
) -> None:
    kept = Pause("cost review", is_automatic=False, since=frozen_clock.now(), until=None)
    rebuild.set_pause_source(lambda: kept)
    refused = await limits.admit(request())
    assert refused.refused_by == "paused"
    assert (await limits.budget_state()).pause == kept


def test_a_command_reading_the_budget_of_an_empty_store_sees_the_ledgers_spend(
    backend: Backend, frozen_clock: FrozenClock
) -> None:
    make_record(at=frozen_clock.now() - HOUR, cost="0.25")
    state = limits.budget_state_sync()
    assert (state.spent_micro_usd, state.reserved_micro_usd) == (250_000, 0)
    assert state.remaining_micro_usd == 50_000_000 - 250_000


async def test_the_in_process_store_follows_a_pause_written_by_another_process(
    settings: Settings,
) -> None:
    settings.GATEWAY_STORE = "memory"
    billing_copy: list[Pause | None] = [None]
    rebuild.set_pause_source(lambda: billing_copy[0])
    assert (await limits.admit(request())).admitted

    # `pause_service` in another process: writes billing's copy, bumps the epoch.
    billing_copy[0] = Pause("incident", is_automatic=False, since=0.0, until=None)
    await sync_to_async(bump_epoch)()
    assert (await limits.admit(request())).refused_by == "paused"

    billing_copy[0] = None
    await sync_to_async(bump_epoch)()
    assert (await limits.admit(request())).admitted
