"""Suspicious devices: more distinct IPs in a budget day than allowed means suspension."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from pytest_django import Settings

from billing import alerts
from devices import auth, services, suspicious
from devices.errors import DeviceSuspended
from devices.models import AuditEvent, Device
from gateway.core import store
from tests.conftest import TestClock
from tests.devices.support import Registered
from tests.fakes.slack import FakeSlack
from usage.days import budget_day, next_day_start

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_store_clients"),
]

LIMIT = 3


@pytest.fixture(autouse=True)
def _limit(settings: Settings) -> Iterator[None]:
    settings.SUSPICIOUS_IPS_PER_DEVICE_PER_DAY = LIMIT
    suspicious.clear_cache()
    yield
    suspicious.clear_cache()


def ips(count: int, start: int = 1) -> list[str]:
    return [f"198.51.100.{index}" for index in range(start, start + count)]


async def note_all(device_id: str, addresses: list[str]) -> None:
    for address in addresses:
        await suspicious.note_device_ip(device_id, address)


async def state(device_id: str) -> tuple[str, list[tuple[str, str]]]:
    def read() -> tuple[str, list[tuple[str, str]]]:
        device = Device.objects.get(pk=device_id)
        events = AuditEvent.objects.filter(device=device, action="suspend")
        return device.status, list(events.values_list("actor", "changes__suspension_reason__after"))

    return await sync_to_async(read)()


def suspicious_alerts(fake: FakeSlack) -> list[str]:
    alerts.drain()
    return [text for text in fake.texts() if "Suspicious device" in text]


async def test_a_device_at_the_limit_is_left_alone(
    make_device: Callable[..., Registered], fake_slack: FakeSlack
) -> None:
    device = (await sync_to_async(make_device)("approved")).device
    await note_all(device.pk, ips(LIMIT) * 3)
    assert await state(device.pk) == ("approved", [])
    assert suspicious_alerts(fake_slack) == []


async def test_one_address_past_the_limit_suspends_with_a_reason_an_audit_and_an_alert(
    make_device: Callable[..., Registered], fake_slack: FakeSlack
) -> None:
    device = (await sync_to_async(make_device)("approved")).device
    await note_all(device.pk, ips(LIMIT + 1))
    status, events = await state(device.pk)
    assert status == "suspended"
    ((actor, reason),) = events
    assert actor == "system"
    assert f"more than {LIMIT} client IPs" in reason
    (text,) = suspicious_alerts(fake_slack)
    assert device.pk in text and "Ada" in text
    event = await sync_to_async(AuditEvent.objects.filter(action="suspend").get)()
    assert event.ip == ips(LIMIT + 1)[-1]


async def test_it_triggers_once_a_day_even_after_an_operator_reapproves(
    make_device: Callable[..., Registered], fake_slack: FakeSlack
) -> None:
    device = (await sync_to_async(make_device)("approved")).device
    await note_all(device.pk, ips(LIMIT + 1))
    await sync_to_async(services.device_approve)(device=device, actor="ops", ip=None)
    await note_all(device.pk, ips(5, start=50))
    status, events = await state(device.pk)
    assert status == "approved" and len(events) == 1
    assert len(suspicious_alerts(fake_slack)) == 1


async def test_the_count_starts_again_on_the_next_budget_day(
    make_device: Callable[..., Registered], clock: TestClock
) -> None:
    device = (await sync_to_async(make_device)("approved")).device
    await note_all(device.pk, ips(LIMIT))
    clock.advance(next_day_start(clock.now()) - clock.now() + 1)
    await note_all(device.pk, ips(LIMIT, start=50))
    assert await state(device.pk) == ("approved", [])
    await suspicious.note_device_ip(device.pk, "198.51.100.99")
    assert (await state(device.pk))[0] == "suspended"


async def test_ipv6_addresses_of_one_subscriber_count_once(
    make_device: Callable[..., Registered],
) -> None:
    device = (await sync_to_async(make_device)("approved")).device
    rotating = [f"2001:db8:0:1::{index:x}" for index in range(1, 20)]
    await note_all(device.pk, [*rotating, *ips(LIMIT - 1)])
    assert await state(device.pk) == ("approved", [])


async def test_concurrent_requests_from_many_addresses_suspend_exactly_once(
    make_device: Callable[..., Registered], fake_slack: FakeSlack
) -> None:
    device = (await sync_to_async(make_device)("approved")).device
    await asyncio.gather(*(suspicious.note_device_ip(device.pk, address) for address in ips(40)))
    status, events = await state(device.pk)
    assert status == "suspended" and len(events) == 1
    assert len(suspicious_alerts(fake_slack)) == 1


async def test_a_device_already_suspended_by_an_operator_keeps_that_suspension(
    make_device: Callable[..., Registered],
) -> None:
    device = (await sync_to_async(make_device)("suspended")).device
    until = device.suspended_until
    await note_all(device.pk, ips(LIMIT + 2))
    refreshed = await sync_to_async(Device.objects.get)(pk=device.pk)
    assert (refreshed.suspended_until, refreshed.suspension_reason) == (until, "too many IPs")


async def test_a_failed_suspension_is_retried_on_the_next_new_address(
    make_device: Callable[..., Registered], monkeypatch: pytest.MonkeyPatch
) -> None:
    device = (await sync_to_async(make_device)("approved")).device
    real = suspicious._suspend_approved_device
    calls = []

    def database_down_once(*args: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            from django.db import OperationalError

            raise OperationalError("connection refused")
        return real(*args)

    monkeypatch.setattr(suspicious, "_suspend_approved_device", database_down_once)
    await note_all(device.pk, ips(LIMIT + 1))
    assert (await state(device.pk))[0] == "approved"
    await suspicious.note_device_ip(device.pk, "198.51.100.77")
    assert (await state(device.pk))[0] == "suspended"
    assert len(calls) == 2


async def test_zero_turns_the_check_off(
    make_device: Callable[..., Registered], settings: Settings
) -> None:
    settings.SUSPICIOUS_IPS_PER_DEVICE_PER_DAY = 0
    device = (await sync_to_async(make_device)("approved")).device
    await note_all(device.pk, ips(30))
    assert await state(device.pk) == ("approved", [])


@pytest.mark.production_only
async def test_the_redis_set_stops_at_one_past_the_limit_and_expires_after_its_day(
    make_device: Callable[..., Registered], clock: TestClock
) -> None:
    device = (await sync_to_async(make_device)("approved")).device
    await note_all(device.pk, ips(LIMIT + 10))
    key = store.key("susp", device.pk, budget_day(clock.now()).isoformat())
    redis = store.async_redis()
    assert await redis.execute("SCARD", key) == LIMIT + 1
    ttl = await redis.execute("TTL", key)
    day_left = next_day_start(clock.now()) - clock.now()
    assert day_left < ttl <= day_left + 3600 + 1


async def test_the_suspended_device_is_refused_on_its_next_request(
    make_device: Callable[..., Registered],
) -> None:
    registered = await sync_to_async(make_device)("approved")
    addresses = ips(LIMIT + 1)
    for address in addresses:
        await auth.authenticate(registered.bearer(), ip=address)  # warms the cache too
        await suspicious.note_device_ip(registered.id, address)
    with pytest.raises(DeviceSuspended) as refused:
        await auth.authenticate(registered.bearer(), ip=addresses[0])
    assert "client IPs" in refused.value.payload()["error"]["reason"]
