"""Issue 15 over HTTP: a client cannot choose the address the gateway counts it under.

Exactly one forwarded header is believed (``CLIENT_IP_HEADER``), only from
``TRUSTED_PROXIES``; an entry that is not an address ends the walk; and no
server the project can be started under rewrites the client address itself.
Each attack rotates the address a client claims and tries to register past
``REGISTRATIONS_PER_IP_PER_HOUR``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import gateway_environment
from tests.ops.test_gunicorn import start_gunicorn
from tests.support.processes import GatewayServer, manage_py, start_gateway

LIMIT = {"REGISTRATIONS_PER_IP_PER_HOUR": "2"}
BEHIND_LOOPBACK_PROXY = {"TRUSTED_PROXIES": "127.0.0.1/32", **LIMIT}


def register(url: str, headers: dict[str, str]) -> int:
    response = httpx.post(
        f"{url}/v1/devices/register",
        json={"deviceName": "spoofer", "platform": "linux", "version": "1"},
        headers=headers,
        timeout=30,
    )
    return response.status_code


def rotating(url: str, header: str, values: list[str], **fixed: str) -> list[int]:
    return [register(url, {header: value, **fixed}) for value in values]


SPOOFS = [f"198.51.100.{n}" for n in range(1, 5)]


def test_behind_a_proxy_that_sets_x_real_ip_a_clients_forwarded_for_is_not_believed(
    gateway_servers: Callable[..., list[GatewayServer]],
) -> None:
    (server,) = gateway_servers(1, CLIENT_IP_HEADER="X-Real-IP", **BEHIND_LOOPBACK_PROXY)
    # The proxy says who the client is; the client adds an X-Forwarded-For of its choosing.
    statuses = rotating(server.url, "X-Forwarded-For", SPOOFS, **{"X-Real-IP": "203.0.113.50"})
    assert statuses == [201, 201, 429, 429]
    # Another client of the proxy has its own count.
    assert register(server.url, {"X-Real-IP": "203.0.113.51"}) == 201


def test_an_entry_that_is_not_an_address_ends_the_walk(
    gateway_servers: Callable[..., list[GatewayServer]],
) -> None:
    (server,) = gateway_servers(1, **BEHIND_LOOPBACK_PROXY)
    # The proxy could not tell who the client is ("unknown"): what is left of
    # it is the client's own claim, never believed.
    statuses = rotating(server.url, "X-Forwarded-For", [f"{s}, unknown" for s in SPOOFS])
    assert statuses == [201, 201, 429, 429]


def test_a_plain_uvicorn_with_its_proxy_headers_on_does_not_let_clients_pick_an_address(
    transactional_db: None,
) -> None:
    # `uvicorn gateway.asgi:application`, forgetting --no-proxy-headers: uvicorn
    # trusts X-Forwarded-For from loopback peers, and TRUSTED_PROXIES is empty.
    server = start_gateway(gateway_environment(**LIMIT), proxy_headers=True)
    try:
        statuses = rotating(server.url, "X-Forwarded-For", SPOOFS)
        assert statuses == [201, 201, 429, 429]
        assert "started with proxy headers on" in server.log_text()
    finally:
        server.stop()


def test_gunicorn_with_any_uvicorn_worker_does_not_let_clients_pick_an_address(
    transactional_db: None,
) -> None:
    # uvicorn-worker's own class, not the project's: gunicorn.conf.py still
    # tells it to trust no one's X-Forwarded-For.
    env = gateway_environment(**LIMIT)
    process, url = start_gunicorn(env, worker_class="uvicorn_worker.UvicornWorker", workers=1)
    try:
        assert rotating(url, "X-Forwarded-For", SPOOFS) == [201, 201, 429, 429]
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.parametrize("trusted", ["", "10.0.0.0/8"])
def test_check_deploy_flags_a_server_told_to_trust_forwarded_headers(trusted: str) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE",) and not key.startswith("PYTEST_")
    }
    env.update(FORWARDED_ALLOW_IPS="*", TRUSTED_PROXIES=trusted, SECRET_KEY="x" * 50)
    result = manage_py("check", "--deploy", env=env)
    flagged = "hanzo.W005" in result.stdout + result.stderr
    assert flagged is (trusted == "")
