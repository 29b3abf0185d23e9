from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn

import pytest
from django.contrib.auth.models import User
from pytest_django import DjangoCaptureOnCommitCallbacks

from devices import services
from devices.errors import InvalidTransition
from devices.models import AuditEvent, Device, OwnerAccount
from devices.signals import device_registered
from devices.tokens import token_hash
from gateway.core import clock
from gateway.core.errors import InvalidRequest
from gateway.core.store import read_versions
from tests.conftest import TestClock
from tests.devices.support import Registered, in_thread

pytestmark = pytest.mark.django_db

ACTIONS = {
    "approve": lambda device: services.device_approve(device=device, actor="test", ip=None),
    "reject": lambda device: services.device_reject(device=device, actor="test", ip=None),
    "suspend": lambda device: services.device_suspend(
        device=device, actor="test", ip=None, hours=1, reason="abuse"
    ),
    "revoke": lambda device: services.device_revoke(device=device, actor="test", ip=None),
    "set_tier": lambda device: services.device_set_tier(
        device=device, tier="paid", actor="test", ip=None
    ),
    "assign_owner": lambda device: services.device_assign_owner(
        device=device, owner_name="acme", actor="test", ip=None
    ),
}

# (status before, action) -> status after, or None when the workflow refuses it.
WORKFLOW = {
    ("pending_approval", "approve"): "approved",
    ("pending_approval", "reject"): "rejected",
    ("pending_approval", "suspend"): None,
    ("pending_approval", "revoke"): "revoked",
    ("pending_approval", "set_tier"): "pending_approval",
    ("pending_approval", "assign_owner"): "pending_approval",
    ("approved", "approve"): None,
    ("approved", "reject"): None,
    ("approved", "suspend"): "suspended",
    ("approved", "revoke"): "revoked",
    ("approved", "set_tier"): "approved",
    ("suspended", "approve"): "approved",
    ("suspended", "reject"): None,
    ("suspended", "suspend"): "suspended",
    ("suspended", "revoke"): "revoked",
    ("rejected", "approve"): None,
    ("rejected", "suspend"): None,
    ("rejected", "revoke"): None,
    ("rejected", "set_tier"): None,
    ("revoked", "approve"): None,
    ("revoked", "revoke"): None,
    ("revoked", "assign_owner"): None,
}


@pytest.mark.parametrize(("before", "action"), list(WORKFLOW))
def test_the_workflow_allows_only_its_transitions(
    make_device: Callable[..., Registered], before: str, action: str
) -> None:
    device = make_device(before).device
    events_before = AuditEvent.objects.filter(device=device).count()
    expected = WORKFLOW[(before, action)]
    if expected is None:
        with pytest.raises(InvalidTransition) as refused:
            ACTIONS[action](device)
        assert refused.value.status == 409
        assert device.pk in refused.value.detail
        device.refresh_from_db()
        assert device.status == before
        assert AuditEvent.objects.filter(device=device).count() == events_before
    else:
        assert ACTIONS[action](device).status == expected
        device.refresh_from_db()
        assert device.status == expected
        assert AuditEvent.objects.filter(device=device).count() == events_before + 1


def test_registration_stores_only_the_keyed_hash_and_a_display_prefix() -> None:
    device, token = services.device_register(
        name="Ada's laptop", platform="macos", version="1.0", ip="203.0.113.7"
    )
    stored = Device.objects.get(pk=device.pk)
    assert stored.status == "pending_approval" and stored.tier == "free"
    assert stored.token_hash == token_hash(token)
    assert stored.token_prefix == token[:12]
    values = [str(value) for value in Device.objects.filter(pk=device.pk).values().get().values()]
    assert token not in values
    assert all(token not in value for value in values)


def test_registering_twice_creates_two_pending_devices_with_different_tokens() -> None:
    first = services.device_register(name="a", platform="p", version="1", ip="203.0.113.7")
    second = services.device_register(name="a", platform="p", version="1", ip="203.0.113.7")
    assert first[0].pk != second[0].pk
    assert first[1] != second[1]


def test_the_new_device_signal_is_sent_once_on_commit(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    received = []

    def receiver(sender: object, device: Device, **kwargs: Any) -> None:
        received.append(device.pk)

    device_registered.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            device, _ = services.device_register(
                name="a", platform="p", version="1", ip="203.0.113.7"
            )
        assert received == []  # not before the commit
        for callback in callbacks:
            callback()
        assert received == [device.pk]
    finally:
        device_registered.disconnect(receiver)


def test_a_failing_new_device_receiver_does_not_fail_the_registration(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    def broken(sender: object, device: Device, **kwargs: Any) -> NoReturn:
        raise ConnectionError("slack is down")

    device_registered.connect(broken)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            device, _ = services.device_register(
                name="a", platform="p", version="1", ip="203.0.113.7"
            )
        assert Device.objects.filter(pk=device.pk).exists()
    finally:
        device_registered.disconnect(broken)


def test_every_change_is_audited_with_actor_ip_time_and_before_after(
    make_device: Callable[..., Registered], admin_user: User
) -> None:
    device = make_device().device
    services.device_approve(
        device=device, actor=admin_user, ip="198.51.100.4", tier="paid", owner_name="acme"
    )
    event = AuditEvent.objects.filter(device=device).first()
    assert event is not None
    assert event.action == "approve"
    assert event.actor == admin_user.username and event.actor_user == admin_user
    assert event.ip == "198.51.100.4"
    assert abs((event.created_at - clock.utcnow()).total_seconds()) < 60
    assert event.changes == {
        "status": {"before": "pending_approval", "after": "approved"},
        "tier": {"before": "free", "after": "paid"},
        "owner": {"before": None, "after": "acme"},
    }
    device.refresh_from_db()
    assert device.approved_by == admin_user and device.approved_at is not None
    register_event = AuditEvent.objects.filter(device=device, action="register").get()
    assert register_event.actor == "client" and register_event.ip == "203.0.113.7"


def test_a_command_actor_is_recorded_by_name_without_a_user(
    make_device: Callable[..., Registered],
) -> None:
    device = make_device().device
    services.device_reject(device=device, actor="command:reject_device", ip=None)
    event = AuditEvent.objects.filter(device=device, action="reject").get()
    assert (event.actor, event.actor_user, event.ip) == ("command:reject_device", None, None)


def test_a_change_to_the_same_value_writes_nothing(make_device: Callable[..., Registered]) -> None:
    device = make_device("approved", tier="paid").device
    count = AuditEvent.objects.count()
    services.device_set_tier(device=device, tier="paid", actor="test", ip=None)
    assert AuditEvent.objects.count() == count


def test_assigning_an_owner_creates_the_account_once_and_can_remove_it(
    make_device: Callable[..., Registered],
) -> None:
    first = make_device("approved").device
    second = make_device("approved").device
    services.device_assign_owner(device=first, owner_name="acme", actor="test", ip=None)
    services.device_assign_owner(device=second, owner_name=" acme ", actor="test", ip=None)
    owner = OwnerAccount.objects.get()
    assert owner.name == "acme"
    assert set(owner.devices.values_list("pk", flat=True)) == {first.pk, second.pk}
    services.device_assign_owner(device=first, owner_name=None, actor="test", ip=None)
    first.refresh_from_db()
    assert first.owner is None


def test_a_suspension_lasts_the_given_hours_fractions_included(
    make_device: Callable[..., Registered],
) -> None:
    device = make_device("approved").device
    before = clock.utcnow()
    suspended = services.device_suspend(
        device=device, actor="test", ip=None, hours=Decimal("0.5"), reason="abuse"
    )
    assert suspended.suspended_until is not None
    length = suspended.suspended_until - before
    assert timedelta(minutes=30) <= length <= timedelta(minutes=30, seconds=2)
    assert suspended.suspended_until.microsecond == 0
    assert suspended.suspension_reason == "abuse"


@pytest.mark.parametrize("hours", [0, -1, "abc", float("nan"), float("inf"), 10**9, True])
def test_a_suspension_needs_a_positive_sensible_number_of_hours(
    make_device: Callable[..., Registered], hours: Any
) -> None:
    device = make_device("approved").device
    with pytest.raises(InvalidRequest):
        services.device_suspend(device=device, actor="test", ip=None, hours=hours, reason="x")


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501, "bad\x00reason"])
def test_a_suspension_needs_a_printable_reason(
    make_device: Callable[..., Registered], reason: str
) -> None:
    device = make_device("approved").device
    with pytest.raises(InvalidRequest):
        services.device_suspend(device=device, actor="test", ip=None, hours=1, reason=reason)


def test_an_unknown_tier_is_refused(make_device: Callable[..., Registered]) -> None:
    with pytest.raises(InvalidRequest):
        services.device_set_tier(device=make_device().device, tier="gold", actor="t", ip=None)


def test_approving_a_suspended_device_lifts_the_suspension(
    make_device: Callable[..., Registered],
) -> None:
    device = make_device("suspended").device
    approved = services.device_approve(device=device, actor="test", ip=None)
    assert approved.status == "approved"
    assert approved.suspended_until is None and approved.suspension_reason == ""
    event = AuditEvent.objects.filter(device=device).first()
    assert event is not None and event.changes["status"] == {
        "before": "suspended",
        "after": "approved",
    }
    assert event.changes["suspension_reason"]["after"] is None


def test_an_expired_suspension_has_ended_and_housekeeping_records_it_once(
    make_device: Callable[..., Registered], clock: TestClock
) -> None:
    device = make_device("suspended").device
    assert device.effective_status(clock_now()) == "suspended"
    assert services.device_end_expired_suspensions() == 0
    clock.advance(2 * 3600 + 1)
    assert device.effective_status(clock_now()) == "approved"
    assert services.device_end_expired_suspensions() == 1
    assert services.device_end_expired_suspensions() == 0
    device.refresh_from_db()
    assert device.status == "approved" and device.suspended_until is None
    event = AuditEvent.objects.filter(device=device).first()
    assert event is not None
    assert (event.action, event.actor) == ("suspension_ended", "system")


def test_an_expired_suspension_counts_as_approved_for_the_workflow(
    make_device: Callable[..., Registered], clock: TestClock
) -> None:
    device = make_device("suspended").device
    clock.advance(2 * 3600 + 1)
    with pytest.raises(InvalidTransition):
        services.device_approve(device=device, actor="test", ip=None)
    assert services.device_suspend(
        device=device, actor="test", ip=None, hours=1, reason="again"
    ).status == ("suspended")


@pytest.mark.django_db(transaction=True)
async def test_a_committed_change_bumps_the_device_version(
    make_device_async: Callable[..., Awaitable[Registered]], fresh_store_clients: None
) -> None:
    registered = await make_device_async("approved")
    before = await read_versions(registered.id)
    await _revoke(registered.device)
    assert await read_versions(registered.id) != before


def test_activity_never_moves_last_seen_backwards(make_device: Callable[..., Registered]) -> None:
    device = make_device("approved").device
    now = clock.utcnow()
    services.device_record_activity(seen={device.pk: (now, "198.51.100.1")})
    services.device_record_activity(seen={device.pk: (now - timedelta(minutes=1), "10.0.0.1")})
    device.refresh_from_db()
    assert (device.last_seen_at, device.last_ip) == (now, "198.51.100.1")
    assert device.ip == "198.51.100.1"


def clock_now() -> datetime:
    return clock.utcnow()


async def _revoke(device: Device) -> None:
    await in_thread(services.device_revoke)(device=device, actor="test", ip=None)


@pytest.fixture
def make_device_async(
    make_device: Callable[..., Registered],
) -> Callable[..., Awaitable[Registered]]:
    return in_thread(make_device)
