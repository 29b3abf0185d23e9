"""Routes, requests and stream helpers shared by the provider tests."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from gateway.proxy import keys, upstream
from gateway.proxy.keys import ProviderKey
from gateway.proxy.providers.base import Completion, Meter, Outbound, StreamDone, StreamEvent, Usage
from gateway.proxy.routes import SEED_ROUTES, Route
from gateway.proxy.validation import ChatRequest, parse_chat_request
from tests.fakes.provider import DEFAULT_KEYS, FakeProvider, RecordedRequest

ROUTES = {
    seed["public_name"]: Route(
        public_name=seed["public_name"],
        provider=seed["provider"],
        provider_model=seed["provider_model"],
        input_price_usd=seed["input_price_usd"],
        output_price_usd=seed["output_price_usd"],
        tiers=frozenset(
            tier
            for tier, allowed in (("free", seed["is_free_tier"]), ("paid", seed["is_paid_tier"]))
            if allowed
        ),
        created=1_750_000_000,
        has_hidden_reasoning=seed.get("has_hidden_reasoning", False),
    )
    for seed in SEED_ROUTES
}
# One route per wire format and key: OpenAI, DigitalOcean, Anthropic.
OPENAI, DIGITALOCEAN, ANTHROPIC = "openai-gpt-4o", "llama3-8b-instruct", "anthropic-claude-4-sonnet"
ONE_ROUTE_PER_PROVIDER = (OPENAI, DIGITALOCEAN, ANTHROPIC)
# What the proxy sends as the provider's end-user id (devices.tokens.end_user_id's shape).
END_USER = "0123456789abcdef0123456789abcdef"
# The fake's default answer.
TEN_TOKENS = "".join(f"tok{i} " for i in range(10))

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


def weather_tool_use(tool_id: str, city: str) -> dict[str, Any]:
    """An Anthropic ``tool_use`` block: WEATHER_TOOL called for ``city``."""
    return {"type": "tool_use", "id": tool_id, "name": "get_weather", "input": {"city": city}}


def route(name: str) -> Route:
    return ROUTES[name]


def key_for(name: str) -> ProviderKey:
    provider = ROUTES[name].provider
    return ProviderKey(provider, DEFAULT_KEYS[provider])


def chat(text: str = "Say hello", **fields: Any) -> ChatRequest:
    fields.setdefault("messages", [{"role": "user", "content": text}])
    return parse_chat_request(json.dumps({"model": "any", **fields}).encode())


async def collect(events: Any) -> tuple[list[dict[str, Any]], StreamDone]:
    chunks: list[dict[str, Any]] = []
    done = None
    async for event in events:
        if isinstance(event, StreamDone):
            done = event
        else:
            assert done is None, "chunks after the end"
            chunks.append(event)
    assert done is not None
    return chunks, done


def text_of(events: Iterable[StreamEvent]) -> str:
    """The content the chunks among ``events`` carry."""
    return "".join(
        choice["delta"].get("content") or ""
        for event in events
        if not isinstance(event, StreamDone)
        for choice in event["choices"]
    )


def point_at(fake: FakeProvider, settings: Any) -> None:
    settings.PROVIDER_BASE_URLS = {
        "openai": fake.openai_base_url,
        "digitalocean": fake.digitalocean_base_url,
        "anthropic": fake.anthropic_base_url,
    }


ProviderT = TypeVar("ProviderT", bound=FakeProvider)


@contextlib.asynccontextmanager
async def serving(fake: ProviderT, settings: Any) -> AsyncIterator[ProviderT]:
    """A provider of the test's own, with every base URL pointing at it.

    The pooled upstream clients are closed afterwards, so none keeps a
    connection to a server that is gone.
    """
    with fake:
        point_at(fake, settings)
        yield fake
        await upstream.close_clients()


@pytest.fixture(name="fake")
async def fake_fixture(provider: FakeProvider, settings: Any) -> AsyncIterator[FakeProvider]:
    """The session's fake provider, reset, with every base URL pointing at it."""
    point_at(provider, settings)
    settings.UPSTREAM_TIMEOUT_SECONDS = 10.0
    settings.UPSTREAM_CONNECT_TIMEOUT_SECONDS = 2.0
    keys.clear_cache()
    yield provider
    await upstream.close_clients()
    keys.clear_cache()


def last_request(fake: FakeProvider, name: str) -> RecordedRequest:
    """What the provider of route ``name`` last received."""
    return fake.requests_for(ROUTES[name].provider)[-1]


@dataclass(slots=True)
class Call:
    """One request to a route's provider: its exact upstream body and bounds
    (``outbound``) and what the provider may bill for it (``meter``), which
    stays readable after the request fails."""

    outbound: Outbound
    meter: Meter = field(default_factory=Meter)

    async def complete(self) -> Completion:
        key = key_for(self.outbound.route.public_name)
        return await upstream.complete(self.outbound, key=key, meter=self.meter)

    def stream(self) -> AsyncGenerator[StreamEvent, None]:
        key = key_for(self.outbound.route.public_name)
        return upstream.stream(self.outbound, key=key, meter=self.meter)

    @property
    def billed(self) -> Usage:
        """What the settlement bills: SPEC's rule, read off the meter."""
        return self.meter.usage(
            input_bound=self.outbound.input_bound,
            output_bound=self.outbound.max_tokens,
            hides_reasoning=self.outbound.route.has_hidden_reasoning,
        )

    @property
    def whole_bound(self) -> Usage:
        """The reservation's worst case, estimated: what an unseen output costs."""
        return Usage(self.outbound.input_bound, self.outbound.max_tokens, False)


def call_to(name: str, request: ChatRequest, max_tokens: int = 100) -> Call:
    """A request to route ``name`` built as the proxy builds it, not yet sent."""
    return Call(upstream.outbound(ROUTES[name], request, max_tokens=max_tokens, end_user=END_USER))


async def complete_via(name: str, request: ChatRequest, max_tokens: int = 100) -> Completion:
    """The answer only, for tests that do not look at what it costs."""
    return await call_to(name, request, max_tokens).complete()


def stream_via(
    name: str, request: ChatRequest, max_tokens: int = 100
) -> AsyncGenerator[StreamEvent, None]:
    """The events only, for tests that do not look at what the stream costs."""
    return call_to(name, request, max_tokens).stream()
