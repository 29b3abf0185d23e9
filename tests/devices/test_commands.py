from __future__ import annotations

import json
from collections.abc import Callable
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from devices.models import AuditEvent, Device
from tests.conftest import TestClock
from tests.devices.support import Registered
from tests.support.processes import manage_py

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def test_list_devices_as_json_has_the_spec_fields(make_device: Callable[..., Registered]) -> None:
    pending = make_device(name="pending-one")
    approved = make_device("approved", tier="paid", owner="acme", name="paid-one")
    rows = json.loads(run("list_devices", "--format", "json"))
    assert {row["id"] for row in rows} == {pending.id, approved.id}
    row = next(row for row in rows if row["id"] == approved.id)
    assert row == {
        "id": approved.id,
        "name": "paid-one",
        "platform": "macos",
        "status": "approved",
        "tier": "paid",
        "user": "acme",
        "ip": "203.0.113.7",
        "lastSeenAt": None,
    }


def test_list_devices_filters_by_status_and_prints_a_table(
    make_device: Callable[..., Registered],
) -> None:
    pending = make_device(name="pending-one")
    approved = make_device("approved", name="approved-one")
    rows = json.loads(run("list_devices", "--status", "pending_approval", "--format", "json"))
    assert [row["id"] for row in rows] == [pending.id]
    table = run("list_devices")
    header, *lines = table.splitlines()
    assert header.split() == [
        "id",
        "name",
        "platform",
        "status",
        "tier",
        "user",
        "ip",
        "lastSeenAt",
    ]
    assert {line.split()[0] for line in lines} == {pending.id, approved.id}


def test_an_expired_suspension_lists_as_approved(
    make_device: Callable[..., Registered], clock: TestClock
) -> None:
    registered = make_device("suspended")
    clock.advance(3 * 3600)
    assert json.loads(run("list_devices", "--status", "approved", "--format", "json"))[0]["id"] == (
        registered.id
    )
    assert json.loads(run("list_devices", "--status", "suspended", "--format", "json")) == []


def test_approve_device_with_tier_and_user(make_device: Callable[..., Registered]) -> None:
    registered = make_device()
    output = run("approve_device", registered.id, "--tier", "paid", "--user", "acme")
    assert registered.id in output and "approved" in output
    device = Device.objects.select_related("owner").get(pk=registered.id)
    assert (device.status, device.tier, device.owner and device.owner.name) == (
        "approved",
        "paid",
        "acme",
    )
    event = AuditEvent.objects.filter(device=device, action="approve").get()
    assert (event.actor, event.actor_user, event.ip) == ("command:approve_device", None, None)


def test_reject_revoke_and_suspend_device(make_device: Callable[..., Registered]) -> None:
    pending, approved, other = make_device(), make_device("approved"), make_device("approved")
    run("reject_device", pending.id)
    run("revoke_device", approved.id)
    output = run("suspend_device", other.id, "--hours", "0.5", "--reason", "too many IPs")
    assert "Suspended until" in output
    statuses = dict(Device.objects.values_list("pk", "status"))
    assert (statuses[pending.id], statuses[approved.id], statuses[other.id]) == (
        "rejected",
        "revoked",
        "suspended",
    )
    actors = set(AuditEvent.objects.values_list("actor", flat=True))
    assert {"command:reject_device", "command:revoke_device", "command:suspend_device"} <= actors


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("approve_device", "dev_" + "x" * 22), "No such device"),
        (("approve_device", "12"), "Malformed device id"),
        (("reject_device", "{revoked}"), "Cannot reject"),
        (("revoke_device", "{revoked}"), "Cannot revoke"),
        (("suspend_device", "{revoked}", "--hours", "1", "--reason", "x"), "Cannot suspend"),
        (("suspend_device", "{approved}", "--hours", "0", "--reason", "x"), "hours must be"),
        (("suspend_device", "{approved}", "--hours", "-3", "--reason", "x"), "hours must be"),
        (("suspend_device", "{approved}", "--hours", "1", "--reason", " "), "reason must be"),
        (("approve_device", "{pending}", "--user", ""), "user must be"),
    ],
)
def test_bad_input_is_a_one_line_command_error(
    make_device: Callable[..., Registered], args: tuple[str, ...], reason: str
) -> None:
    ids = {
        "revoked": make_device("revoked").id,
        "approved": make_device("approved").id,
        "pending": make_device().id,
    }
    with pytest.raises(CommandError) as refused:
        run(*(arg.format(**ids) for arg in args))
    message = str(refused.value)
    assert reason in message
    assert "\n" not in message


def test_a_pasted_token_is_not_echoed_back(make_device: Callable[..., Registered]) -> None:
    registered = make_device()
    with pytest.raises(CommandError) as refused:
        run("approve_device", registered.token)
    assert registered.token not in str(refused.value)


@pytest.mark.parametrize(
    "args",
    [
        ["approve_device", "dev_" + "x" * 22],
        ["approve_device", "x", "--tier", "gold"],
        ["suspend_device", "dev_" + "x" * 22, "--hours", "soon", "--reason", "x"],
        ["list_devices", "--status", "sleeping"],
    ],
)
def test_from_the_shell_bad_input_exits_non_zero_without_a_traceback(
    args: list[str], transactional_db: None
) -> None:
    from tests.conftest import gateway_environment

    result = manage_py(*args, env=gateway_environment())
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip()
