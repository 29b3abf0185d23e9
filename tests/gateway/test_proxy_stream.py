"""The streaming loop of the proxy, in process: what a running gateway cannot be made to do
on demand in a test (a store outage at the moment the process's heartbeat keeps a long
stream's reservation)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import NoReturn

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from pytest_django import Settings

from gateway.asgi import application
from gateway.core.store import StoreUnavailable
from gateway.proxy import keys, upstream
from gateway.proxy.routes import clear_cache, seed_routes
from tests.devices.support import Registered
from tests.fakes.provider import DEFAULT_KEYS, FakeProvider
from tests.gateway.upstream_support import point_at
from usage import liveness
from usage.backends import get_backend

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token(make_device: Callable[..., Registered]) -> str:
    seed_routes()
    return make_device("approved").token


@pytest.fixture
async def proxy(provider: FakeProvider, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    point_at(provider, settings)
    settings.SECRETS_BACKEND = "env"
    settings.PROVIDER_ENV_KEYS = dict(DEFAULT_KEYS)
    keys.clear_cache()
    clear_cache()
    # httpx types the ASGI send()'s message as a dict; the gateway's apps take a Mapping.
    transport = httpx.ASGITransport(app=application)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client
    await upstream.close_clients()
    # Give back the connections the handler's database threads opened.
    await sync_to_async(connections.close_all)()


async def test_a_store_outage_when_the_process_beats_does_not_cut_a_long_stream(
    proxy: httpx.AsyncClient, token: str, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    beats: list[str] = []

    async def store_down(process_id: str, now: float) -> NoReturn:
        beats.append(process_id)
        raise StoreUnavailable()

    # Beat every 0.1 s while the stream runs (0.5 s), and fail each time.
    settings.RESERVATION_LIVENESS_SECONDS = 0.3
    monkeypatch.setattr(get_backend(), "heartbeat", store_down)
    response = await proxy.post(
        "/v1/chat/completions",
        json={
            "model": "llama3-8b-instruct",
            "stream": True,
            "messages": [
                {"role": "user", "content": "Count [[tokens:5]] [[fault:slow_chunks:delay=0.1]]"}
            ],
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    assert beats == [liveness.process_id()] * len(beats) and len(beats) >= 2
    assert '"error"' not in response.text
    assert "tok4 " in response.text
    assert response.text.endswith("data: [DONE]\n\n")
