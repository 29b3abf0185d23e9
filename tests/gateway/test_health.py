from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from django.conf import settings
from django.test import Client

from gateway import __version__
from tests.support.processes import GatewayServer, free_port, unreachable_database_url


def test_health_reports_healthy_and_the_version(client: Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "version": __version__}
    assert response["X-Request-ID"].startswith("req_")


@pytest.mark.django_db
def test_ready_reports_each_configured_dependency(client: Client) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200
    expected_redis = "ok" if settings.REDIS_URL else "not configured"
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "redis": expected_redis},
    }


def test_a_running_gateway_serves_health_over_http(
    gateway_servers: Callable[..., list[GatewayServer]],
) -> None:
    (server,) = gateway_servers()
    response = httpx.get(f"{server.url}/health")
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"
    ready = httpx.get(f"{server.url}/health/ready")
    assert ready.status_code == 200, ready.text


def test_ready_is_503_when_the_database_is_down(
    gateway_servers: Callable[..., list[GatewayServer]],
) -> None:
    (server,) = gateway_servers(DATABASE_URL=unreachable_database_url())
    response = httpx.get(f"{server.url}/health/ready", timeout=30)
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["checks"]["database"] == "down"


@pytest.mark.production_only
def test_ready_is_503_when_redis_is_down(
    gateway_servers: Callable[..., list[GatewayServer]],
) -> None:
    (server,) = gateway_servers(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    response = httpx.get(f"{server.url}/health/ready", timeout=30)
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "redis": "down"}
