"""CORS on the lean endpoints over HTTP, answered as django-cors-headers answers Django's."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.proxy.conftest import Gateway, ledger
from tests.proxy.support import bearer, chat_body

APP = "https://app.hanzo.ai"
LEAN = ["/v1/chat/completions", "/v1/models"]
CORS_NAMES = (
    "access-control-allow-origin",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-max-age",
    "access-control-expose-headers",
)


def preflight(url: str, origin: str, method: str = "POST") -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
        },
        timeout=30,
    )


def cors(response: httpx.Response) -> dict[str, str]:
    return {name: response.headers[name] for name in CORS_NAMES if name in response.headers}


@pytest.mark.parametrize("path", LEAN)
@pytest.mark.parametrize("origin", [APP, "tauri://localhost"])
def test_a_preflight_from_an_allowed_origin_is_answered_like_djangos(
    gateway: Gateway, path: str, origin: str
) -> None:
    response = preflight(f"{gateway.url}{path}", origin)
    assert response.status_code == 200
    headers = cors(response)
    assert headers["access-control-allow-origin"] == origin
    allowed = {name.strip() for name in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-stainless-os", "x-device-id"} <= allowed
    assert "POST" in headers["access-control-allow-methods"]
    assert int(headers["access-control-max-age"]) > 0
    # Django (django-cors-headers) answers the same preflight on its own /v1 paths.
    django = preflight(f"{gateway.url}/v1/usage/stats", origin, "GET")
    assert django.status_code == 200
    assert headers == cors(django)


def test_real_responses_carry_the_origin_and_expose_the_gateways_headers(
    gateway: Gateway, free_token: str
) -> None:
    origin = {"Origin": APP}
    answered = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=chat_body(),
        headers={**bearer(free_token), **origin},
        timeout=30,
    )
    refused = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=chat_body(), headers=origin, timeout=30
    )
    streamed = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=chat_body(stream=True),
        headers={**bearer(free_token), **origin},
        timeout=30,
    )
    listed = httpx.get(
        f"{gateway.url}/v1/models", headers={**bearer(free_token), **origin}, timeout=30
    )
    assert [r.status_code for r in (answered, refused, streamed, listed)] == [200, 401, 200, 200]
    for response in (answered, refused, streamed, listed):
        assert response.headers["access-control-allow-origin"] == APP
        exposed = response.headers["access-control-expose-headers"].lower()
        for name in ("x-request-id", "retry-after", "x-ratelimit-remaining-device"):
            assert name in exposed
        assert "origin" in response.headers["vary"].lower()
    assert "x-request-cost-usd" in answered.headers["access-control-expose-headers"].lower()
    assert len(ledger(2)) == 2


@pytest.mark.parametrize("path", LEAN)
def test_a_foreign_origin_gets_no_cors_headers(
    gateway: Gateway, free_token: str, path: str
) -> None:
    foreign = "https://evil.example"
    assert "access-control-allow-origin" not in preflight(f"{gateway.url}{path}", foreign).headers
    method = httpx.post if path.endswith("completions") else httpx.get
    kwargs: dict[str, Any] = {"json": chat_body()} if method is httpx.post else {}
    response = method(
        f"{gateway.url}{path}",
        headers={**bearer(free_token), "Origin": foreign},
        timeout=30,
        **kwargs,
    )
    assert response.status_code == 200
    assert not cors(response)
    if method is httpx.post:
        assert len(ledger(1)) == 1
