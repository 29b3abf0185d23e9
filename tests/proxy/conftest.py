"""A running gateway in front of the fake provider, and approved devices to call it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
import openai
import pytest

from gateway.proxy.routes import seed_routes
from tests.devices.support import Registered
from tests.fakes.provider import FakeProvider
from tests.support.processes import GatewayServer, wait_for
from usage.models import UsageRecord


def provider_environment(fake: FakeProvider, **overrides: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.openai_base_url,
        "OPENAI_API_KEY": fake.keys["openai"],
        "DIGITALOCEAN_BASE_URL": fake.digitalocean_base_url,
        "DIGITALOCEAN_API_KEY": fake.keys["digitalocean"],
        "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
        "ANTHROPIC_API_KEY": fake.keys["anthropic"],
        "UPSTREAM_TIMEOUT_SECONDS": "2",
        **overrides,
    }


@dataclass
class Gateway:
    servers: list[GatewayServer]

    @property
    def url(self) -> str:
        return self.servers[0].url

    def sdk(self, token: str, server: int = 0) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.servers[server].url}/v1", api_key=token, max_retries=0, timeout=30
        )

    def chat(self, token: str, server: int = 0, **body: object) -> httpx.Response:
        body.setdefault("model", "llama3-8b-instruct")
        body.setdefault("messages", [{"role": "user", "content": "Hello there"}])
        return httpx.post(
            f"{self.servers[server].url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def logs(self) -> str:
        return "\n".join(server.log_text() for server in self.servers)


@pytest.fixture
def start_gateway(
    gateway_servers: Callable[..., list[GatewayServer]], provider: FakeProvider
) -> Callable[..., Gateway]:
    """``start_gateway(count=1, **env)``: gateways in front of the fake provider, routes seeded."""
    # The fake must see the key header the provider documents, not a fallback.
    provider.anthropic_accepts_bearer = False

    def start(count: int = 1, **env: str) -> Gateway:
        seed_routes()
        return Gateway(gateway_servers(count, **provider_environment(provider, **env)))

    return start


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway()


@pytest.fixture
def paid_token(make_device: Callable[..., Registered]) -> str:
    return make_device("approved", tier="paid").token


@pytest.fixture
def free_token(make_device: Callable[..., Registered]) -> str:
    return make_device("approved").token


def ledger(count: int, *, timeout: float = 15) -> list[UsageRecord]:
    """The usage records once ``count`` have landed (they pass through the spool first)."""
    wait_for(
        lambda: UsageRecord.objects.count() >= count, timeout=timeout, what=f"{count} usage records"
    )
    records = list(UsageRecord.objects.order_by("created_at", "id"))
    assert len(records) == count, [r.request_id for r in records]
    return records
