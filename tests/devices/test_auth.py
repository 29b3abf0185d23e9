from __future__ import annotations

from collections.abc import Callable

import pytest
from pytest_django import Settings

from devices import auth, services
from devices.auth import AuthenticatedDevice, authenticate
from devices.errors import DevicePendingApproval, DeviceRejected, DeviceSuspended
from devices.models import Device
from gateway.core import store
from gateway.core.errors import AuthenticationFailed, GatewayError
from gateway.core.store import StoreUnavailable
from tests.conftest import TestClock
from tests.devices.support import Registered, in_thread
from usage import guard

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_store_clients"),
]

IP = "198.51.100.9"


@pytest.fixture
def auth_failures(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each IP the guard was told about (usage.guard.record_auth_failure)."""
    recorded: list[str] = []

    async def record(ip: str) -> None:
        recorded.append(ip)

    monkeypatch.setattr(guard, "record_auth_failure", record)
    return recorded


async def test_a_bearer_token_alone_identifies_an_approved_device(
    make_device: Callable[..., Registered],
) -> None:
    registered = await in_thread(make_device)("approved", tier="paid", owner="acme")
    device = await authenticate(registered.bearer(), ip=IP)
    owner = await in_thread(lambda: registered.device.owner)()
    assert owner is not None
    assert device == AuthenticatedDevice(
        id=registered.id,
        name="Ada's laptop",
        status="approved",
        tier="paid",
        owner_id=str(owner.pk),
        owner_name="acme",
    )


async def test_the_device_id_and_session_token_pair_works_too(
    make_device: Callable[..., Registered],
) -> None:
    registered = await in_thread(make_device)("approved")
    device = await authenticate(registered.pair(), ip=IP)
    assert (device.id, device.owner_id, device.owner_name) == (registered.id, None, None)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no credentials"),
        pytest.param({"authorization": "Bearer hzt_" + "x" * 43}, id="unknown token"),
        pytest.param({"authorization": "Bearer not-a-token"}, id="malformed token"),
        pytest.param({"authorization": "Bearer "}, id="empty bearer"),
        pytest.param({"x-session-token": "{token}"}, id="token without device id"),
        pytest.param({"x-device-id": "{id}"}, id="device id without token"),
        pytest.param({"authorization": "Basic {token}"}, id="another scheme"),
        pytest.param({"authorization": "Token {token}"}, id="yet another scheme"),
        pytest.param({"authorization": "{token}"}, id="no scheme"),
        pytest.param(
            {"authorization": "Bearer {token}", "x-session-token": "hzt_" + "y" * 43},
            id="two different tokens",
        ),
    ],
)
async def test_unusable_credentials_are_one_generic_401_and_reported_to_the_guard(
    make_device: Callable[..., Registered], auth_failures: list[str], headers: dict[str, str]
) -> None:
    registered = await in_thread(make_device)("approved")
    filled = {
        name: value.format(token=registered.token, id=registered.id)
        for name, value in headers.items()
    }
    with pytest.raises(AuthenticationFailed) as refused:
        await authenticate(filled, ip=IP)
    assert refused.value.status == 401 and refused.value.code == "invalid_credentials"
    assert refused.value.detail == AuthenticationFailed.message
    assert auth_failures == [IP]


async def test_a_token_with_another_devices_id_is_refused(
    make_device: Callable[..., Registered], auth_failures: list[str]
) -> None:
    mine = await in_thread(make_device)("approved")
    other = await in_thread(make_device)("approved")
    headers = {"x-device-id": other.id, "x-session-token": mine.token}
    for _ in range(2):  # cold, then with the token cached
        with pytest.raises(AuthenticationFailed):
            await authenticate(headers, ip=IP)
    with pytest.raises(AuthenticationFailed):
        await authenticate({**mine.bearer(), "x-device-id": other.id}, ip=IP)
    assert auth_failures == [IP, IP, IP]
    assert (await authenticate(mine.pair(), ip=IP)).id == mine.id


async def test_a_revoked_device_gets_the_same_401(
    make_device: Callable[..., Registered], auth_failures: list[str]
) -> None:
    registered = await in_thread(make_device)("revoked")
    with pytest.raises(AuthenticationFailed):
        await authenticate(registered.bearer(), ip=IP)
    assert auth_failures == [IP]


@pytest.mark.parametrize(
    ("status", "error"),
    [("pending_approval", DevicePendingApproval), ("rejected", DeviceRejected)],
)
async def test_pending_and_rejected_devices_get_their_403(
    make_device: Callable[..., Registered],
    auth_failures: list[str],
    status: str,
    error: type[GatewayError],
) -> None:
    registered = await in_thread(make_device)(status)
    with pytest.raises(error) as refused:
        await authenticate(registered.bearer(), ip=IP)
    assert refused.value.status == 403
    assert refused.value.payload()["error"]["type"] == "permission_error"
    assert refused.value.code == f"device_{status}"
    assert auth_failures == []


async def test_a_suspended_device_is_told_until_when_and_why_then_the_suspension_ends(
    make_device: Callable[..., Registered], clock: TestClock
) -> None:
    registered = await in_thread(make_device)("suspended")
    assert registered.device.suspended_until is not None
    until = registered.device.suspended_until.strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(DeviceSuspended) as refused:
        await authenticate(registered.bearer(), ip=IP)
    error = refused.value.payload()["error"]
    assert error["code"] == "device_suspended"
    assert error["suspendedUntil"] == until
    assert error["reason"] == "too many IPs"
    clock.advance(2 * 3600 - 5)
    with pytest.raises(DeviceSuspended):
        await authenticate(registered.bearer(), ip=IP)  # cached, and still suspended
    clock.advance(10)
    device = await authenticate(registered.bearer(), ip=IP)
    assert device.status == "approved"


async def test_a_warm_cache_does_no_database_query_yet_a_revoke_is_seen_at_once(
    make_device: Callable[..., Registered], count_queries: list[str]
) -> None:
    registered = await in_thread(make_device)("approved")
    count_queries.clear()
    await authenticate(registered.pair(), ip=IP)
    assert len(count_queries) == 1  # the miss: one query
    count_queries.clear()
    await authenticate(registered.pair(), ip=IP)
    await authenticate(registered.bearer(), ip=IP)
    assert count_queries == []
    await in_thread(services.device_revoke)(device=registered.device, actor="t", ip=None)
    count_queries.clear()
    with pytest.raises(AuthenticationFailed):
        await authenticate(registered.bearer(), ip=IP)
    assert len(count_queries) == 1


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda device: services.device_suspend(
                device=device, actor="t", ip=None, hours=1, reason="abuse"
            ),
            id="suspend",
        ),
        pytest.param(
            lambda device: services.device_set_tier(device=device, tier="paid", actor="t", ip=None),
            id="tier",
        ),
        pytest.param(
            lambda device: services.device_assign_owner(
                device=device, owner_name="acme", actor="t", ip=None
            ),
            id="owner",
        ),
    ],
)
async def test_every_change_is_seen_on_the_next_request_despite_the_cache(
    make_device: Callable[..., Registered], change: Callable[[Device], object]
) -> None:
    registered = await in_thread(make_device)("approved")
    before = await authenticate(registered.bearer(), ip=IP)
    for _ in range(2):  # trusted from the second lookup on (see below)
        await authenticate(registered.bearer(), ip=IP)
    await in_thread(change)(registered.device)
    try:
        after = await authenticate(registered.bearer(), ip=IP)
    except DeviceSuspended:
        return
    assert (after.tier, after.owner_name) != (before.tier, before.owner_name)


async def test_a_bearer_token_seen_first_is_trusted_from_its_second_lookup(
    make_device: Callable[..., Registered], count_queries: list[str]
) -> None:
    # The first lookup finds the device id in the row it read; only later
    # lookups can read the version before the row (see devices.auth).
    registered = await in_thread(make_device)("approved")
    counts = []
    for _ in range(4):
        count_queries.clear()
        await authenticate(registered.bearer(), ip=IP)
        counts.append(len(count_queries))
    assert counts == [1, 1, 0, 0]


async def test_a_cached_entry_is_reloaded_after_its_maximum_age(
    make_device: Callable[..., Registered],
    count_queries: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registered = await in_thread(make_device)("approved")
    await authenticate(registered.pair(), ip=IP)
    monkeypatch.setattr(services, "CACHE_MAX_AGE_SECONDS", 0)
    monkeypatch.setattr(auth, "CACHE_MAX_AGE_SECONDS", 0)
    count_queries.clear()
    await authenticate(registered.pair(), ip=IP)
    assert len(count_queries) == 1


@pytest.mark.production_only
async def test_redis_down_is_a_503_not_a_stale_answer(
    make_device: Callable[..., Registered], settings: Settings
) -> None:
    from tests.support.processes import free_port

    registered = await in_thread(make_device)("approved")
    await authenticate(registered.pair(), ip=IP)
    # Move the URL before dropping the client: work that authentication left
    # running (the suspicious-IP count) would otherwise make a new client on
    # the old URL.
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    await store.close_async_clients()
    with pytest.raises(StoreUnavailable) as refused:
        await authenticate(registered.pair(), ip=IP)
    assert refused.value.status == 503
