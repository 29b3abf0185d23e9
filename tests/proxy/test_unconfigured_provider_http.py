"""A provider without a key is not the client's problem: its models are marked
unavailable and refused with 503 before admission (no quota, no record)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from django.core import checks as django_checks
from pytest_django import Settings

from gateway import checks
from gateway.proxy.routes import seed_routes
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger
from tests.proxy.support import assert_refused, bearer, chat_body, post, remaining


@pytest.fixture
def without_openai(start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway(OPENAI_API_KEY="")


def test_models_of_a_provider_without_a_key_are_listed_as_unavailable(
    without_openai: Gateway, paid_token: str
) -> None:
    response = httpx.get(f"{without_openai.url}/v1/models", headers=bearer(paid_token), timeout=30)
    assert response.status_code == 200
    available = {model["id"]: model["available"] for model in response.json()["data"]}
    assert available["openai-gpt-4o"] is False
    assert available["openai-gpt-5"] is False
    assert available["llama3-8b-instruct"] is True
    assert available["anthropic-claude-4-sonnet"] is True


def test_a_model_without_a_key_answers_503_before_admission_and_costs_nothing(
    without_openai: Gateway, paid_token: str, provider: FakeProvider
) -> None:
    before = remaining(without_openai, paid_token)
    upstream_calls = len(provider.requests)
    for stream in (False, True):
        response = post(
            without_openai, chat_body(model="openai-gpt-4o", stream=stream), token=paid_token
        )
        error = assert_refused(response, 503, "provider_not_configured")
        assert "openai-gpt-4o" in error["message"]
        assert "sk-" not in response.text
    assert len(provider.requests) == upstream_calls
    assert remaining(without_openai, paid_token) == before
    # The usual refusals still come first: a bad body is a 400, not a 503.
    assert_refused(post(without_openai, b"{", token=paid_token), 400, "invalid_request")
    # A model whose provider has its key is served, and it is the only record.
    assert post(without_openai, chat_body(), token=paid_token).status_code == 200
    assert [record.model for record in ledger(1)] == ["llama3-8b-instruct"]


@pytest.mark.django_db
def test_the_system_check_names_the_models_whose_provider_has_no_key(settings: Settings) -> None:
    seed_routes()
    settings.PROVIDER_ENV_KEYS = {"openai": "sk-x", "anthropic": "", "digitalocean": "sk-y"}
    warnings = checks.providers_without_keys(databases=["default"])
    assert [warning.id for warning in warnings] == ["hanzo.W006"]
    assert isinstance(warnings[0], django_checks.Warning)
    assert "anthropic-claude-4-sonnet" in warnings[0].msg
    assert "openai-gpt-4o" not in warnings[0].msg
    # Not before every management command: only when a database is named.
    assert checks.providers_without_keys() == []
    settings.PROVIDER_ENV_KEYS = {"openai": "sk-x", "anthropic": "sk-z", "digitalocean": "sk-y"}
    assert checks.providers_without_keys(databases=["default"]) == []
    assert checks.providers_without_keys() == []
