"""The streaming loop of the proxy, in process: what a running gateway cannot be made to do
on demand in a test (a store outage at the moment a long stream extends its reservation)."""

from __future__ import annotations

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from gateway import keys, upstream
from gateway.asgi import application
from gateway.routes import clear_cache, seed_routes
from gateway.store import StoreUnavailable
from tests.fakes.provider import DEFAULT_KEYS
from tests.gateway.upstream_support import point_at
from usage import limits

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token(make_device) -> str:
    seed_routes()
    return make_device("approved").token


@pytest.fixture
async def proxy(provider, settings):
    point_at(provider, settings)
    settings.SECRETS_BACKEND = "env"
    settings.PROVIDER_ENV_KEYS = dict(DEFAULT_KEYS)
    keys.clear_cache()
    clear_cache()
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client
    await upstream.close_clients()
    # Give back the connections the handler's database threads opened.
    await sync_to_async(connections.close_all)()


async def test_a_store_outage_when_a_long_stream_extends_its_reservation_does_not_cut_it(
    proxy, token, monkeypatch
):
    extended = []

    async def store_down(reservation):
        extended.append(reservation)
        raise StoreUnavailable()

    # Extend at every chunk, and fail each time.
    monkeypatch.setattr(limits, "reservation_seconds", lambda: 0.0)
    monkeypatch.setattr(limits, "extend_reservation", store_down)
    response = await proxy.post(
        "/v1/chat/completions",
        json={
            "model": "llama3-8b-instruct",
            "stream": True,
            "messages": [{"role": "user", "content": "Count [[tokens:5]]"}],
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    assert extended
    assert '"error"' not in response.text
    assert "tok4 " in response.text
    assert response.text.endswith("data: [DONE]\n\n")
