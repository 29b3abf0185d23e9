"""What a warm request costs before it reaches the provider (DESIGN.md, "The hot path")."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db.backends.utils import CursorWrapper
from pytest_django import Settings

from devices import services
from gateway.asgi import application
from gateway.core import lifecycle, store
from gateway.core.redis_pipe import Arg, PipelinedRedis
from gateway.proxy import endpoints as proxy
from gateway.proxy import upstream
from gateway.proxy.providers.base import Completion
from gateway.proxy.routes import seed_routes
from tests.devices.support import Registered
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import provider_environment
from usage import guard
from usage.models import BlockedNetwork

pytestmark = [pytest.mark.production_only, pytest.mark.django_db(transaction=True)]

# Posts a chat completion as the warm device (keyword arguments: httpx.post's).
Poster = Callable[..., Awaitable[httpx.Response]]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Redis commands and SQL statements, and how many had run when the provider was called."""
    seen: dict[str, list[Any]] = {"redis": [], "sql": [], "at_upstream": []}
    execute = PipelinedRedis.execute

    async def counting_execute(self: PipelinedRedis, *args: Arg) -> Any:
        seen["redis"].append(str(args[0]))
        return await execute(self, *args)

    # A private method of Django's, absent from django-stubs.
    original_sql = CursorWrapper._execute_with_wrappers  # type: ignore[attr-defined]

    def counting_sql(
        self: CursorWrapper, sql: str, params: Any, many: bool, executor: Callable[..., Any]
    ) -> Any:
        seen["sql"].append(sql)
        return original_sql(self, sql, params, many, executor)

    forward = upstream.complete

    async def marking_forward(*args: Any, **kwargs: Any) -> Completion:
        seen["at_upstream"].append((len(seen["redis"]), len(seen["sql"])))
        return await forward(*args, **kwargs)

    monkeypatch.setattr(PipelinedRedis, "execute", counting_execute)
    monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", counting_sql)
    monkeypatch.setattr(proxy, "complete", marking_forward)
    return seen


CLIENT_IP = "203.0.113.5"
BODY = {"model": "openai-gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def warm(
    provider: FakeProvider, make_device: Callable[..., Registered], settings: Settings
) -> AsyncIterator[tuple[Registered, Poster]]:
    """An approved device whose caches are warm (two requests made), and a poster."""
    for name, value in provider_environment(provider).items():
        if name.endswith("_BASE_URL"):
            settings.PROVIDER_BASE_URLS = {
                **settings.PROVIDER_BASE_URLS,
                name.removesuffix("_BASE_URL").lower(): value,
            }
    settings.PROVIDER_ENV_KEYS = {
        "openai": provider.keys["openai"],
        "anthropic": provider.keys["anthropic"],
        "digitalocean": provider.keys["digitalocean"],
    }
    await sync_to_async(seed_routes)()
    registered = await sync_to_async(make_device)("approved", tier="paid")
    # httpx types the ASGI send()'s message as a dict; the gateway's apps take a Mapping.
    transport = httpx.ASGITransport(app=application, client=(CLIENT_IP, 5000))  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {registered.token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:

        async def post(**kwargs: Any) -> httpx.Response:
            # The previous request's settlement runs after its response: let
            # it land so each request's window counts only its own commands.
            await lifecycle._drain_background()
            kwargs.setdefault("json", BODY)
            return await client.post("/v1/chat/completions", headers=headers, **kwargs)

        for _ in range(2):  # a bearer token's first answer is not trusted (devices.auth)
            assert (await post()).status_code == 200
        yield registered, post
    await lifecycle._drain_background()
    await store.close_async_clients()
    # The pooled provider sessions belong to this test's event loop.
    await upstream.close_clients()


async def test_a_warm_request_makes_one_redis_round_trip_and_no_query_before_the_upstream(
    warm: tuple[Registered, Poster], counted: dict[str, list[Any]]
) -> None:
    _registered, post = warm
    await lifecycle._drain_background()
    before = (len(counted["redis"]), len(counted["sql"]))
    assert (await post()).status_code == 200
    redis_at, sql_at = counted["at_upstream"][-1]
    # The admission script confirms the cached view itself (usage.limits.Expectation).
    assert counted["redis"][before[0] : redis_at] == ["EVALSHA"]
    assert sql_at == before[1], counted["sql"][before[1] : sql_at]


def _revoke(registered: Registered, settings: Settings) -> None:
    services.device_revoke(device=registered.device, actor="test", ip=None)


def _suspend(registered: Registered, settings: Settings) -> None:
    services.device_suspend(
        device=registered.device, actor="test", ip=None, hours=1, reason="testing"
    )


def _block_network(registered: Registered, settings: Settings) -> None:
    BlockedNetwork.objects.create(cidr="203.0.113.0/24", reason="testing")


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        (_revoke, 401, "invalid_credentials"),
        (_suspend, 403, "device_suspended"),
        (_block_network, 403, "ip_blocked"),
    ],
)
async def test_a_change_after_the_caches_filled_is_honoured_on_the_very_next_request(
    warm: tuple[Registered, Poster],
    provider: FakeProvider,
    settings: Settings,
    change: Callable[[Registered, Settings], None],
    status: int,
    code: str,
) -> None:
    registered, post = warm
    upstream_calls = len(provider.requests)
    await sync_to_async(change)(registered, settings)
    response = await post()
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert len(provider.requests) == upstream_calls


async def test_an_address_blocked_after_the_caches_filled_is_refused_even_with_a_bad_body(
    warm: tuple[Registered, Poster], provider: FakeProvider, settings: Settings
) -> None:
    _registered, post = warm
    settings.AUTH_FAILURES_PER_IP_PER_HOUR = 1
    while not await _is_blocked():
        await guard.record_auth_failure(CLIENT_IP)
    upstream_calls = len(provider.requests)
    for kwargs in ({}, {"content": b"not json"}):
        response = await post(**kwargs)
        assert (response.status_code, response.json()["error"]["code"]) == (403, "ip_blocked")
    assert len(provider.requests) == upstream_calls


async def _is_blocked() -> bool:
    return any(block.ip == CLIENT_IP for block in await sync_to_async(guard.list_ip_blocks)())
