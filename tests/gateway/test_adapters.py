"""Provider translation, unit-tested with httpx.MockTransport (scripted provider answers)."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway import upstream
from gateway.errors import InvalidRequest
from gateway.providers import adapter_for
from gateway.providers.anthropic import translate_tools
from gateway.providers.base import (
    SSEDecoder,
    SSEEvent,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRejected,
)
from tests.gateway.upstream_support import (
    ANTHROPIC,
    DIGITALOCEAN,
    OPENAI,
    WEATHER_TOOL,
    chat,
    collect,
    key_for,
    route,
    text_of,
)


@pytest.fixture
def provider_answers(monkeypatch, settings):
    """Install a scripted provider: ``provider_answers(handler)``; returns the seen requests."""
    settings.PROVIDER_BASE_URLS = {
        "openai": "https://openai.test/v1",
        "digitalocean": "https://do.test/v1",
        "anthropic": "https://anthropic.test",
    }
    seen: list[httpx.Request] = []

    def install(handler):
        def recording(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        transport = httpx.MockTransport(recording)
        monkeypatch.setattr(upstream, "transport_for", lambda provider: transport)
        return seen

    return install


def sse(*events: tuple[str | None, object]) -> bytes:
    out = b""
    for name, data in events:
        if name:
            out += f"event: {name}\n".encode()
        payload = data if isinstance(data, str) else json.dumps(data)
        out += f"data: {payload}\n\n".encode()
    return out


async def complete(name, request, max_tokens=100):
    return await upstream.complete(route(name), request, key=key_for(name), max_tokens=max_tokens)


def stream(name, request, max_tokens=100):
    return upstream.stream(route(name), request, key=key_for(name), max_tokens=max_tokens)


# --- request building ---------------------------------------------------------------


def test_openai_routes_send_max_completion_tokens_and_digitalocean_max_tokens(settings):
    request = chat(max_tokens=20, temperature=0.5, stream=True)
    openai = adapter_for("openai").build_request(
        route(OPENAI), request, key=key_for(OPENAI), max_tokens=20
    )
    do = adapter_for("digitalocean").build_request(
        route(DIGITALOCEAN), request, key=key_for(DIGITALOCEAN), max_tokens=20
    )
    assert openai.url == f"{settings.PROVIDER_BASE_URLS['openai']}/chat/completions"
    assert do.url == f"{settings.PROVIDER_BASE_URLS['digitalocean']}/chat/completions"
    assert openai.body["max_completion_tokens"] == 20 and "max_tokens" not in openai.body
    assert do.body["max_tokens"] == 20 and "max_completion_tokens" not in do.body
    for built in (openai, do):
        assert built.body["stream_options"] == {"include_usage": True}
        assert built.body["temperature"] == 0.5


def test_anthropic_tool_choice_maps_each_openai_choice():
    def mapped(**fields):
        return translate_tools(chat(tools=[WEATHER_TOOL], **fields)).get("tool_choice")

    assert mapped() is None
    assert mapped(tool_choice="auto") == {"type": "auto"}
    assert mapped(tool_choice="none") == {"type": "none"}
    assert mapped(tool_choice="required") == {"type": "any"}
    assert mapped(tool_choice={"type": "function", "function": {"name": "get_weather"}}) == {
        "type": "tool",
        "name": "get_weather",
    }
    assert mapped(parallel_tool_calls=False) == {"type": "auto", "disable_parallel_tool_use": True}
    assert translate_tools(chat()) == {}


def test_anthropic_refuses_tool_call_arguments_that_are_not_a_json_object():
    request = chat(
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "t", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                ],
            },
            {"role": "tool", "tool_call_id": "t", "content": "x"},
        ]
    )
    with pytest.raises(InvalidRequest):
        adapter_for("anthropic").build_request(
            route(ANTHROPIC), request, key=key_for(ANTHROPIC), max_tokens=5
        )


def test_the_key_never_shows_in_a_built_request_repr():
    built = adapter_for("anthropic").build_request(
        route(ANTHROPIC), chat(), key=key_for(ANTHROPIC), max_tokens=5
    )
    assert built.headers["x-api-key"] == key_for(ANTHROPIC).reveal()
    assert key_for(ANTHROPIC).reveal() not in repr(key_for(ANTHROPIC))
    assert key_for(ANTHROPIC).reveal() not in f"{key_for(ANTHROPIC)}"


# --- Anthropic answers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("stop_sequence", "stop"),
    ],
)
async def test_anthropic_stop_reasons_become_openai_finish_reasons(
    provider_answers, stop_reason, finish_reason
):
    provider_answers(
        lambda request: httpx.Response(
            200,
            json={
                "id": "msg_1",
                "type": "message",
                "content": [{"type": "text", "text": "hi"}],
                "stop_reason": stop_reason,
                "usage": {"input_tokens": 3, "output_tokens": 1},
            },
        )
    )
    answer = await complete(ANTHROPIC, chat())
    assert answer.body["choices"][0]["finish_reason"] == finish_reason


async def test_anthropic_text_and_tool_use_blocks_become_content_and_tool_calls(provider_answers):
    provider_answers(
        lambda request: httpx.Response(
            200,
            json={
                "id": "msg_1",
                "type": "message",
                "model": "claude-sonnet-4-20250514",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_9",
                        "name": "get_weather",
                        "input": {"city": "Oslo"},
                    },
                ],
                "stop_reason": "tool_use",
                "usage": {
                    "input_tokens": 30,
                    "output_tokens": 12,
                    "cache_read_input_tokens": 5,
                    "cache_creation_input_tokens": 0,
                },
            },
        )
    )
    answer = await complete(ANTHROPIC, chat(tools=[WEATHER_TOOL]))
    message = answer.body["choices"][0]["message"]
    assert answer.body["model"] == ANTHROPIC
    assert message["content"] == "Checking."
    assert message["tool_calls"] == [
        {
            "id": "toolu_9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
        }
    ]
    assert (answer.usage.tokens_in, answer.usage.tokens_out) == (35, 12)
    assert answer.body["usage"]["total_tokens"] == 47


async def test_an_anthropic_stream_becomes_openai_chunks_with_cumulative_output_usage(
    provider_answers,
):
    body = sse(
        (
            "message_start",
            {
                "type": "message_start",
                "message": {"id": "msg_7", "usage": {"input_tokens": 25, "output_tokens": 1}},
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hel"},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "lo"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {},
                },
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"ci'},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": 'ty": "Rome"}'},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 9},
            },
        ),
        ("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 15}}),
        ("message_stop", {"type": "message_stop"}),
    )
    provider_answers(
        lambda request: httpx.Response(
            200, content=body, headers={"content-type": "text/event-stream"}
        )
    )
    chunks, done = await collect(stream(ANTHROPIC, chat(stream=True, tools=[WEATHER_TOOL])))
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert text_of(chunks) == "Hello"
    assert deltas[3] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    arguments = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[3:6])
    assert json.loads(arguments) == {"city": "Rome"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert {chunk["id"] for chunk in chunks} == {"msg_7"}
    # Output counts are cumulative: the last one (15) is the total, not 1 + 9 + 15.
    assert (done.usage.tokens_in, done.usage.tokens_out, done.usage.is_reported) == (25, 15, True)


async def test_an_anthropic_error_event_is_overloaded_mid_stream(provider_answers):
    body = sse(
        (
            "message_start",
            {
                "type": "message_start",
                "message": {"id": "m", "usage": {"input_tokens": 8, "output_tokens": 1}},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "abc"},
            },
        ),
        (
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ),
    )
    provider_answers(lambda request: httpx.Response(200, content=body))
    events = stream(ANTHROPIC, chat(stream=True))
    seen = []
    with pytest.raises(UpstreamOverloaded) as caught:
        async for event in events:
            seen.append(event)
    assert text_of(seen) == "abc"
    assert (caught.value.usage.tokens_in, caught.value.usage.tokens_out) == (8, 1)
    assert not caught.value.usage.is_reported


# --- OpenAI-compatible answers ----------------------------------------------------------


def openai_chunk(delta, finish=None, usage=None, choices=True):
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []
    if usage is not None:
        chunk["usage"] = usage
    return chunk


async def test_an_openai_stream_passes_through_renamed_and_its_usage_chunk_is_consumed(
    provider_answers,
):
    body = sse(
        (None, openai_chunk({"role": "assistant", "content": ""}, usage=None)),
        (None, openai_chunk({"content": "Hi"})),
        (None, openai_chunk({}, finish="stop")),
        (
            None,
            openai_chunk(
                {},
                usage={"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
                choices=False,
            ),
        ),
        (None, "[DONE]"),
    )
    provider_answers(lambda request: httpx.Response(200, content=body))
    chunks, done = await collect(stream(OPENAI, chat(stream=True)))
    assert len(chunks) == 3
    assert {chunk["model"] for chunk in chunks} == {OPENAI}
    assert all("usage" not in chunk for chunk in chunks)
    assert (done.usage.tokens_in, done.usage.tokens_out, done.usage.is_reported) == (11, 2, True)
    assert done.finish_reason == "stop"


async def test_an_openai_stream_without_usage_is_estimated_from_its_deltas(provider_answers):
    body = sse(
        (None, openai_chunk({"content": "a"})),
        (None, openai_chunk({"content": "b"})),
        (None, openai_chunk({"content": "c"}, finish="stop")),
    )
    provider_answers(lambda request: httpx.Response(200, content=body))
    _, done = await collect(stream(DIGITALOCEAN, chat(stream=True)))
    assert done.usage.tokens_out == 3
    assert done.usage.tokens_in > 0
    assert not done.usage.is_reported


async def test_an_openai_stream_ending_before_any_finish_is_an_upstream_error(provider_answers):
    body = sse((None, openai_chunk({"content": "a"})), (None, openai_chunk({"content": "b"})))
    provider_answers(lambda request: httpx.Response(200, content=body))
    with pytest.raises(UpstreamError) as caught:
        await collect(stream(OPENAI, chat(stream=True)))
    assert caught.value.usage.tokens_out == 2


async def test_an_answer_without_usage_is_estimated(provider_answers):
    provider_answers(
        lambda request: httpx.Response(
            200,
            json={
                "id": "x",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "abcdefgh"},
                        "finish_reason": "stop",
                    }
                ],
            },
        )
    )
    answer = await complete(DIGITALOCEAN, chat())
    assert answer.usage.tokens_out == 2
    assert not answer.usage.is_reported
    assert answer.body["usage"]["completion_tokens"] == 2


async def test_unknown_top_level_fields_of_an_answer_are_dropped(provider_answers):
    provider_answers(
        lambda request: httpx.Response(
            200,
            json={
                "id": "x",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                "provider_debug": {"account": "acct_123"},
            },
        )
    )
    answer = await complete(OPENAI, chat())
    assert set(answer.body) == {"id", "object", "created", "model", "choices", "usage"}


# --- errors -----------------------------------------------------------------------------


async def test_a_rejection_message_is_cleaned_of_the_key_and_truncated(provider_answers):
    secret = key_for(OPENAI).reveal()
    message = f"Incorrect key {secret} for org; " + "x" * 2000
    provider_answers(
        lambda request: httpx.Response(
            422, json={"error": {"message": message, "type": "invalid_request_error"}}
        )
    )
    with pytest.raises(UpstreamRejected) as caught:
        await complete(OPENAI, chat())
    text = caught.value.payload()["error"]["message"]
    assert secret not in text
    assert text.startswith("Incorrect key [REDACTED] for org")
    assert len(text) <= 500


async def test_a_rejection_without_a_message_gets_a_generic_one(provider_answers):
    provider_answers(lambda request: httpx.Response(404, text="<html>nope</html>"))
    with pytest.raises(UpstreamRejected) as caught:
        await complete(OPENAI, chat())
    assert caught.value.payload()["error"]["message"] == "The model provider rejected the request"


@pytest.mark.parametrize(
    ("header", "expected"), [("12", "12"), ("0.5", "1"), ("soon", "5"), ("99999", "300")]
)
async def test_retry_after_is_taken_from_the_provider_within_bounds(
    provider_answers, header, expected
):
    provider_answers(lambda request: httpx.Response(429, headers={"retry-after": header}, json={}))
    with pytest.raises(UpstreamOverloaded) as caught:
        await complete(OPENAI, chat())
    assert caught.value.headers()["Retry-After"] == expected


async def test_a_3xx_is_an_upstream_error(provider_answers):
    provider_answers(lambda request: httpx.Response(302, headers={"location": "https://elsewhere"}))
    with pytest.raises(UpstreamError) as caught:
        await complete(OPENAI, chat())
    assert type(caught.value) is UpstreamError


# --- server-sent events ------------------------------------------------------------------


def test_the_sse_decoder_handles_events_split_anywhere_crlf_and_comments():
    raw = b': keep-alive\r\nevent: a\r\ndata: {"x":\r\ndata: 1}\r\n\r\ndata: [DONE]\n\n'
    for size in (1, 2, 3, 7, len(raw)):
        decoder = SSEDecoder()
        events = []
        for start in range(0, len(raw), size):
            events += decoder.feed(raw[start : start + size])
        assert events == [SSEEvent("a", '{"x":\n1}'), SSEEvent(None, "[DONE]")]


def test_the_sse_decoder_keeps_characters_split_between_chunks():
    raw = "data: héllo ✓\ndata\n\ndata:naïve\n\n".encode()
    for size in (1, 2, 3, 5):
        decoder = SSEDecoder()
        events = []
        for start in range(0, len(raw), size):
            events += decoder.feed(raw[start : start + size])
        assert events == [SSEEvent(None, "héllo ✓\n"), SSEEvent(None, "naïve")]


ODD_ANSWERS = [
    [],
    {"choices": None},
    {"choices": [5]},
    {"choices": [{"message": 5}]},
    {"choices": [{"message": {"content": 5, "tool_calls": 5}}]},
    {"choices": [{"message": {"tool_calls": [5]}}], "usage": {"prompt_tokens": "x"}},
    {"content": 5},
    {"content": [{"type": "tool_use", "input": 5}], "usage": {"input_tokens": []}},
    {"content": [{"type": "text", "text": 5}], "stop_reason": []},
]
ODD_EVENTS = [
    (None, "[1, 2]"),
    (None, '{"choices": [{"delta": [], "finish_reason": {}}]}'),
    (None, '{"choices": [{"delta": {"tool_calls": [5]}}]}'),
    (None, '{"choices": [], "usage": {"prompt_tokens": -1, "completion_tokens": []}}'),
    (None, '{"error": "x"}'),
    ("message_start", '{"type": "message_start", "message": {"usage": []}}'),
    (
        "content_block_start",
        '{"type": "content_block_start", "index": [], "content_block": {"type": "tool_use"}}',
    ),
    (
        "content_block_delta",
        '{"type": "content_block_delta", "index": {}, '
        '"delta": {"type": "input_json_delta", "partial_json": "x"}}',
    ),
    ("message_delta", '{"type": "message_delta", "delta": [], "usage": {"output_tokens": "9"}}'),
    ("error", '{"type": "error", "error": []}'),
    (None, "not json"),
]


@pytest.mark.parametrize("name", [OPENAI, ANTHROPIC])
@pytest.mark.parametrize("answer", ODD_ANSWERS, ids=[str(a)[:40] for a in ODD_ANSWERS])
async def test_an_odd_answer_is_accepted_or_an_upstream_error_never_a_crash(
    provider_answers, name, answer
):
    provider_answers(lambda request: httpx.Response(200, json=answer))
    try:
        await complete(name, chat())
    except UpstreamError:
        pass


@pytest.mark.parametrize("name", [OPENAI, ANTHROPIC])
@pytest.mark.parametrize("event", ODD_EVENTS, ids=[e[1][:40] for e in ODD_EVENTS])
async def test_an_odd_stream_event_is_ignored_or_an_upstream_error_never_a_crash(
    provider_answers, name, event
):
    provider_answers(lambda request: httpx.Response(200, content=sse(event)))
    try:
        await collect(stream(name, chat(stream=True)))
    except UpstreamError:
        pass
