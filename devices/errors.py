"""Refusals specific to devices, in the gateway's one error shape."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.core.errors import GatewayError, NotFound, PermissionDenied


def iso_z(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the second (SPEC's timestamp format)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DevicePendingApproval(PermissionDenied):
    code = "device_pending_approval"
    message = "This device is waiting for an administrator's approval"


class DeviceRejected(PermissionDenied):
    code = "device_rejected"
    message = "This device's registration was rejected"


class DeviceSuspended(PermissionDenied):
    code = "device_suspended"
    message = "This device is suspended"


class DeviceNotFound(NotFound):
    code = "device_not_found"
    message = "No such device"


class InvalidTransition(GatewayError):
    """A status change the workflow does not allow (rejected and revoked are final)."""

    status = 409
    code = "invalid_transition"
    message = "This change is not allowed in the device's current status"
