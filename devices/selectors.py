"""Reads of devices for views, the admin, the API and commands."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Case, CharField, Count, F, Q, QuerySet, Value, When

from devices.errors import DeviceNotFound, iso_z
from devices.models import Device
from devices.tokens import looks_like_device_id
from gateway.core import clock

Status = Device.Status


def effective_status_q(status: str, at: datetime) -> Q:
    """Devices whose effective status at ``at`` is ``status`` (see Device.effective_status)."""
    expired = Q(status=Status.SUSPENDED, suspended_until__lte=at)
    if status == Status.APPROVED:
        return Q(status=Status.APPROVED) | expired
    if status == Status.SUSPENDED:
        return Q(status=Status.SUSPENDED) & ~expired
    return Q(status=status)


def device_list(*, status: str | None = None) -> QuerySet[Device]:
    """Newest first; ``status`` is an effective status (an expired suspension is approved)."""
    devices = Device.objects.select_related("owner").order_by("-created_at")
    if status is not None:
        devices = devices.filter(effective_status_q(status, clock.utcnow()))
    return devices


def device_counts_by_status() -> dict[str, int]:
    """How many devices have each effective status now (one GROUP BY, for metrics)."""
    expired = Q(status=Status.SUSPENDED, suspended_until__lte=clock.utcnow())
    effective = Case(
        When(expired, then=Value(Status.APPROVED.value)),
        default=F("status"),
        output_field=CharField(),
    )
    rows = (
        Device.objects.annotate(effective=effective)
        .values("effective")
        .annotate(count=Count("id"))
        .order_by()
    )
    return {row["effective"]: row["count"] for row in rows}


def device_get(device_id: str) -> Device:
    """The device with this id, or DeviceNotFound (also for a malformed id)."""
    if not looks_like_device_id(device_id):
        raise DeviceNotFound()
    device = Device.objects.select_related("owner").filter(pk=device_id).first()
    if device is None:
        raise DeviceNotFound()
    return device


def device_for_token_hash(digest: str) -> Device | None:
    """The authentication lookup: one query through the unique index."""
    return Device.objects.select_related("owner").filter(token_hash=digest).first()


def device_summary(device: Device, *, at: datetime | None = None) -> dict[str, Any]:
    """The row ``list_devices --format json`` prints (SPEC section 4)."""
    at = at or clock.utcnow()
    return {
        "id": device.pk,
        "name": device.name,
        "platform": device.platform,
        "status": device.effective_status(at),
        "tier": device.tier,
        "user": device.owner.name if device.owner is not None else None,
        "ip": device.ip,
        "lastSeenAt": iso_z(device.last_seen_at) if device.last_seen_at else None,
    }


def device_detail(device: Device, *, at: datetime | None = None) -> dict[str, Any]:
    """What the admin JSON API answers: the summary plus the workflow's fields."""
    at = at or clock.utcnow()
    status = device.effective_status(at)
    is_suspended = status == Status.SUSPENDED
    return {
        **device_summary(device, at=at),
        "version": device.version,
        "registrationIp": device.registration_ip,
        "tokenPrefix": device.token_prefix,
        "createdAt": iso_z(device.created_at),
        "approvedAt": iso_z(device.approved_at) if device.approved_at else None,
        "suspendedUntil": (
            iso_z(device.suspended_until) if is_suspended and device.suspended_until else None
        ),
        "suspensionReason": device.suspension_reason if is_suspended else None,
    }
