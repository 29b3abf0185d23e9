"""Personas and helpers for device tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from django.db.backends.utils import CursorWrapper
from django.test import Client

from devices import activity, auth, services
from gateway import store
from tests.devices.support import Registered


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:  # type: ignore[no-untyped-def]
    # Staff logins are set up in many tests; PBKDF2's cost buys nothing here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _empty_device_caches() -> Iterator[None]:
    auth.clear_cache()
    activity.take()
    # gateway.store keys its asyncio clients by id(loop); every test (and every
    # async view the Django test client runs) has its own short-lived loop, so
    # a later loop may reuse a dead one's id. Forget them between tests.
    store._async_clients.clear()
    yield
    auth.clear_cache()
    activity.take()
    store._async_clients.clear()


@pytest.fixture
def make_device() -> Callable[..., Registered]:
    """``make_device(status="approved", tier="paid", owner="acme")`` through the services."""

    def make(
        status: str = "pending_approval",
        *,
        tier: str | None = None,
        owner: str | None = None,
        name: str = "Ada's laptop",
        ip: str = "203.0.113.7",
    ) -> Registered:
        device, token = services.device_register(
            name=name, platform="macos", version="1.4.2", ip=ip
        )
        if tier is not None:
            device = services.device_set_tier(device=device, tier=tier, actor="test", ip=None)
        if owner is not None:
            device = services.device_assign_owner(
                device=device, owner_name=owner, actor="test", ip=None
            )
        if status == "rejected":
            device = services.device_reject(device=device, actor="test", ip=None)
        elif status != "pending_approval":
            device = services.device_approve(device=device, actor="test", ip=None)
        if status == "suspended":
            device = services.device_suspend(
                device=device, actor="test", ip=None, hours=2, reason="too many IPs"
            )
        elif status == "revoked":
            device = services.device_revoke(device=device, actor="test", ip=None)
        return Registered(device=device, token=token)

    return make


@pytest.fixture
def pending_device(make_device: Callable[..., Registered]) -> Registered:
    return make_device()


@pytest.fixture
def approved_device(make_device: Callable[..., Registered]) -> Registered:
    return make_device("approved")


@pytest.fixture
def count_queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement run from now on, on any thread (sync_to_async included)."""
    statements: list[str] = []
    original = CursorWrapper._execute_with_wrappers

    def counting(self, sql, params, many, executor):  # type: ignore[no-untyped-def]
        statements.append(sql)
        return original(self, sql, params, many, executor)

    monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", counting)
    return statements


@pytest.fixture
def staff_api(admin_user) -> Client:  # type: ignore[no-untyped-def]
    """A staff session that must send its CSRF token, like a browser."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    client.get("/admin/")  # sets the csrftoken cookie
    client.defaults["HTTP_X_CSRFTOKEN"] = client.cookies["csrftoken"].value
    return client


@pytest.fixture
async def fresh_store_clients() -> AsyncIterator[None]:
    """Closes this test's asyncio Redis clients: each async test has its own event loop."""
    yield
    await store.close_async_clients()
