from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from django.contrib.auth.models import User
from django.db import OperationalError
from django.test import Client

from devices.models import AuditEvent, Device
from tests.devices.support import Registered, assert_error

if TYPE_CHECKING:
    # What Django's test client returns (a type django-stubs declares, not Django).
    from django.test.client import _MonkeyPatchedWSGIResponse as TestResponse

pytestmark = pytest.mark.django_db

BASE = "/api/admin/devices"


def post(client: Client, path: str, body: dict[str, Any] | None = None) -> TestResponse:
    return client.post(f"{BASE}{path}", data=body or {}, content_type="application/json")


def test_staff_list_devices_filtered_by_status(
    staff_api: Client, make_device: Callable[..., Registered]
) -> None:
    pending = make_device()
    approved = make_device("approved", tier="paid", owner="acme")
    everything = staff_api.get(BASE)
    assert everything.status_code == 200
    assert {row["id"] for row in everything.json()["data"]} == {pending.id, approved.id}
    only_pending = staff_api.get(BASE, {"status": "pending_approval"}).json()["data"]
    assert [row["id"] for row in only_pending] == [pending.id]
    row = staff_api.get(BASE, {"status": "approved"}).json()["data"][0]
    assert row["id"] == approved.id
    assert (row["status"], row["tier"], row["user"]) == ("approved", "paid", "acme")
    assert row["tokenPrefix"] == approved.token[:12]
    assert "tokenHash" not in row and "token_hash" not in row


def test_an_unknown_status_filter_is_a_400(staff_api: Client) -> None:
    assert_error(staff_api.get(BASE, {"status": "sleeping"}), 400, "invalid_request")


def test_approving_sets_tier_and_user_and_records_who_from_where(
    staff_api: Client, make_device: Callable[..., Registered], admin_user: User
) -> None:
    device = make_device()
    response = post(staff_api, f"/{device.id}/approve", {"tier": "paid", "user": "acme"})
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["status"], body["tier"], body["user"]) == (
        device.id,
        "approved",
        "paid",
        "acme",
    )
    event = AuditEvent.objects.filter(device_id=device.id).first()
    assert event is not None
    assert (event.action, event.actor_user, event.ip) == ("approve", admin_user, "127.0.0.1")


def test_approving_without_a_body_keeps_the_tier(
    staff_api: Client, make_device: Callable[..., Registered]
) -> None:
    device = make_device()
    response = staff_api.post(f"{BASE}/{device.id}/approve", data="", content_type="")
    assert response.status_code == 200
    assert response.json()["tier"] == "free"


@pytest.mark.parametrize("body", [{"tier": "gold"}, {"user": ""}, {"user": "x" * 151}])
def test_approving_with_bad_values_is_a_400(
    staff_api: Client, make_device: Callable[..., Registered], body: dict[str, Any]
) -> None:
    device = make_device()
    assert_error(post(staff_api, f"/{device.id}/approve", body), 400, "invalid_request")
    assert Device.objects.get(pk=device.id).status == "pending_approval"


def test_reject_and_revoke(staff_api: Client, make_device: Callable[..., Registered]) -> None:
    rejected, revoked = make_device(), make_device("approved")
    assert post(staff_api, f"/{rejected.id}/reject").json()["status"] == "rejected"
    assert post(staff_api, f"/{revoked.id}/revoke").json()["status"] == "revoked"


def test_suspending_takes_fractional_hours_and_a_reason(
    staff_api: Client, make_device: Callable[..., Registered]
) -> None:
    device = make_device("approved")
    response = post(staff_api, f"/{device.id}/suspend", {"hours": 0.25, "reason": "abuse"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "suspended"
    assert body["suspensionReason"] == "abuse"
    assert body["suspendedUntil"].endswith("Z")


@pytest.mark.parametrize(
    "body",
    [
        {"hours": 0, "reason": "x"},
        {"hours": -2, "reason": "x"},
        {"hours": "soon", "reason": "x"},
        {"hours": 1},
        {"reason": "x"},
        {"hours": 1, "reason": ""},
    ],
)
def test_suspending_needs_positive_hours_and_a_reason(
    staff_api: Client, make_device: Callable[..., Registered], body: dict[str, Any]
) -> None:
    device = make_device("approved")
    assert_error(post(staff_api, f"/{device.id}/suspend", body), 400, "invalid_request")


@pytest.mark.parametrize("operation", ["approve", "reject", "revoke", "suspend"])
@pytest.mark.parametrize("device_id", ["dev_" + "x" * 22, "nonsense"])
def test_an_unknown_device_is_a_404(staff_api: Client, operation: str, device_id: str) -> None:
    body = {"hours": 1, "reason": "x"} if operation == "suspend" else None
    assert_error(post(staff_api, f"/{device_id}/{operation}", body), 404, "device_not_found")


def test_an_illegal_transition_is_a_409_with_a_reason(
    staff_api: Client, make_device: Callable[..., Registered]
) -> None:
    device = make_device("revoked")
    error = assert_error(post(staff_api, f"/{device.id}/approve"), 409, "invalid_transition")
    assert "revoked" in error["message"]


def test_without_a_login_it_is_401_and_for_non_staff_403(
    make_device: Callable[..., Registered], django_user_model: type[User]
) -> None:
    device = make_device()
    anonymous = Client()
    assert_error(anonymous.get(BASE), 401, "not_authenticated")
    assert_error(post(anonymous, f"/{device.id}/approve"), 401, "not_authenticated")
    user = django_user_model.objects.create_user("mallory", password="x" * 12)
    client = Client()
    client.force_login(user)
    assert_error(client.get(BASE), 403, "permission_denied")
    assert_error(post(client, f"/{device.id}/approve"), 403, "permission_denied")
    assert Device.objects.get(pk=device.id).status == "pending_approval"


def test_a_write_without_the_csrf_token_is_refused(
    admin_user: User, make_device: Callable[..., Registered]
) -> None:
    device = make_device()
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert_error(post(client, f"/{device.id}/approve"), 403, "permission_denied")
    assert Device.objects.get(pk=device.id).status == "pending_approval"


def test_a_database_outage_is_a_503_with_retry_after_not_a_500(
    staff_api: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(**kwargs: Any) -> NoReturn:
        raise OperationalError("connection refused")

    monkeypatch.setattr("devices.api.device_list", unreachable)
    response = staff_api.get(BASE)
    assert_error(response, 503, "service_unavailable")
    assert response["Retry-After"] == "5"
