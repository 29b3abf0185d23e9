"""The IP guard (blocklist, failed authentications) and the registration limit."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from pytest_django import Settings

from gateway.core.client_ip import Network
from tests.usage.conftest import FrozenClock
from usage import guard
from usage.backends.base import Backend
from usage.errors import IpBlocked, RegistrationRateLimited
from usage.models import BlockedNetwork


async def create_blocked(cidr: str, reason: str = "") -> BlockedNetwork:
    return await sync_to_async(BlockedNetwork.objects.create)(cidr=cidr, reason=reason)


@pytest.mark.django_db(transaction=True)
async def test_addresses_inside_a_blocked_network_are_refused_with_403(backend: Backend) -> None:
    await create_blocked("203.0.113.0/24", "abuse")
    await create_blocked("2001:db8::/32")
    for ip in ("203.0.113.9", "2001:db8:5::1"):
        with pytest.raises(IpBlocked) as caught:
            await guard.check_ip(ip)
        error = caught.value
        assert (error.status, error.code, error.error_type) == (
            403,
            "ip_blocked",
            "permission_error",
        )
    await guard.check_ip("198.51.100.1")
    await guard.check_ip("2001:db9::1")


@pytest.mark.django_db(transaction=True)
async def test_the_blocklist_is_read_once_per_process_until_it_changes(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[int] = []
    real_load = guard._load_networks

    def counting_load() -> tuple[Network, ...]:
        loads.append(1)
        return real_load()

    monkeypatch.setattr(guard._blocklist, "_load", counting_load)
    network = await create_blocked("203.0.113.0/24")
    for _ in range(20):
        with pytest.raises(IpBlocked):
            await guard.check_ip("203.0.113.9")
        await guard.check_ip("198.51.100.1")
    assert len(loads) == 1

    await sync_to_async(network.delete)()  # bumps the store epoch once committed
    await guard.check_ip("203.0.113.9")
    await guard.check_ip("203.0.113.10")
    assert len(loads) == 2


@pytest.mark.django_db
async def test_failed_authentications_block_the_ip_for_a_while(
    backend: Backend, settings: Settings, frozen_clock: FrozenClock
) -> None:
    settings.AUTH_FAILURES_PER_IP_PER_HOUR = 3
    settings.IP_BLOCK_MINUTES = 15
    for _ in range(2):
        await guard.record_auth_failure("203.0.113.7")
    await guard.check_ip("203.0.113.7")
    await guard.record_auth_failure("203.0.113.7")
    with pytest.raises(IpBlocked) as caught:
        await guard.check_ip("203.0.113.7")
    assert caught.value.headers()["Retry-After"] == "900"
    await guard.check_ip("203.0.113.8")

    frozen_clock.advance(900 - 1)
    with pytest.raises(IpBlocked):
        await guard.check_ip("203.0.113.7")
    frozen_clock.advance(1)
    await guard.check_ip("203.0.113.7")


@pytest.mark.django_db
async def test_failures_are_counted_in_a_rolling_hour(
    backend: Backend, settings: Settings, frozen_clock: FrozenClock
) -> None:
    settings.AUTH_FAILURES_PER_IP_PER_HOUR = 3
    for _ in range(2):
        await guard.record_auth_failure("203.0.113.7")
    frozen_clock.advance(3600 + 60)
    await guard.record_auth_failure("203.0.113.7")
    await guard.check_ip("203.0.113.7")


@pytest.mark.django_db
async def test_an_ipv6_subscriber_is_blocked_as_one_64(
    backend: Backend, settings: Settings
) -> None:
    settings.AUTH_FAILURES_PER_IP_PER_HOUR = 2
    await guard.record_auth_failure("2001:db8:1:2::1")
    await guard.record_auth_failure("2001:db8:1:2::2")
    with pytest.raises(IpBlocked):
        await guard.check_ip("2001:db8:1:2::3")
    await guard.check_ip("2001:db8:1:3::1")


@pytest.mark.django_db
async def test_an_admin_lists_and_lifts_blocks(
    backend: Backend, settings: Settings, frozen_clock: FrozenClock
) -> None:
    settings.AUTH_FAILURES_PER_IP_PER_HOUR = 2
    settings.IP_BLOCK_MINUTES = 15
    for ip in ("203.0.113.7", "203.0.113.7", "2001:db8::1", "2001:db8::1"):
        await guard.record_auth_failure(ip)
    blocks = await sync_to_async(guard.list_ip_blocks)()
    until = frozen_clock.now() + 900
    assert sorted((b.ip, b.until) for b in blocks) == [
        ("2001:db8::/64", until),
        ("203.0.113.7", until),
    ]

    assert await sync_to_async(guard.lift_ip_block)("203.0.113.7")
    assert not await sync_to_async(guard.lift_ip_block)("203.0.113.7")
    await guard.check_ip("203.0.113.7")
    await guard.record_auth_failure("203.0.113.7")  # its failures were forgotten too
    await guard.check_ip("203.0.113.7")
    assert [b.ip for b in await sync_to_async(guard.list_ip_blocks)()] == ["2001:db8::/64"]
    frozen_clock.advance(900)
    assert await sync_to_async(guard.list_ip_blocks)() == []


@pytest.mark.django_db
async def test_registrations_are_limited_per_ip_per_rolling_hour(
    backend: Backend, settings: Settings, frozen_clock: FrozenClock
) -> None:
    settings.REGISTRATIONS_PER_IP_PER_HOUR = 3
    start = frozen_clock.now()
    for _ in range(3):
        await guard.admit_registration("203.0.113.7")
    with pytest.raises(RegistrationRateLimited) as caught:
        await guard.admit_registration("203.0.113.7")
    error = caught.value
    assert (error.status, error.code) == (429, "registration_rate_limit_exceeded")
    assert error.payload()["error"]["limit"] == 3
    # A slot frees between one hour and one hour plus a one-minute bucket later.
    assert error.retry_after is not None
    assert 3600 <= error.retry_after <= 3660
    await guard.admit_registration("203.0.113.8")

    frozen_clock.set(start + error.retry_after - 1)
    with pytest.raises(RegistrationRateLimited):
        await guard.admit_registration("203.0.113.7")
    frozen_clock.set(start + error.retry_after)
    await guard.admit_registration("203.0.113.7")


@pytest.mark.django_db
def test_the_admin_normalises_a_blocked_network_and_refuses_duplicates(
    admin_client: Client,
) -> None:
    url = "/admin/usage/blockednetwork/add/"
    response = admin_client.post(url, {"cidr": "203.0.113.7/24", "reason": "scraper"})
    assert response.status_code == 302
    assert list(BlockedNetwork.objects.values_list("cidr", flat=True)) == ["203.0.113.0/24"]
    again = admin_client.post(url, {"cidr": "203.0.113.99/24"})
    assert again.status_code == 200
    assert "already exists" in again.content.decode()
    garbage = admin_client.post(url, {"cidr": "not a network"})
    assert garbage.status_code == 200
    assert BlockedNetwork.objects.count() == 1
