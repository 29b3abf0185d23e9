from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from pytest_django import Settings

from devices.models import AuditEvent, Device
from devices.tokens import token_hash
from gateway.asgi import application
from gateway.core.errors import RateLimited
from tests.conftest import TestClock
from tests.devices.support import REGISTRATION, Registered, assert_error
from usage import guard

if TYPE_CHECKING:
    # What Django's test client returns (a type django-stubs declares, not Django).
    from django.test.client import _MonkeyPatchedWSGIResponse as TestResponse

pytestmark = pytest.mark.django_db

URL = "/v1/devices/register"


class RegistrationLimited(RateLimited):  # stands in for usage.guard's refusal
    code = "registration_rate_limit_exceeded"


def post(client: Client, body: object, **extra: Any) -> TestResponse:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(URL, data=data, content_type="application/json", **extra)


def test_registering_answers_201_with_the_id_and_the_token_shown_once(client: Client) -> None:
    response = post(client, REGISTRATION)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"deviceId", "sessionToken", "status", "message"}
    assert body["status"] == "pending_approval"
    assert re.fullmatch(r"hzt_[A-Za-z0-9_-]{43}", body["sessionToken"])
    device = Device.objects.get(pk=body["deviceId"])
    assert (device.name, device.platform, device.version) == ("Ada's laptop", "macos", "1.4.2")
    assert device.token_hash == token_hash(body["sessionToken"])
    assert device.registration_ip == "127.0.0.1"
    assert AuditEvent.objects.filter(device=device, action="register").exists()


def test_fields_a_client_should_not_set_are_ignored(client: Client) -> None:
    response = post(
        client,
        {
            **REGISTRATION,
            "status": "approved",
            "tier": "paid",
            "deviceId": "dev_mine",
            "owner": "x",
        },
    )
    assert response.status_code == 201
    device = Device.objects.get(pk=response.json()["deviceId"])
    assert (device.status, device.tier, device.owner) == ("pending_approval", "free", None)
    assert device.pk != "dev_mine"


def test_registering_again_creates_another_pending_device_and_never_reveals_a_token(
    client: Client,
) -> None:
    first = post(client, REGISTRATION).json()
    second = post(client, REGISTRATION).json()
    assert first["deviceId"] != second["deviceId"]
    assert first["sessionToken"] != second["sessionToken"]
    assert Device.objects.filter(status="pending_approval").count() == 2


def test_each_field_may_be_255_characters(client: Client) -> None:
    body = {key: "x" * 255 for key in REGISTRATION}
    assert post(client, body).status_code == 201


@pytest.mark.parametrize("field", ["deviceName", "platform", "version"])
@pytest.mark.parametrize(
    "value",
    [None, "", "x" * 256, 42, ["a"], {"a": 1}, True, "nul\x00byte", "line\nbreak"],
    ids=repr,
)
def test_each_field_must_be_a_string_of_1_to_255_printable_characters(
    client: Client, field: str, value: object
) -> None:
    response = post(client, {**REGISTRATION, field: value})
    error = assert_error(response, 400, "invalid_request")
    assert error["type"] == "invalid_request_error"
    assert field in error["message"]
    assert not Device.objects.exists()


@pytest.mark.parametrize("field", ["deviceName", "platform", "version"])
def test_a_missing_field_is_a_400(client: Client, field: str) -> None:
    body = {key: value for key, value in REGISTRATION.items() if key != field}
    assert_error(post(client, body), 400, "invalid_request")


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", '"text"', "null", "", "\xff"])
def test_a_body_that_is_not_a_json_object_is_a_400(client: Client, body: str) -> None:
    # CONTENT_TYPE given outright: the test client sends none with an empty body.
    assert_error(post(client, body, CONTENT_TYPE="application/json"), 400, "invalid_request")


def test_a_body_over_the_size_cap_is_a_413(settings: Settings) -> None:
    """Through the ASGI application, whose body limit (gateway.proxy.bodies) is the one there is."""
    settings.MAX_REQUEST_BYTES = 200

    async def register(body: dict[str, str]) -> httpx.Response:
        # httpx types the ASGI send()'s message as a dict; the gateway's apps take a Mapping.
        transport = httpx.ASGITransport(app=application)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as asgi:
            return await asgi.post(URL, json=body)

    response = async_to_sync(register)({**REGISTRATION, "padding": "x" * 300})
    assert_error(response, 413, "request_too_large")
    assert not Device.objects.exists()


def test_only_post_is_allowed(client: Client) -> None:
    assert_error(client.get(URL), 405, "method_not_allowed")


def test_the_per_ip_registration_limit_is_asked_first_with_the_client_ip(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    async def admit(ip: str) -> None:
        asked.append(ip)
        if len(asked) > 1:
            raise RegistrationLimited(retry_after=3600)

    monkeypatch.setattr(guard, "admit_registration", admit)
    assert post(client, REGISTRATION).status_code == 201
    response = post(client, REGISTRATION)
    assert_error(response, 429, "registration_rate_limit_exceeded")
    assert response["Retry-After"] == "3600"
    assert asked == ["127.0.0.1", "127.0.0.1"]
    assert Device.objects.count() == 1


def test_forwarded_addresses_count_only_behind_a_trusted_proxy(
    client: Client, settings: Settings
) -> None:
    spoofed = post(client, REGISTRATION, HTTP_X_FORWARDED_FOR="192.0.2.1")
    assert Device.objects.get(pk=spoofed.json()["deviceId"]).registration_ip == "127.0.0.1"
    settings.TRUSTED_PROXIES = ["127.0.0.1/32"]
    proxied = post(client, REGISTRATION, HTTP_X_FORWARDED_FOR="192.0.2.1")
    assert Device.objects.get(pk=proxied.json()["deviceId"]).registration_ip == "192.0.2.1"


def test_me_answers_the_devices_own_record_once_approved(
    client: Client, make_device: Callable[..., Registered]
) -> None:
    pending = make_device()
    assert_error(
        client.get("/v1/devices/me", headers=pending.bearer()), 403, "device_pending_approval"
    )
    approved = make_device("approved", tier="paid")
    response = client.get("/v1/devices/me", headers=approved.pair())
    assert response.status_code == 200
    assert response.json() == {"id": approved.id, "status": "approved", "tier": "paid"}
    assert_error(client.get("/v1/devices/me"), 401, "invalid_credentials")


def test_registrations_past_the_hourly_limit_per_ip_are_refused_with_retry_after(
    client: Client, settings: Settings, clock: TestClock
) -> None:
    settings.REGISTRATIONS_PER_IP_PER_HOUR = 2
    assert post(client, REGISTRATION).status_code == 201
    assert post(client, REGISTRATION).status_code == 201
    refused = post(client, REGISTRATION)
    assert_error(refused, 429, "registration_rate_limit_exceeded")
    # The window is sub-bucketed: a slot frees at most one bucket (60 s) after an hour.
    assert 3500 < int(refused["Retry-After"]) <= 3600 + 60
    assert Device.objects.count() == 2
    other_ip = post(client, REGISTRATION, REMOTE_ADDR="198.51.100.7")
    assert other_ip.status_code == 201
    clock.advance(3600 + 60)
    assert post(client, REGISTRATION).status_code == 201
