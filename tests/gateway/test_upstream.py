"""The upstream client against the fake provider (real HTTP): what each provider
receives, and answers and streams translated back, for every kind of route."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from pytest_django import Settings

from gateway.proxy.providers.base import Usage
from tests.fakes.provider import FakeProvider
from tests.gateway.upstream_support import (
    ANTHROPIC,
    DIGITALOCEAN,
    ONE_ROUTE_PER_PROVIDER,
    OPENAI,
    TEN_TOKENS,
    WEATHER_TOOL,
    call_to,
    chat,
    collect,
    fake_fixture,  # noqa: F401  (the ``fake`` fixture)
    route,
    serving,
    text_of,
    weather_tool_use,
)
from tests.gateway.upstream_support import complete_via as complete
from tests.gateway.upstream_support import last_request as received
from tests.gateway.upstream_support import stream_via as stream
from tests.support.wire import OPENAI_CHAT_FIELDS, weather_tool_round_trip

# What each wire format may carry upstream; anything else would be a leak of
# an unknown client parameter.
OPENAI_FIELDS = set(OPENAI_CHAT_FIELDS)
ANTHROPIC_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "stream",
    "temperature",
    "top_p",
    "stop_sequences",
    "tools",
    "tool_choice",
    "metadata",
}


# --- what each provider receives ------------------------------------------------


async def test_openai_receives_its_bearer_key_its_model_id_and_max_completion_tokens(
    fake: FakeProvider,
) -> None:
    await complete(OPENAI, chat(logit_bias={"5": 1}, store=True, temperature=0.2), 77)
    request = received(fake, OPENAI)
    assert request.path == "/openai/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {fake.keys['openai']}"
    assert "x-api-key" not in request.headers
    assert request.body["model"] == "gpt-4o"
    assert request.body["max_completion_tokens"] == 77
    assert "max_tokens" not in request.body
    assert request.body["temperature"] == 0.2
    assert set(request.body) <= OPENAI_FIELDS


async def test_digitalocean_receives_its_own_key_and_max_tokens(fake: FakeProvider) -> None:
    await complete(DIGITALOCEAN, chat(metadata={"x": 1}), 55)
    request = received(fake, DIGITALOCEAN)
    assert request.path == "/do/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {fake.keys['digitalocean']}"
    assert request.body["model"] == "llama3-8b-instruct"
    assert request.body["max_tokens"] == 55
    assert "max_completion_tokens" not in request.body
    assert set(request.body) <= OPENAI_FIELDS


async def test_anthropic_receives_x_api_key_version_system_on_top_and_stop_sequences(
    fake: FakeProvider,
) -> None:
    request = chat(
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "Say hello"},
        ],
        stop=["tok3"],
        temperature=1.7,
        presence_penalty=1,
        seed=3,
    )
    answer = await complete(ANTHROPIC, request, 64)
    sent = received(fake, ANTHROPIC)
    assert sent.path == "/anthropic/v1/messages"
    assert sent.headers["x-api-key"] == fake.keys["anthropic"]
    assert "authorization" not in sent.headers
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body["model"] == "claude-sonnet-4-20250514"
    assert sent.body["max_tokens"] == 64
    assert sent.body["system"] == "You are terse.\n\nAnswer in English."
    assert sent.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Say hello"}]}
    ]
    assert sent.body["stop_sequences"] == ["tok3"]
    assert sent.body["temperature"] == 1.0
    assert set(sent.body) <= ANTHROPIC_FIELDS
    choice = answer.body["choices"][0]
    assert choice["message"]["content"] == "tok0 tok1 tok2 "
    assert choice["finish_reason"] == "stop"


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_the_body_sent_is_exactly_the_one_the_input_bound_was_computed_from(
    fake: FakeProvider, name: str
) -> None:
    answered, streamed = call_to(name, chat()), call_to(name, chat(stream=True))
    await answered.complete()
    await collect(streamed.stream())
    received_pair = fake.requests_for(route(name).provider)[-2:]
    for call, sent in zip((answered, streamed), received_pair, strict=True):
        assert sent.body == json.loads(call.outbound.body)
        assert int(sent.headers["content-length"]) == len(call.outbound.body)
        assert "transfer-encoding" not in sent.headers


class CookieProvider(FakeProvider):
    """Sets a cookie on every answer, as providers behind Cloudflare do."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        response = await super()._handle(request)
        response.set_cookie("__cf_bm", "provider-session-cookie")
        return response


@pytest.fixture
async def cookie_provider(settings: Settings) -> AsyncIterator[CookieProvider]:
    async with serving(CookieProvider(), settings) as provider:
        yield provider


async def test_a_cookie_the_provider_sets_is_never_sent_back(
    cookie_provider: CookieProvider,
) -> None:
    for _ in range(3):
        await complete(OPENAI, chat())
    sent = cookie_provider.requests_for("openai")
    assert len(sent) == 3
    assert all("cookie" not in request.headers for request in sent)


# --- non-streamed answers ------------------------------------------------------------


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_completion_comes_back_in_openai_shape_with_the_public_name_and_usage_metered(
    fake: FakeProvider, name: str
) -> None:
    sent = call_to(name, chat("one two three"))
    answer = await sent.complete()
    body = answer.body
    assert body["object"] == "chat.completion"
    assert body["model"] == name
    assert body["choices"][0]["message"] == {**body["choices"][0]["message"], "role": "assistant"}
    assert body["choices"][0]["message"]["content"] == TEN_TOKENS
    assert body["choices"][0]["finish_reason"] == "stop"
    # The fake counts words plus 3 per message; the proxy adds "usage" at settlement.
    assert sent.billed == Usage(6, 10, True)
    assert "usage" not in body


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_hitting_max_tokens_is_finish_reason_length(fake: FakeProvider, name: str) -> None:
    sent = call_to(name, chat("hello [[tokens:50]]"), max_tokens=5)
    answer = await sent.complete()
    assert answer.body["choices"][0]["finish_reason"] == "length"
    assert sent.billed.tokens_out == 5


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_tool_call_comes_back_as_openai_tool_calls(fake: FakeProvider, name: str) -> None:
    answer = await complete(name, chat("weather? [[tool:get_weather]]", tools=[WEATHER_TOOL]))
    choice = answer.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "tok", "days": 1}
    assert call["id"]


async def test_anthropic_receives_tools_and_a_tool_round_trip_as_its_own_blocks(
    fake: FakeProvider,
) -> None:
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "rain"}]},
    ]
    request = chat(messages=messages, tools=[WEATHER_TOOL], tool_choice="required")
    answer = await complete(ANTHROPIC, request)
    sent = received(fake, ANTHROPIC).body
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert sent["tool_choice"] == {"type": "any"}
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                weather_tool_use("toolu_1", "Paris"),
                weather_tool_use("toolu_2", "Lyon"),
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "rain"},
            ],
        },
    ]
    assert answer.body["choices"][0]["message"]["content"] == TEN_TOKENS


async def test_openai_receives_tools_and_the_tool_round_trip_unchanged(fake: FakeProvider) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        *weather_tool_round_trip(),
    ]
    await complete(OPENAI, chat(messages=messages, tools=[WEATHER_TOOL], tool_choice="auto"))
    sent = received(fake, OPENAI).body
    assert sent["messages"] == messages
    assert sent["tools"] == [WEATHER_TOOL]
    assert sent["tool_choice"] == "auto"


# --- streams ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_stream_yields_openai_chunks_then_a_usage_chunk_of_the_reported_usage(
    fake: FakeProvider, name: str
) -> None:
    sent = call_to(name, chat("one two three", stream=True))
    chunks, done = await collect(sent.stream())
    assert text_of(chunks) == TEN_TOKENS
    assert {chunk["model"] for chunk in chunks} == {name}
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert sent.billed == Usage(6, 10, True)
    assert done.model == name
    usage_chunk = done.usage_chunk(sent.billed, 0.000123)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 6,
        "completion_tokens": 10,
        "total_tokens": 16,
        "cost_usd": 0.000123,
    }


@pytest.mark.parametrize("name", (OPENAI, DIGITALOCEAN))
async def test_openai_compatible_streams_always_ask_for_usage(
    fake: FakeProvider, name: str
) -> None:
    await collect(stream(name, chat(stream=True)))
    assert received(fake, name).body["stream_options"] == {"include_usage": True}
    assert received(fake, name).body["stream"] is True


async def test_anthropic_stream_output_usage_is_the_last_cumulative_count_not_a_sum(
    fake: FakeProvider,
) -> None:
    # message_start reports output_tokens 1, message_delta the total (10):
    # summing would give 11.
    sent = call_to(ANTHROPIC, chat(stream=True))
    await collect(sent.stream())
    assert sent.billed.tokens_out == 10
    assert received(fake, ANTHROPIC).body["stream"] is True


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_streamed_tool_call_arrives_as_tool_call_deltas(
    fake: FakeProvider, name: str
) -> None:
    sent = call_to(name, chat("weather? [[tool:get_weather]]", tools=[WEATHER_TOOL], stream=True))
    chunks, _ = await collect(sent.stream())
    deltas = [
        call
        for chunk in chunks
        for choice in chunk["choices"]
        for call in choice["delta"].get("tool_calls") or ()
    ]
    assert deltas[0]["id"] and deltas[0]["function"]["name"] == "get_weather"
    assert {delta["index"] for delta in deltas} == {0}
    arguments = "".join(delta["function"].get("arguments") or "" for delta in deltas)
    assert json.loads(arguments) == {"city": "tok", "days": 1}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert sent.billed.is_reported
    # Seen output, should the usage be lost: the tool's name and its arguments.
    assert sent.meter.output_bytes == len("get_weather") + len(arguments)


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_stop_sequence_ends_a_stream_with_finish_reason_stop(
    fake: FakeProvider, name: str
) -> None:
    chunks, _ = await collect(stream(name, chat("go", stop="tok2", stream=True)))
    assert text_of(chunks) == "tok0 tok1 "
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
