"""Drive-by registration and wrong methods on the device API, against a running gateway.

A web page can make its visitors' browsers POST to any origin, without a
CORS preflight, whatever a form or ``fetch(..., {mode: "no-cors"})`` may
send: ``text/plain``, form-encoded or multipart bodies. Only
``application/json`` needs a preflight, which CORS refuses to foreign
origins. So registration takes nothing else (415), and refuses before the
request counts against the IP's registration limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from devices.models import Device
from tests.devices.support import REGISTRATION
from tests.proxy.conftest import Gateway

BODY = json.dumps(REGISTRATION)
# What a page on another origin can make a browser send without a preflight.
DRIVE_BY_CONTENT_TYPES = [
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=----hanzo",
]


def register(url: str, content_type: str | None, body: str = BODY) -> httpx.Response:
    headers = {"Origin": "https://attacker.example"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return httpx.post(f"{url}/v1/devices/register", content=body, headers=headers, timeout=30)


def assert_error(response: httpx.Response, status: int, code: str, error_type: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (code, error_type)


def test_a_registration_a_web_page_could_send_is_refused_before_it_counts(
    start_gateway: Callable[..., Gateway],
) -> None:
    # A server of this test's own: its one registration slot must be unused.
    gateway = start_gateway(REGISTRATIONS_PER_IP_PER_HOUR="1", HARDENING_CASE="drive-by")
    for content_type in [*DRIVE_BY_CONTENT_TYPES, None]:
        refused = register(gateway.url, content_type)
        assert_error(refused, 415, "unsupported_media_type", "invalid_request_error")
    assert not Device.objects.exists()
    # The hour's only registration is still there for a real client.
    accepted = register(gateway.url, "application/json; charset=utf-8")
    assert accepted.status_code == 201, accepted.text
    assert Device.objects.count() == 1
    assert_error(
        register(gateway.url, "application/json"),
        429,
        "registration_rate_limit_exceeded",
        "rate_limit_error",
    )


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/usage/stats", "GET"),
        ("POST", "/v1/usage/stats", "GET"),
        ("PUT", "/v1/devices/me", "GET"),
        ("DELETE", "/v1/devices/me", "GET"),
        ("GET", "/v1/devices/register", "POST"),
        ("DELETE", "/v1/devices/register", "POST"),
    ],
)
def test_a_wrong_method_on_the_device_api_is_a_405_even_with_a_valid_token(
    gateway: Gateway, free_token: str, method: str, path: str, allowed: str
) -> None:
    response = httpx.request(
        method,
        f"{gateway.url}{path}",
        headers={"Authorization": f"Bearer {free_token}"},
        timeout=30,
    )
    assert_error(response, 405, "method_not_allowed", "invalid_request_error")
    assert response.headers["Allow"] == allowed
