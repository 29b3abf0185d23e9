"""What a warm request costs before it reaches the provider (DESIGN.md, "The hot path")."""

from __future__ import annotations

import httpx
import pytest
from django.db.backends.utils import CursorWrapper

from gateway import lifecycle, proxy, store
from gateway.asgi import application
from gateway.redis_pipe import PipelinedRedis
from gateway.routes import seed_routes
from tests.proxy.conftest import provider_environment

pytestmark = [pytest.mark.production_only, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def counted(monkeypatch):
    """Redis commands and SQL statements, and how many had run when the provider was called."""
    seen = {"redis": [], "sql": [], "at_upstream": []}
    execute = PipelinedRedis.execute

    async def counting_execute(self, *args):
        seen["redis"].append(str(args[0]))
        return await execute(self, *args)

    original_sql = CursorWrapper._execute_with_wrappers

    def counting_sql(self, sql, params, many, executor):
        seen["sql"].append(sql)
        return original_sql(self, sql, params, many, executor)

    forward = proxy.complete_with_key_retry

    async def marking_forward(*args, **kwargs):
        seen["at_upstream"].append((len(seen["redis"]), len(seen["sql"])))
        return await forward(*args, **kwargs)

    monkeypatch.setattr(PipelinedRedis, "execute", counting_execute)
    monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", counting_sql)
    monkeypatch.setattr(proxy, "complete_with_key_retry", marking_forward)
    return seen


async def test_a_warm_request_makes_two_redis_round_trips_and_no_query_before_the_upstream(
    provider, make_device, settings, counted
):
    from asgiref.sync import sync_to_async

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
    transport = httpx.ASGITransport(app=application, client=("203.0.113.5", 5000))
    body = {"model": "openai-gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {registered.token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        for _ in range(3):
            # The previous request's settlement runs beside its response: let
            # it land so this request's window counts only its own commands.
            await lifecycle._drain_background()
            before = (len(counted["redis"]), len(counted["sql"]))
            response = await client.post("/v1/chat/completions", json=body, headers=headers)
            assert response.status_code == 200, response.text
    redis_at, sql_at = counted["at_upstream"][-1]
    warm_redis = counted["redis"][before[0] : redis_at]
    assert warm_redis == ["MGET", "EVALSHA"], warm_redis
    assert sql_at == before[1], counted["sql"][before[1] : sql_at]
    await store.close_async_clients()
