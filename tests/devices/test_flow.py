"""The device workflow over HTTP, against running gateway processes."""

from __future__ import annotations

import json
from collections.abc import Callable
from io import StringIO
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from django.core.management import call_command
from django.test import Client

from devices.models import AuditEvent, Device
from tests.conftest import TestClock
from tests.devices.support import REGISTRATION, Registered
from tests.support.processes import GatewayServer, free_port, unreachable_database_url

if TYPE_CHECKING:
    # What Django's test client returns (a type django-stubs declares, not Django).
    from django.test.client import _MonkeyPatchedWSGIResponse as TestResponse


def register(server: GatewayServer) -> tuple[str, str]:
    response = httpx.post(f"{server.url}/v1/devices/register", json=REGISTRATION)
    assert response.status_code == 201, response.text
    body = response.json()
    return body["deviceId"], body["sessionToken"]


def register_pending(server: GatewayServer) -> tuple[str, str]:
    """A new device, refused until it is approved: its id and session token."""
    device_id, token = register(server)
    error = error_of(me(server, token), 403, "device_pending_approval")
    assert error["type"] == "permission_error"
    return device_id, token


def me(server: GatewayServer, token: str | None = None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(f"{server.url}/v1/devices/me", headers=headers, timeout=30)


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    return error


def command(*args: str) -> str:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def test_a_new_device_is_refused_until_the_approve_command(
    gateway_servers: Callable[..., list[GatewayServer]],
) -> None:
    (server,) = gateway_servers()
    device_id, token = register_pending(server)
    command("approve_device", device_id, "--tier", "paid")
    response = me(server, token)
    assert response.status_code == 200
    assert response.json() == {"id": device_id, "status": "approved", "tier": "paid"}


def test_a_new_device_is_refused_until_the_admin_approves_it(
    gateway_servers: Callable[..., list[GatewayServer]], admin_client: Client
) -> None:
    (server,) = gateway_servers()
    device_id, token = register_pending(server)
    response = admin_client.post(
        "/admin/devices/device/", {"action": "approve", "_selected_action": [device_id]}
    )
    assert response.status_code == 302
    assert me(server, token).status_code == 200


def test_a_new_device_is_refused_until_the_json_api_approves_it(
    gateway_servers: Callable[..., list[GatewayServer]], staff_api: Client
) -> None:
    (server,) = gateway_servers()
    device_id, token = register_pending(server)
    response = staff_api.post(
        f"/api/admin/devices/{device_id}/approve",
        data={"user": "acme"},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert me(server, token).json()["status"] == "approved"


def test_a_suspension_refuses_with_until_and_reason_then_ends_by_itself(
    gateway_servers: Callable[..., list[GatewayServer]], clock: TestClock
) -> None:
    (server,) = gateway_servers()
    device_id, token = register(server)
    command("approve_device", device_id)
    assert me(server, token).status_code == 200
    command("suspend_device", device_id, "--hours", "1.5", "--reason", "unusual traffic")
    until = Device.objects.get(pk=device_id).suspended_until
    assert until is not None
    error = error_of(me(server, token), 403, "device_suspended")
    assert error["suspendedUntil"] == until.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert error["reason"] == "unusual traffic"
    clock.advance(1.5 * 3600 - 60)
    error_of(me(server, token), 403, "device_suspended")
    clock.advance(61)
    response = me(server, token)
    assert response.status_code == 200
    assert response.json()["status"] == "approved"


def test_a_revoked_device_is_refused_on_its_very_next_request(
    gateway_servers: Callable[..., list[GatewayServer]],
) -> None:
    (server,) = gateway_servers()
    device_id, token = register(server)
    command("approve_device", device_id)
    for _ in range(3):  # the third is served from the process's cache
        assert me(server, token).status_code == 200
    command("revoke_device", device_id)
    error = error_of(me(server, token), 401, "invalid_credentials")
    assert error["type"] == "authentication_error"


@pytest.mark.production_only
def test_a_revoke_is_honoured_at_once_by_every_gateway_process(
    gateway_servers: Callable[..., list[GatewayServer]],
) -> None:
    servers = gateway_servers(count=2)
    device_id, token = register(servers[0])
    command("approve_device", device_id)
    for server in servers:
        for _ in range(3):
            assert me(server, token).status_code == 200
    command("revoke_device", device_id)
    for server in servers:
        error_of(me(server, token), 401, "invalid_credentials")


def test_both_header_styles_work_and_foreign_or_mismatched_credentials_are_401(
    gateway_servers: Callable[..., list[GatewayServer]],
) -> None:
    (server,) = gateway_servers()
    mine_id, mine = register(server)
    other_id, _ = register(server)
    command("approve_device", mine_id)
    command("approve_device", other_id)
    assert me(server, mine).status_code == 200
    assert me(server, **{"X-Device-ID": mine_id, "X-Session-Token": mine}).status_code == 200
    refusals = [
        me(server, **{"X-Device-ID": other_id, "X-Session-Token": mine}),
        me(server, mine, **{"X-Device-ID": other_id}),
        me(server, Authorization=f"Basic {mine}"),
        me(server, **{"X-Session-Token": mine}),
        me(server),
    ]
    messages = {error_of(response, 401, "invalid_credentials")["message"] for response in refusals}
    assert len(messages) == 1  # one generic message whatever the reason


def test_an_openai_client_authenticates_with_the_token_as_its_api_key(
    gateway_servers: Callable[..., list[GatewayServer]],
) -> None:
    (server,) = gateway_servers()
    device_id, token = register(server)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.get("/devices/me", cast_to=object)
    assert refused.value.code == "device_pending_approval"
    command("approve_device", device_id)
    assert client.get("/devices/me", cast_to=object) == {
        "id": device_id,
        "status": "approved",
        "tier": "free",
    }
    stranger = openai.OpenAI(base_url=f"{server.url}/v1", api_key="hzt_" + "0" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.get("/devices/me", cast_to=object)


def test_the_token_and_its_hash_appear_nowhere_but_the_registration_response(
    gateway_servers: Callable[..., list[GatewayServer]],
    admin_client: Client,
    staff_api: Client,
    clock: TestClock,
) -> None:
    (server,) = gateway_servers()
    device_id, token = register(server)
    digest = Device.objects.get(pk=device_id).token_hash
    seen: list[str] = []

    def keep(response: httpx.Response | TestResponse) -> None:
        headers = response.headers.items()  # both httpx's and Django's responses have .headers
        seen.append(f"{response.status_code} {list(headers)} {response.content.decode()}")

    keep(me(server, token))  # pending
    seen.append(command("approve_device", device_id, "--user", "acme", "--tier", "paid"))
    keep(me(server, token))
    keep(me(server, **{"X-Device-ID": device_id, "X-Session-Token": token}))
    keep(me(server, **{"X-Device-ID": "dev_" + "x" * 22, "X-Session-Token": token}))
    keep(
        staff_api.post(
            f"/api/admin/devices/{device_id}/suspend",
            data={"hours": 1, "reason": "check"},
            content_type="application/json",
        )
    )
    keep(me(server, token))  # suspended
    keep(staff_api.get("/api/admin/devices"))
    keep(admin_client.get("/admin/devices/device/"))
    keep(admin_client.get(f"/admin/devices/device/{device_id}/change/"))
    keep(admin_client.get("/admin/devices/auditevent/"))
    seen.append(command("list_devices"))
    seen.append(command("list_devices", "--format", "json"))
    seen.append(command("revoke_device", device_id))
    keep(me(server, token))  # revoked
    seen.append(json.dumps(list(AuditEvent.objects.values()), default=str))
    seen.append(server.log_text())
    everything = "\n".join(seen)
    assert device_id in everything  # the haystack is real
    assert token not in everything
    assert token[4:] not in everything
    assert digest not in everything


def test_a_database_outage_on_a_cache_miss_is_a_503_not_a_500(
    gateway_servers: Callable[..., list[GatewayServer]],
) -> None:
    (server,) = gateway_servers(DATABASE_URL=unreachable_database_url())
    response = me(server, "hzt_" + "0" * 43)
    error_of(response, 503, "service_unavailable")
    assert response.headers["Retry-After"]


@pytest.mark.production_only
def test_a_redis_outage_is_a_503_not_a_500(
    gateway_servers: Callable[..., list[GatewayServer]], make_device: Callable[..., Registered]
) -> None:
    (server,) = gateway_servers(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    registered = make_device("approved")
    response = me(server, **registered.pair())
    error_of(response, 503, "service_unavailable")
    assert response.headers["Retry-After"]
    # Registration counts against the per-IP limit in Redis: it fails closed too.
    refused = httpx.post(
        f"{server.url}/v1/devices/register",
        json={"deviceName": "x", "platform": "y", "version": "1"},
        timeout=30,
    )
    error_of(refused, 503, "service_unavailable")


def test_last_seen_is_kept_in_memory_and_written_at_shutdown(
    gateway_servers: Callable[..., list[GatewayServer]],
) -> None:
    (server,) = gateway_servers(DEVICES_TEST_SERVER="stopped-by-this-test")
    device_id, token = register(server)
    command("approve_device", device_id)
    assert me(server, token).status_code == 200
    assert Device.objects.get(pk=device_id).last_seen_at is None  # no write per request
    server.stop()
    device = Device.objects.get(pk=device_id)
    assert device.last_seen_at is not None
    assert device.last_ip == "127.0.0.1"
