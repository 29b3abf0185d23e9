"""Only verified staff get anything from the dashboard and the admin JSON API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from pytest_django import Settings

from billing.selectors import pause_state_get
from devices.models import AuditEvent
from tests.dashboard.support import register_device
from tests.support.staff import make_staff, verified_client

if TYPE_CHECKING:
    # What Django's test client returns (a type django-stubs declares, not Django).
    from django.test.client import _MonkeyPatchedWSGIResponse as TestResponse

pytestmark = pytest.mark.django_db


def dashboard_requests(device_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("get", "/dashboard/", {}),
        ("post", f"/dashboard/devices/{device_id}/approve", {"tier": "paid"}),
        ("post", f"/dashboard/devices/{device_id}/reject", {}),
        ("post", "/dashboard/pause", {"reason": "gotcha"}),
        ("post", "/dashboard/resume", {}),
    ]


def api_requests(device_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("get", "/api/admin/devices?status=pending_approval", {}),
        ("get", "/api/admin/devices", {}),
        ("post", f"/api/admin/devices/{device_id}/approve", {}),
        ("post", f"/api/admin/devices/{device_id}/reject", {}),
        ("post", f"/api/admin/devices/{device_id}/revoke", {}),
        ("post", f"/api/admin/devices/{device_id}/suspend", {"hours": 1, "reason": "x"}),
    ]


def callers(token: str) -> dict[str, tuple[Client, dict[str, Any]]]:
    """Each kind of caller that must be refused, with the headers it sends."""
    visitor = make_staff("visitor", is_staff=False, enrol=False)[0]
    unverified = make_staff("half-staff")[0]
    return {
        "anonymous": (Client(), {}),
        "device bearer token": (Client(), {"HTTP_AUTHORIZATION": f"Bearer {token}"}),
        "device id and token": (
            Client(),
            {"HTTP_X_DEVICE_ID": "dev_x", "HTTP_X_SESSION_TOKEN": token},
        ),
        "logged-in non-staff": (verified_client(visitor, None), {}),
        "staff without the second factor": (verified_client(unverified, None), {}),
    }


def send(
    client: Client, method: str, url: str, data: dict[str, Any], headers: dict[str, Any]
) -> TestResponse:
    if method == "get":
        return client.get(url, **headers)
    if url.startswith("/api/"):
        return client.post(url, data, content_type="application/json", **headers)
    return client.post(url, data, **headers)


def sent_by_each_caller(
    token: str, requests: list[tuple[str, str, dict[str, Any]]]
) -> Iterator[tuple[str, str, Any]]:
    """Each of ``requests`` sent by each of ``callers``: (who, url, response)."""
    for who, (client, headers) in callers(token).items():
        for method, url, data in requests:
            yield who, url, send(client, method, url, data, headers)


def test_every_dashboard_url_sends_other_callers_to_the_login_and_changes_nothing(
    settings: Settings,
) -> None:
    settings.ADMIN_REQUIRE_2FA = True
    device, token = register_device()
    for who, url, response in sent_by_each_caller(token, dashboard_requests(device.pk)):
        assert response.status_code == 302, (who, url)
        assert response["Location"].startswith("/admin/login/?next="), (who, url)
    device.refresh_from_db()
    assert device.status == "pending_approval"
    assert not pause_state_get().is_paused
    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["register"]


def test_every_admin_api_url_refuses_other_callers_and_changes_nothing(settings: Settings) -> None:
    settings.ADMIN_REQUIRE_2FA = True
    device, token = register_device()
    for who, url, response in sent_by_each_caller(token, api_requests(device.pk)):
        assert response.status_code in (401, 403), (who, url, response.status_code)
        assert response.json()["error"]["type"] in ("authentication_error", "permission_error")
    device.refresh_from_db()
    assert device.status == "pending_approval"
    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["register"]


def test_verified_staff_are_served_by_both(
    settings: Settings, staff_user: tuple[User, TOTPDevice | None]
) -> None:
    settings.ADMIN_REQUIRE_2FA = True
    user, otp_device = staff_user
    device, _ = register_device()
    client = verified_client(user, otp_device)
    assert client.get("/dashboard/").status_code == 200
    listing = client.get("/api/admin/devices?status=pending_approval")
    assert [row["id"] for row in listing.json()["data"]] == [device.pk]
