"""The upstream client against the fake provider: real HTTP, every route kind, every fault."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from gateway import keys, upstream
from gateway.providers.base import (
    NO_USAGE,
    UpstreamAuthRejected,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRejected,
    UpstreamTimeout,
)
from gateway.validation import estimate_input_tokens
from tests.fakes.provider import DEFAULT_KEYS, FakeProvider
from tests.gateway.upstream_support import (
    ANTHROPIC,
    DIGITALOCEAN,
    ONE_ROUTE_PER_PROVIDER,
    OPENAI,
    WEATHER_TOOL,
    chat,
    collect,
    key_for,
    point_at,
    route,
    text_of,
)


@pytest.fixture
async def fake(provider, settings):
    """The session's fake provider, reset, with every base URL pointing at it."""
    point_at(provider, settings)
    settings.UPSTREAM_TIMEOUT_SECONDS = 10.0
    settings.UPSTREAM_CONNECT_TIMEOUT_SECONDS = 2.0
    keys.clear_cache()
    yield provider
    await upstream.close_clients()
    keys.clear_cache()


TEN_TOKENS = "".join(f"tok{i} " for i in range(10))
# What each wire format may carry upstream; anything else would be a leak of
# an unknown client parameter.
OPENAI_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "response_format",
    "user",
}
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


def received(fake, name):
    return fake.requests_for(route(name).provider)[-1]


async def complete(name, request, max_tokens=100):
    return await upstream.complete(route(name), request, key=key_for(name), max_tokens=max_tokens)


def stream(name, request, max_tokens=100):
    return upstream.stream(route(name), request, key=key_for(name), max_tokens=max_tokens)


# --- what each provider receives ------------------------------------------------


async def test_openai_receives_its_bearer_key_its_model_id_and_max_completion_tokens(fake):
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


async def test_digitalocean_receives_its_own_key_and_max_tokens(fake):
    await complete(DIGITALOCEAN, chat(metadata={"x": 1}), 55)
    request = received(fake, DIGITALOCEAN)
    assert request.path == "/do/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {fake.keys['digitalocean']}"
    assert request.body["model"] == "llama3-8b-instruct"
    assert request.body["max_tokens"] == 55
    assert "max_completion_tokens" not in request.body
    assert set(request.body) <= OPENAI_FIELDS


async def test_anthropic_receives_x_api_key_version_system_on_top_and_stop_sequences(fake):
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


# --- non-streamed answers ------------------------------------------------------------


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_completion_comes_back_in_openai_shape_with_the_public_name_and_usage(fake, name):
    answer = await complete(name, chat("one two three"))
    body = answer.body
    assert body["object"] == "chat.completion"
    assert body["model"] == name
    assert body["choices"][0]["message"] == {**body["choices"][0]["message"], "role": "assistant"}
    assert body["choices"][0]["message"]["content"] == TEN_TOKENS
    assert body["choices"][0]["finish_reason"] == "stop"
    # The fake counts words plus 3 per message.
    assert (answer.usage.tokens_in, answer.usage.tokens_out) == (6, 10)
    assert answer.usage.is_reported
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 10, "total_tokens": 16}


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_hitting_max_tokens_is_finish_reason_length(fake, name):
    answer = await complete(name, chat("hello [[tokens:50]]"), max_tokens=5)
    assert answer.body["choices"][0]["finish_reason"] == "length"
    assert answer.usage.tokens_out == 5


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_tool_call_comes_back_as_openai_tool_calls(fake, name):
    answer = await complete(name, chat("weather? [[tool:get_weather]]", tools=[WEATHER_TOOL]))
    choice = answer.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "tok", "days": 1}
    assert call["id"]


async def test_anthropic_receives_tools_and_a_tool_round_trip_as_its_own_blocks(fake):
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
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Lyon"},
                },
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


async def test_openai_receives_tools_and_the_tool_round_trip_unchanged(fake):
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    await complete(OPENAI, chat(messages=messages, tools=[WEATHER_TOOL], tool_choice="auto"))
    sent = received(fake, OPENAI).body
    assert sent["messages"] == messages
    assert sent["tools"] == [WEATHER_TOOL]
    assert sent["tool_choice"] == "auto"


# --- streams ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_stream_yields_openai_chunks_then_the_usage(fake, name):
    chunks, done = await collect(stream(name, chat("one two three", stream=True)))
    assert text_of(chunks) == TEN_TOKENS
    assert {chunk["model"] for chunk in chunks} == {name}
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert (done.usage.tokens_in, done.usage.tokens_out, done.usage.is_reported) == (6, 10, True)
    assert done.model == name
    usage_chunk = done.usage_chunk(0.000123)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 6,
        "completion_tokens": 10,
        "total_tokens": 16,
        "cost_usd": 0.000123,
    }


@pytest.mark.parametrize("name", (OPENAI, DIGITALOCEAN))
async def test_openai_compatible_streams_always_ask_for_usage(fake, name):
    await collect(stream(name, chat(stream=True)))
    assert received(fake, name).body["stream_options"] == {"include_usage": True}
    assert received(fake, name).body["stream"] is True


async def test_anthropic_stream_output_usage_is_the_last_cumulative_count_not_a_sum(fake):
    # message_start reports output_tokens 1, message_delta the total (10):
    # summing would give 11.
    _, done = await collect(stream(ANTHROPIC, chat(stream=True)))
    assert done.usage.tokens_out == 10
    assert received(fake, ANTHROPIC).body["stream"] is True


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_streamed_tool_call_arrives_as_tool_call_deltas(fake, name):
    request = chat("weather? [[tool:get_weather]]", tools=[WEATHER_TOOL], stream=True)
    chunks, done = await collect(stream(name, request))
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
    assert done.usage.is_reported


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_stop_sequence_ends_a_stream_with_finish_reason_stop(fake, name):
    chunks, _ = await collect(stream(name, chat("go", stop="tok2", stream=True)))
    assert text_of(chunks) == "tok0 tok1 "
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


# --- faults ---------------------------------------------------------------------------


def directive(fault, **params):
    suffix = ":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else ""
    return chat(f"hello [[fault:{fault}{suffix}]]")


def streamed(fault, **params):
    suffix = ":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else ""
    return chat(f"hello [[fault:{fault}{suffix}]]", stream=True)


FAULTS = [
    ("http_500", UpstreamError, 502, "upstream_error"),
    ("http_502", UpstreamError, 502, "upstream_error"),
    ("http_429", UpstreamOverloaded, 503, "upstream_overloaded"),
    ("http_529", UpstreamOverloaded, 503, "upstream_overloaded"),
    ("http_400", UpstreamRejected, 400, "upstream_rejected"),
    ("http_401", UpstreamAuthRejected, 502, "upstream_error"),
    ("non_json", UpstreamError, 502, "upstream_error"),
    ("malformed", UpstreamError, 502, "upstream_error"),
    ("drop", UpstreamError, 502, "upstream_error"),
]


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
@pytest.mark.parametrize(("fault", "error", "status", "code"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_each_fault_before_any_output_maps_to_its_error_and_costs_nothing(
    fake, name, fault, error, status, code
):
    for request in (directive(fault), streamed(fault)):
        with pytest.raises(UpstreamError) as caught:
            if request.stream:
                await collect(stream(name, request))
            else:
                await complete(name, request)
        assert type(caught.value) is error
        assert (caught.value.status, caught.value.code) == (status, code)
        assert caught.value.usage == NO_USAGE
        body = json.dumps(caught.value.payload())
        assert fake.keys[route(name).provider] not in body


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_overloaded_carries_the_provider_retry_after(fake, name):
    with pytest.raises(UpstreamOverloaded) as caught:
        await complete(name, directive("http_429", retry_after=7))
    assert caught.value.headers()["Retry-After"] == "7"
    with pytest.raises(UpstreamOverloaded) as caught:
        await complete(name, directive("http_529"))
    assert int(caught.value.headers()["Retry-After"]) >= 1


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_rejection_carries_the_provider_message_text_only(fake, name):
    with pytest.raises(UpstreamRejected) as caught:
        await complete(name, directive("http_400", message="prompt is too long for this model"))
    error = caught.value.payload()["error"]
    assert error == {
        "message": "prompt is too long for this model",
        "type": "invalid_request_error",
        "code": "upstream_rejected",
    }


async def test_a_wrong_key_is_auth_rejected(fake):
    fake.keys["openai"] = "sk-rotated-upstream-0123456789"
    with pytest.raises(UpstreamAuthRejected):
        await complete(OPENAI, chat())


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_slow_provider_is_a_timeout_charged_its_estimated_input(fake, settings, name):
    settings.UPSTREAM_TIMEOUT_SECONDS = 0.3
    for request in (directive("slow", seconds=2), streamed("slow", seconds=2)):
        with pytest.raises(UpstreamTimeout) as caught:
            if request.stream:
                await collect(stream(name, request))
            else:
                await complete(name, request)
        assert (caught.value.status, caught.value.code) == (504, "upstream_timeout")
        usage = caught.value.usage
        assert (usage.tokens_in, usage.tokens_out) == (estimate_input_tokens(request), 0)
        assert not usage.is_reported


async def test_an_unreachable_provider_is_an_upstream_error_that_costs_nothing(fake, settings):
    from tests.support.processes import free_port

    settings.PROVIDER_BASE_URLS = {
        **settings.PROVIDER_BASE_URLS,
        "openai": f"http://127.0.0.1:{free_port()}/v1",
    }
    for request in (chat(), chat(stream=True)):
        with pytest.raises(UpstreamError) as caught:
            if request.stream:
                await collect(stream(OPENAI, request))
            else:
                await complete(OPENAI, request)
        assert type(caught.value) is UpstreamError
        assert caught.value.usage == NO_USAGE


async def test_a_body_cut_in_half_is_an_upstream_error(fake):
    with pytest.raises(UpstreamError) as caught:
        await complete(OPENAI, directive("drop_mid_stream"))
    assert type(caught.value) is UpstreamError


async def consume_until_error(events):
    chunks = []
    with pytest.raises(UpstreamError) as caught:
        async for event in events:
            chunks.append(event)
    return chunks, caught.value


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_stream_dropped_midway_fails_after_its_chunks_with_the_usage_so_far(fake, name):
    request = streamed("drop_mid_stream", after=3)
    chunks, error = await consume_until_error(stream(name, request))
    assert type(error) is UpstreamError
    assert text_of(chunks) == "tok0 tok1 tok2 "
    # Estimated: at least a token per delta and per 4 characters (15 here).
    assert error.usage.tokens_out == 4
    assert not error.usage.is_reported
    if name == ANTHROPIC:
        # Reported by message_start: the fake counts 2 words + 3 for the message.
        assert error.usage.tokens_in == 5
    else:
        assert error.usage.tokens_in == estimate_input_tokens(request)


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_slow_chunks_beyond_the_read_timeout_are_an_upstream_timeout(fake, settings, name):
    settings.UPSTREAM_TIMEOUT_SECONDS = 0.2
    chunks, error = await consume_until_error(stream(name, streamed("slow_chunks", delay=1)))
    assert type(error) is UpstreamTimeout
    assert error.usage.tokens_in > 0
    assert not error.usage.is_reported
    # Nothing streamed yet but the role chunk; Anthropic's message_start already
    # counted one output token.
    assert text_of(chunks) == ""
    assert error.usage.tokens_out == (1 if name == ANTHROPIC else 0)


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_an_error_event_mid_stream_fails_the_stream_after_its_chunks(fake, name):
    chunks, error = await consume_until_error(stream(name, streamed("error_mid_stream", after=2)))
    assert text_of(chunks) == "tok0 tok1 "
    expected = UpstreamOverloaded if name == ANTHROPIC else UpstreamError
    assert type(error) is expected
    assert error.usage.tokens_out == 3  # two deltas, 10 characters
    assert not error.usage.is_reported


# --- cancellation -----------------------------------------------------------------------


class WatchedProvider(FakeProvider):
    """The fake, noting how each streamed answer ended on its side."""

    def __init__(self) -> None:
        super().__init__()
        self.stream_ended = threading.Event()
        self.outcome: str | None = None

    async def _stream(self, *args, **kwargs):
        try:
            response = await super()._stream(*args, **kwargs)
            self.outcome = "completed"
            return response
        except BaseException as exc:
            self.outcome = type(exc).__name__
            raise
        finally:
            self.stream_ended.set()


@pytest.fixture
async def watched(settings):
    with WatchedProvider() as provider:
        point_at(provider, settings)
        yield provider
        await upstream.close_clients()


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_closing_a_stream_early_cancels_the_upstream_request(watched, name):
    # 50 chunks 0.2 s apart: ten seconds of answer if nobody hangs up.
    request = chat("hello [[tokens:50]] [[fault:slow_chunks:delay=0.2]]", stream=True)
    events = stream(name, request)
    chunks = [await anext(events) for _ in range(3)]
    assert "tok1 " in text_of(chunks)
    await events.aclose()
    assert await asyncio.to_thread(watched.stream_ended.wait, 5)
    assert watched.outcome != "completed"


# --- one retry with a fresh key -----------------------------------------------------------


@pytest.fixture
async def stale_openai_key(fake, settings):
    """The process caches a key the provider no longer accepts; the env now holds the right one."""
    settings.SECRETS_BACKEND = "env"
    settings.PROVIDER_ENV_KEYS = {**DEFAULT_KEYS, "openai": "sk-stale-0123456789abcdef"}
    await keys.get_key("openai", epoch=0)
    settings.PROVIDER_ENV_KEYS = dict(DEFAULT_KEYS)
    return "sk-stale-0123456789abcdef"


def sent_keys(fake):
    return [r.headers["authorization"].removeprefix("Bearer ") for r in fake.requests_for("openai")]


async def test_a_refused_key_is_refetched_and_the_completion_retried_once(fake, stale_openai_key):
    answer = await upstream.complete_with_key_retry(route(OPENAI), chat(), max_tokens=10, epoch=0)
    assert answer.body["choices"][0]["message"]["content"]
    assert sent_keys(fake) == [stale_openai_key, DEFAULT_KEYS["openai"]]


async def test_a_refused_key_is_refetched_and_the_stream_retried_before_any_chunk(
    fake, stale_openai_key
):
    events = upstream.stream_with_key_retry(
        route(OPENAI), chat(stream=True), max_tokens=10, epoch=0
    )
    chunks, done = await collect(events)
    assert text_of(chunks) == TEN_TOKENS
    assert done.usage.is_reported
    assert sent_keys(fake) == [stale_openai_key, DEFAULT_KEYS["openai"]]


async def test_a_key_refused_twice_is_an_upstream_error_after_exactly_one_retry(fake, settings):
    settings.SECRETS_BACKEND = "env"
    settings.PROVIDER_ENV_KEYS = {**DEFAULT_KEYS, "openai": "sk-wrong-0123456789abcdef"}
    with pytest.raises(UpstreamAuthRejected) as caught:
        await upstream.complete_with_key_retry(route(OPENAI), chat(), max_tokens=10, epoch=0)
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")
    with pytest.raises(UpstreamAuthRejected):
        await collect(
            upstream.stream_with_key_retry(route(OPENAI), chat(stream=True), max_tokens=10, epoch=0)
        )
    assert len(sent_keys(fake)) == 4
    assert "sk-wrong" not in json.dumps(caught.value.payload())
