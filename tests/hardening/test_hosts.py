"""Host and proxy headers on the lean routes (issue 15; SPEC section 2, "Hardening",
and ``METRICS_ALLOWED_IPS``): a ``Host`` outside ``ALLOWED_HOSTS`` gets 400 on every
path, lean or Django (so a DNS-rebinding page cannot read ``/metrics`` or the API from a
browser), and ``/metrics`` refuses a request that came through a proxy, ``Forwarded``
included. Against a running gateway (``ALLOWED_HOSTS=127.0.0.1,localhost``)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from tests.proxy import conftest as proxy
from tests.proxy.conftest import Gateway, ledger

# The proxy tests' fixtures (no conftest here: the other hardening files share the directory).
start_gateway, gateway, free_token = proxy.start_gateway, proxy.gateway, proxy.free_token

CHAT = {"model": "llama3-8b-instruct", "messages": [{"role": "user", "content": "Hello"}]}
# (method, path, needs the device's token): the lean routes.
LEAN = [
    ("GET", "/v1/models", True),
    ("GET", "/metrics", False),
    ("POST", "/v1/chat/completions", True),
]
DJANGO = [
    ("GET", "/health", False),
    ("POST", "/v1/devices/register", False),
    ("GET", "/admin/login/", False),
]


def call(
    gateway: Gateway, method: str, path: str, token: str | None, **headers: str
) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    registration = {"deviceName": "x", "platform": "x", "version": "1"}
    body = CHAT if path == "/v1/chat/completions" else registration
    return httpx.request(
        method,
        f"{gateway.url}{path}",
        json=body if method == "POST" else None,
        headers=headers,
        timeout=30,
    )


def evil_hosts(gateway: Gateway) -> list[str]:
    port = urlsplit(gateway.url).port
    # A rebinding attacker's name (resolving to this server), with and without the
    # port; a name that only begins like an allowed one; an allowed one with junk.
    return [
        "evil.example",
        f"evil.example:{port}",
        "localhost.evil.example",
        "127.0.0.1@evil.example",
    ]


@pytest.mark.parametrize(("method", "path", "needs_token"), LEAN + DJANGO)
def test_a_host_outside_allowed_hosts_gets_400_on_every_path(
    gateway: Gateway,
    free_token: str,
    method: str,
    path: str,
    needs_token: bool,
) -> None:
    token = free_token if needs_token else None
    for host in evil_hosts(gateway):
        refused = call(gateway, method, path, token, Host=host)
        assert refused.status_code == 400, (host, refused.text)
        assert "hanzo_requests" not in refused.text
        if path.startswith("/v1/"):
            assert refused.json()["error"]["type"] == "invalid_request_error"
            assert refused.json()["error"]["code"] == "invalid_request"
            assert refused.headers["x-request-id"].startswith("req_")
    port = urlsplit(gateway.url).port
    served = call(gateway, method, path, token, Host=f"localhost:{port}")
    assert served.status_code in (200, 201), served.text
    if path == "/v1/chat/completions":
        assert len(ledger(1)) == 1  # only the request to the right host was served


def test_metrics_refuse_a_request_carrying_forwarded(gateway: Gateway) -> None:
    metrics = f"{gateway.url}/metrics"
    assert httpx.get(metrics).status_code == 200  # from 127.0.0.1, inside METRICS_ALLOWED_IPS
    for forwarded in ["for=127.0.0.1", 'for="[::1]";proto=http', "for=203.0.113.9"]:
        refused = httpx.get(metrics, headers={"Forwarded": forwarded})
        assert refused.status_code == 403, forwarded
        assert refused.json()["error"]["type"] == "permission_error"
        assert "hanzo_requests" not in refused.text
    assert httpx.get(metrics, headers={"forwarded": "for=127.0.0.1"}).status_code == 403
