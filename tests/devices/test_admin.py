from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from devices.models import AuditEvent, Device, OwnerAccount
from tests.devices.support import Registered

if TYPE_CHECKING:
    # What Django's test client returns (a type django-stubs declares, not Django).
    from django.test.client import _MonkeyPatchedWSGIResponse as TestResponse

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/devices/device/"


def act(client: Client, action: str, *devices: Any, **fields: Any) -> TestResponse:
    data = {"action": action, "_selected_action": [device.id for device in devices], **fields}
    return client.post(CHANGELIST, data)


def status_of(registered: Registered) -> str:
    return Device.objects.get(pk=registered.id).status


def test_the_device_list_shows_status_tier_owner_and_token_prefix_never_the_hash(
    admin_client: Client, make_device: Callable[..., Registered]
) -> None:
    registered = make_device("approved", tier="paid", owner="acme")
    html = admin_client.get(CHANGELIST).content.decode()
    for expected in (
        registered.id,
        "approved",
        "paid",
        "acme",
        registered.token[:12],
        "203.0.113.7",
    ):
        assert expected in html
    assert registered.token not in html
    assert registered.device.token_hash not in html


PENDING: dict[str, Any] = {"name": "pending-one"}
PAID: dict[str, Any] = {"status": "approved", "tier": "paid", "name": "paid-one"}
LAPTOP: dict[str, Any] = {"name": "kitchen laptop", "ip": "198.51.100.23"}
PHONE: dict[str, Any] = {"name": "office phone", "ip": "192.0.2.5"}


@pytest.mark.parametrize(
    ("query", "listed", "left_out"),
    [
        ({"status": "pending_approval"}, PENDING, PAID),
        ({"tier__exact": "paid"}, PAID, PENDING),
        ({"q": "kitchen"}, LAPTOP, PHONE),
        ({"q": "198.51.100.23"}, LAPTOP, PHONE),
    ],
    ids=["filter-by-status", "filter-by-tier", "search-by-name", "search-by-ip"],
)
def test_the_list_filters_by_status_and_tier_and_searches_by_name_and_ip(
    admin_client: Client,
    make_device: Callable[..., Registered],
    query: dict[str, str],
    listed: dict[str, Any],
    left_out: dict[str, Any],
) -> None:
    shown, hidden = make_device(**listed), make_device(**left_out)
    page = admin_client.get(CHANGELIST, query).content.decode()
    assert shown.id in page and hidden.id not in page


def test_the_change_page_is_read_only_with_the_audit_trail_and_no_secret(
    admin_client: Client, make_device: Callable[..., Registered]
) -> None:
    registered = make_device("suspended")
    response = admin_client.get(f"{CHANGELIST}{registered.id}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "too many IPs" in html and "suspend" in html
    assert registered.token not in html
    assert registered.device.token_hash not in html
    assert 'name="status"' not in html and 'name="tier"' not in html


def test_devices_are_neither_added_nor_deleted_in_the_admin(
    admin_client: Client, make_device: Callable[..., Registered]
) -> None:
    registered = make_device()
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.get(f"{CHANGELIST}{registered.id}/delete/").status_code == 403


def test_approve_reject_and_revoke_actions_go_through_the_services(
    admin_client: Client, admin_user: User, make_device: Callable[..., Registered]
) -> None:
    first, second, third = make_device(), make_device(), make_device("approved")
    assert act(admin_client, "approve", first).status_code == 302
    assert act(admin_client, "reject", second).status_code == 302
    assert act(admin_client, "revoke", third).status_code == 302
    assert (status_of(first), status_of(second), status_of(third)) == (
        "approved",
        "rejected",
        "revoked",
    )
    event = AuditEvent.objects.filter(device_id=first.id, action="approve").get()
    assert (event.actor_user, event.ip) == (admin_user, "127.0.0.1")


def test_an_illegal_action_shows_the_reason_and_changes_nothing(
    admin_client: Client, make_device: Callable[..., Registered]
) -> None:
    revoked, pending = make_device("revoked"), make_device()
    response = act(admin_client, "approve", revoked, pending)
    followed = admin_client.get(response["Location"]).content.decode()
    assert "Cannot approve device" in followed and "revoked" in followed
    assert "Approved 1 device(s)." in followed
    assert (status_of(revoked), status_of(pending)) == ("revoked", "approved")


def test_suspend_asks_for_hours_and_reason_then_suspends(
    admin_client: Client, make_device: Callable[..., Registered]
) -> None:
    registered = make_device("approved")
    form = act(admin_client, "suspend", registered)
    assert form.status_code == 200
    assert 'name="hours"' in form.content.decode() and 'name="reason"' in form.content.decode()
    assert status_of(registered) == "approved"
    done = act(admin_client, "suspend", registered, apply="1", hours="1.5", reason="abuse")
    assert done.status_code == 302
    device = Device.objects.get(pk=registered.id)
    assert (device.status, device.suspension_reason) == ("suspended", "abuse")


def test_an_invalid_suspend_form_is_shown_again(
    admin_client: Client, make_device: Callable[..., Registered]
) -> None:
    registered = make_device("approved")
    response = act(admin_client, "suspend", registered, apply="1", hours="soon", reason="")
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    assert status_of(registered) == "approved"


def test_set_tier_and_assign_user_actions(
    admin_client: Client, make_device: Callable[..., Registered]
) -> None:
    registered = make_device("approved")
    assert act(admin_client, "set_tier", registered).status_code == 200
    act(admin_client, "set_tier", registered, apply="1", tier="paid")
    act(admin_client, "assign_owner", registered, apply="1", owner_name="acme")
    device = Device.objects.select_related("owner").get(pk=registered.id)
    assert device.tier == "paid"
    assert device.owner is not None and device.owner.name == "acme"
    actions = set(AuditEvent.objects.filter(device=device).values_list("action", flat=True))
    assert {"set_tier", "assign_owner"} <= actions


def test_audit_events_are_read_only(
    admin_client: Client, make_device: Callable[..., Registered]
) -> None:
    registered = make_device("approved")
    event = AuditEvent.objects.filter(device_id=registered.id).first()
    assert event is not None
    base = "/admin/devices/auditevent/"
    assert admin_client.get(base).status_code == 200
    assert admin_client.get(f"{base}add/").status_code == 403
    assert admin_client.get(f"{base}{event.pk}/delete/").status_code == 403
    page = admin_client.get(f"{base}{event.pk}/change/").content.decode()
    assert 'name="_save"' not in page
    edit = admin_client.post(f"{base}{event.pk}/change/", {"actor": "someone else"})
    assert edit.status_code == 403
    event.refresh_from_db()
    assert event.actor == "test"


def test_owner_accounts_are_listed_with_their_device_count(
    admin_client: Client, make_device: Callable[..., Registered]
) -> None:
    make_device("approved", owner="acme")
    make_device("approved", owner="acme")
    html = admin_client.get("/admin/devices/owneraccount/").content.decode()
    assert "acme" in html
    assert OwnerAccount.objects.get(name="acme").devices.count() == 2
