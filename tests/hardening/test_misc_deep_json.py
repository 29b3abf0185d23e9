"""JSON nested deeper than 64 levels is a 400 on every JSON body, not only the chat's.

The review sent ``POST /api/admin/devices/<id>/suspend`` a few thousand
nested arrays and got a 500 (the standard library's parser ran out of
stack); a hundred levels in a field the view ignores were accepted.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from django.conf import settings
from django.utils.crypto import get_random_string

from devices.models import AuditEvent, Device
from tests.devices.support import REGISTRATION, Registered
from tests.proxy.conftest import Gateway
from tests.support.staff import make_staff, verified_client


def nested(depth: int, **fields: object) -> str:
    """A JSON object ``depth`` levels deep: ``fields`` plus a ``padding`` of nested arrays."""
    arrays = depth - 1
    return json.dumps(fields)[:-1] + ', "padding": ' + "[" * arrays + "]" * arrays + "}"


def staff_session() -> dict[str, str]:
    """Headers of a superuser's browser past the second factor, CSRF token included."""
    user, otp_device = make_staff("ops", for_servers=True)
    user.is_superuser = True
    user.save()
    session = verified_client(user, otp_device).cookies[settings.SESSION_COOKIE_NAME].value
    csrf = get_random_string(32)
    return {
        "Cookie": f"{settings.SESSION_COOKIE_NAME}={session}; {settings.CSRF_COOKIE_NAME}={csrf}",
        "X-CSRFToken": csrf,
        "Content-Type": "application/json",
    }


def suspend(gateway: Gateway, device: Device, body: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/api/admin/devices/{device.pk}/suspend",
        content=body,
        headers=staff_session(),
        timeout=30,
    )


@pytest.mark.parametrize("depth", [65, 1000, 5000])
def test_the_admin_api_refuses_json_nested_too_deep_and_changes_nothing(
    gateway: Gateway, make_device: Callable[..., Registered], depth: int
) -> None:
    device = make_device("approved").device
    audited = AuditEvent.objects.filter(device=device).count()
    response = suspend(gateway, device, nested(depth, hours=2, reason="abuse"))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("invalid_request", "invalid_request_error")
    device.refresh_from_db()
    assert device.status == Device.Status.APPROVED
    assert AuditEvent.objects.filter(device=device).count() == audited


def test_the_admin_api_takes_json_64_levels_deep(
    gateway: Gateway, make_device: Callable[..., Registered]
) -> None:
    device = make_device("approved").device
    response = suspend(gateway, device, nested(64, hours=2, reason="abuse"))
    assert response.status_code == 200, response.text
    device.refresh_from_db()
    assert device.status == Device.Status.SUSPENDED


@pytest.mark.parametrize(("depth", "status"), [(64, 201), (65, 400), (5000, 400)])
def test_registration_refuses_json_nested_deeper_than_64_levels(
    start_gateway: Callable[..., Gateway], depth: int, status: int
) -> None:
    # Room for every registration the session's other tests make from 127.0.0.1.
    gateway = start_gateway(REGISTRATIONS_PER_IP_PER_HOUR="100000")
    response = httpx.post(
        f"{gateway.url}/v1/devices/register",
        content=nested(depth, **REGISTRATION),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == status, response.text
    assert Device.objects.count() == (1 if status == 201 else 0)
