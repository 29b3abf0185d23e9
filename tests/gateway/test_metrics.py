from __future__ import annotations

import httpx
import pytest

from gateway.asgi import application
from gateway.metrics import REQUESTS


def client(peer: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=application, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


async def test_metrics_are_served_to_an_allowed_peer_in_prometheus_format():
    REQUESTS.labels("chat", "m", "p", "200").inc()
    async with client() as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'hanzo_requests_total{model="m",provider="p",route="chat",status="200"}' in response.text


@pytest.mark.parametrize("peer", ["10.1.2.3", "203.0.113.9"])
async def test_metrics_refuse_other_peers(peer):
    async with client(peer) as http:
        response = await http.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


async def test_metrics_refuse_anything_that_came_through_a_proxy():
    async with client() as http:
        response = await http.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert response.status_code == 403
