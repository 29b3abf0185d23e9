"""Devices and ledger rows for dashboard tests, made the way the gateway makes them."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal

from devices import services
from devices.models import Device
from usage.models import UsageRecord


def register_device(
    name: str = "Ada's laptop", *, status: str = "pending_approval"
) -> tuple[Device, str]:
    """(device, token) registered through the services, then moved to ``status``."""
    device, token = services.device_register(
        name=name, platform="macos", version="1.4.2", ip="203.0.113.7"
    )
    if status == "approved":
        device = services.device_approve(device=device, actor="test", ip=None)
    elif status == "rejected":
        device = services.device_reject(device=device, actor="test", ip=None)
    return device, token


def record_usage(
    device: Device | str,
    *,
    day: date,
    cost: str,
    model: str = "llama3.3-70b-instruct",
    provider: str = "digitalocean",
    tokens_in: int = 100,
    tokens_out: int = 50,
) -> UsageRecord:
    device_id = device if isinstance(device, str) else device.pk
    return UsageRecord.objects.create(
        request_id=f"req_{uuid.uuid4().hex}",
        device_id=device_id,
        ip="203.0.113.7",
        model=model,
        provider=provider,
        tier="free",
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=Decimal(cost),
        status=UsageRecord.Status.OK,
        budget_day=day,
        created_at=datetime.combine(day, time(12), tzinfo=UTC),
    )
