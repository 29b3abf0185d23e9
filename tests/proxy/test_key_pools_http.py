"""Key pools seen over HTTP: a provider configured by its key list alone, requests taking
turns over the pool, and a revoked key that no client notices."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from pytest_django import Settings

from gateway import checks
from gateway.proxy.routes import seed_routes
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger
from tests.proxy.support import bearer

SECOND = "sk-fake-openai-pool-second-0123456789"
REVOKED = "sk-fake-openai-pool-revoked-0123456789"


def sent_keys(provider: FakeProvider) -> list[str]:
    return [
        r.headers["authorization"].removeprefix("Bearer ") for r in provider.requests_for("openai")
    ]


def test_a_provider_configured_by_its_key_list_alone_is_available_and_served(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, paid_token: str
) -> None:
    gateway = start_gateway(OPENAI_API_KEY="", OPENAI_API_KEYS=f" ,{provider.keys['openai']}")
    models = httpx.get(f"{gateway.url}/v1/models", headers=bearer(paid_token), timeout=30)
    available = {model["id"]: model["available"] for model in models.json()["data"]}
    assert available["openai-gpt-4o"] is True
    reply = gateway.chat(paid_token, model="openai-gpt-4o")
    assert reply.status_code == 200, reply.text
    assert sent_keys(provider) == [provider.keys["openai"]]
    assert [record.model for record in ledger(1)] == ["openai-gpt-4o"]


def test_requests_take_turns_over_the_pool_and_a_revoked_key_costs_no_client_an_error(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, paid_token: str
) -> None:
    provider.extra_keys["openai"] = [SECOND, REVOKED]
    provider.fail_key(REVOKED, "http_401")
    # The pool: the fake's default key, SECOND, REVOKED.
    gateway = start_gateway(OPENAI_API_KEYS=f"{SECOND},{REVOKED}")
    for _ in range(6):
        reply = gateway.chat(paid_token, model="openai-gpt-4o")
        assert reply.status_code == 200, reply.text
        assert REVOKED not in reply.text
    sent = sent_keys(provider)
    # The revoked key was refused once, then left out until the pool is refreshed.
    assert sent.count(REVOKED) == 1
    answered = [key for key in sent if key != REVOKED]
    assert len(answered) == 6
    assert {provider.keys["openai"], SECOND} == set(answered)
    assert REVOKED not in gateway.logs()
    # One record per request: the refused attempt is no second one.
    assert len(ledger(6)) == 6


@pytest.mark.django_db
def test_the_system_check_counts_a_key_list_as_a_configured_provider(settings: Settings) -> None:
    seed_routes()
    settings.PROVIDER_ENV_KEYS = {"openai": "", "anthropic": "", "digitalocean": "sk-y"}
    settings.PROVIDER_ENV_KEY_LISTS = {"openai": ["sk-x"], "anthropic": [" "], "digitalocean": []}
    [warning] = checks.providers_without_keys(databases=["default"])
    assert "No API key for anthropic:" in warning.msg
    assert "anthropic-claude-4-sonnet" in warning.msg
    assert "openai-gpt-4o" not in warning.msg


@pytest.mark.production_only  # two processes, each with its own benches
def test_a_rate_limited_key_costs_no_client_an_error_on_two_processes(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, paid_token: str
) -> None:
    provider.extra_keys["openai"] = [SECOND]
    limited = provider.keys["openai"]
    provider.fail_key(limited, "http_429", retry_after=60)
    gateway = start_gateway(2, OPENAI_API_KEYS=SECOND)
    for index in range(8):
        reply = gateway.chat(paid_token, server=index % 2, model="openai-gpt-4o")
        assert reply.status_code == 200, reply.text
    sent = sent_keys(provider)
    # Each process sent the limited key once, then benched it for its Retry-After.
    assert sent.count(limited) <= 2
    assert sent.count(SECOND) == 8
    records = ledger(8)
    assert sum(record.attempts for record in records) == len(sent)
    assert all(record.status == "ok" and record.cost_usd > 0 for record in records)
