"""Device personas for every app's tests: make_device, pending_device, approved_device."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from devices import services
from tests.devices.support import Registered


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
