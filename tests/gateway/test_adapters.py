"""Provider translation, unit-tested with httpx.MockTransport (scripted provider answers)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pytest_django import Settings

from gateway.core.errors import InvalidRequest
from gateway.proxy import upstream
from gateway.proxy.providers import adapter_for
from gateway.proxy.providers.anthropic import translate_tools
from gateway.proxy.providers.base import (
    SSEDecoder,
    SSEEvent,
    StreamEvent,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRejected,
    Usage,
)
from gateway.proxy.validation import ChatRequest
from tests.gateway.upstream_support import (
    ANTHROPIC,
    DIGITALOCEAN,
    END_USER,
    OPENAI,
    WEATHER_TOOL,
    Call,
    call_to,
    chat,
    collect,
    key_for,
    route,
    text_of,
    weather_tool_use,
)
from tests.gateway.upstream_support import complete_via as complete
from tests.gateway.upstream_support import stream_via as stream

# A scripted provider: the answer to each request the gateway sends.
Handler = Callable[[httpx.Request], httpx.Response]

DEEPSEEK, GPT_5 = "deepseek-r1-distill-llama-70b", "openai-gpt-5"


@pytest.fixture
def provider_answers(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> Callable[[Handler], list[httpx.Request]]:
    """Install a scripted provider: ``provider_answers(handler)``; returns the seen requests."""
    settings.PROVIDER_BASE_URLS = {
        "openai": "https://openai.test/v1",
        "digitalocean": "https://do.test/v1",
        "anthropic": "https://anthropic.test",
    }
    seen: list[httpx.Request] = []

    def install(handler: Handler) -> list[httpx.Request]:
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


async def events_until(error: type[Exception], call: Call) -> list[StreamEvent]:
    """The events ``call``'s stream yields before it fails with ``error``."""
    seen = []
    with pytest.raises(error):
        async for event in call.stream():
            seen.append(event)
    return seen


def anthropic_message(
    content: list[dict[str, Any]], stop_reason: str, usage: dict[str, int], **fields: Any
) -> dict[str, Any]:
    """An Anthropic message body."""
    return {
        "id": "msg_1",
        "type": "message",
        **fields,
        "content": content,
        "stop_reason": stop_reason,
        "usage": usage,
    }


# --- Anthropic stream events: (event name, data) for ``sse`` -----------------------------

AnthropicEvent = tuple[str, dict[str, Any]]


def message_start(
    tokens_in: int, message_id: str = "m", tokens_out: int | None = 1
) -> AnthropicEvent:
    usage = {"input_tokens": tokens_in}
    if tokens_out is not None:
        usage["output_tokens"] = tokens_out
    return "message_start", {"type": "message_start", "message": {"id": message_id, "usage": usage}}


def block_start(index: int, block: dict[str, Any]) -> AnthropicEvent:
    return "content_block_start", {
        "type": "content_block_start",
        "index": index,
        "content_block": block,
    }


def block_delta(index: int, delta: dict[str, Any]) -> AnthropicEvent:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


def block_stop(index: int) -> AnthropicEvent:
    return "content_block_stop", {"type": "content_block_stop", "index": index}


def message_delta(delta: dict[str, Any], tokens_out: int) -> AnthropicEvent:
    usage = {"output_tokens": tokens_out}
    return "message_delta", {"type": "message_delta", "delta": delta, "usage": usage}


def text_delta(text: str) -> dict[str, Any]:
    return {"type": "text_delta", "text": text}


def json_delta(partial_json: str) -> dict[str, Any]:
    return {"type": "input_json_delta", "partial_json": partial_json}


def body_for(name: str, request: ChatRequest, max_tokens: int = 100) -> dict[str, Any]:
    """The upstream body route ``name``'s adapter builds, parsed."""
    built = adapter_for(route(name).provider).build_body(
        route(name), request, max_tokens=max_tokens, end_user=END_USER
    )
    body: dict[str, Any] = json.loads(built)
    return body


def deeply_nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


# --- request building ---------------------------------------------------------------


def test_openai_routes_send_max_completion_tokens_and_digitalocean_max_tokens(
    settings: Settings,
) -> None:
    request = chat(max_tokens=20, temperature=0.5, stream=True)
    openai, do = body_for(OPENAI, request, 20), body_for(DIGITALOCEAN, request, 20)
    assert openai["max_completion_tokens"] == 20 and "max_tokens" not in openai
    assert do["max_tokens"] == 20 and "max_completion_tokens" not in do
    for body in (openai, do):
        assert body["stream_options"] == {"include_usage": True}
        assert body["temperature"] == 0.5
    for name in (OPENAI, DIGITALOCEAN):
        url, headers = adapter_for(route(name).provider).target(key_for(name), stream=True)
        base = settings.PROVIDER_BASE_URLS[route(name).provider]
        assert str(url) == f"{base}/chat/completions"
        assert headers["accept"] == "text/event-stream"


def test_anthropic_tool_choice_maps_each_openai_choice() -> None:
    def mapped(**fields: Any) -> object:
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


def test_anthropic_refuses_tool_call_arguments_that_are_not_a_json_object() -> None:
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
        adapter_for("anthropic").build_body(
            route(ANTHROPIC), request, max_tokens=5, end_user=END_USER
        )


def test_anthropic_refuses_tool_call_arguments_too_deep_to_encode_before_admission() -> None:
    # Validation limits the client's JSON to 64 levels, but arguments are a
    # string there; Anthropic's tool_use.input is that string parsed, 300 deep.
    arguments = json.dumps(deeply_nested(300))
    call = {"id": "t", "type": "function", "function": {"name": "f", "arguments": arguments}}
    request = chat(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "t", "content": "x"},
        ]
    )
    adapter_for("anthropic").check_request(request, route(ANTHROPIC))  # a JSON object: so far
    with pytest.raises(InvalidRequest) as caught:
        upstream.outbound(route(ANTHROPIC), request, max_tokens=5, end_user=END_USER)
    assert (caught.value.status, caught.value.code) == (400, "invalid_request")
    assert body_for(OPENAI, request)["messages"][1]["tool_calls"][0]["function"] == {
        "name": "f",
        "arguments": arguments,  # OpenAI takes the string as it is
    }


def test_the_key_travels_in_the_headers_only_never_in_the_body_or_its_repr() -> None:
    key = key_for(ANTHROPIC)
    _, headers = adapter_for("anthropic").target(key, stream=False)
    body = adapter_for("anthropic").build_body(
        route(ANTHROPIC), chat(), max_tokens=5, end_user=END_USER
    )
    assert headers["x-api-key"] == key.reveal()
    assert headers["accept"] == "application/json"
    assert key.reveal().encode() not in body
    assert key.reveal() not in repr(key)
    assert key.reveal() not in f"{key}"


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
    provider_answers: Callable[[Handler], list[httpx.Request]], stop_reason: str, finish_reason: str
) -> None:
    provider_answers(
        lambda request: httpx.Response(
            200,
            json=anthropic_message(
                [{"type": "text", "text": "hi"}],
                stop_reason,
                {"input_tokens": 3, "output_tokens": 1},
            ),
        )
    )
    answer = await complete(ANTHROPIC, chat())
    assert answer.body["choices"][0]["finish_reason"] == finish_reason


async def test_anthropic_text_and_tool_use_blocks_become_content_and_tool_calls(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
    provider_answers(
        lambda request: httpx.Response(
            200,
            json=anthropic_message(
                [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    weather_tool_use("toolu_9", "Oslo"),
                ],
                "tool_use",
                {
                    "input_tokens": 30,
                    "output_tokens": 12,
                    "cache_read_input_tokens": 5,
                    "cache_creation_input_tokens": 0,
                },
                model="claude-sonnet-4-20250514",
            ),
        )
    )
    call = call_to(ANTHROPIC, chat(tools=[WEATHER_TOOL]))
    answer = await call.complete()
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
    # Cached input is input; the usage is the provider's.
    assert call.billed == Usage(35, 12, True)
    # Seen output, should the usage be lost: thinking, text, the tool's name and input.
    assert call.meter.output_bytes == len("hmm" + "Checking." + "get_weather" + '{"city":"Oslo"}')


async def test_an_anthropic_stream_becomes_openai_chunks_with_cumulative_output_usage(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
    body = sse(
        message_start(25, message_id="msg_7"),
        block_start(0, {"type": "text", "text": ""}),
        ("ping", {"type": "ping"}),
        block_delta(0, text_delta("Hel")),
        block_delta(0, text_delta("lo")),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}),
        block_delta(1, json_delta('{"ci')),
        block_delta(1, json_delta('ty": "Rome"}')),
        block_stop(1),
        message_delta({"stop_reason": "tool_use"}, tokens_out=9),
        message_delta({}, tokens_out=15),
        ("message_stop", {"type": "message_stop"}),
    )
    provider_answers(
        lambda request: httpx.Response(
            200, content=body, headers={"content-type": "text/event-stream"}
        )
    )
    call = call_to(ANTHROPIC, chat(stream=True, tools=[WEATHER_TOOL]))
    chunks, done = await collect(call.stream())
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
    assert done.finish_reason == "tool_calls"
    # Output counts are cumulative: the last one (15) is the total, not 1 + 9 + 15.
    assert call.billed == Usage(25, 15, True)


async def test_an_anthropic_error_event_is_overloaded_mid_stream_costing_what_was_seen(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
    body = sse(
        message_start(8),
        block_delta(0, text_delta("abc")),
        (
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ),
    )
    provider_answers(lambda request: httpx.Response(200, content=body))
    call = call_to(ANTHROPIC, chat(stream=True))
    seen = await events_until(UpstreamOverloaded, call)
    assert text_of(seen) == "abc"
    # Input as message_start reported it, output the 3 bytes seen (not its "output_tokens": 1).
    assert call.billed == Usage(8, 3, False)


async def test_anthropic_thinking_is_billed_as_output_bytes_but_never_forwarded(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
    thinking = "Let me think: 東京 or Kyoto"
    body = sse(
        message_start(8),
        block_delta(0, {"type": "thinking_delta", "thinking": thinking}),
        block_delta(0, {"type": "signature_delta"}),
        block_delta(1, text_delta("Tokyo")),
    )  # and the stream is cut off: no message_delta, so no usage
    provider_answers(lambda request: httpx.Response(200, content=body))
    call = call_to(ANTHROPIC, chat(stream=True))
    seen = await events_until(UpstreamError, call)
    assert text_of(seen) == "Tokyo"
    assert "東京" not in json.dumps(seen, ensure_ascii=False)
    assert call.billed == Usage(8, len(thinking.encode()) + len("Tokyo"), False)


# --- OpenAI-compatible answers ----------------------------------------------------------


def openai_chunk(
    delta: dict[str, Any],
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    choices: bool = True,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
    }
    chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []
    if usage is not None:
        chunk["usage"] = usage
    return chunk


async def test_an_openai_stream_passes_through_renamed_and_its_usage_chunk_is_consumed(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
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
    call = call_to(OPENAI, chat(stream=True))
    chunks, done = await collect(call.stream())
    assert len(chunks) == 3
    assert {chunk["model"] for chunk in chunks} == {OPENAI}
    assert all("usage" not in chunk for chunk in chunks)
    assert call.billed == Usage(11, 2, True)
    assert done.finish_reason == "stop"


@pytest.mark.parametrize(
    ("name", "deltas", "output"),
    [
        (
            DIGITALOCEAN,
            [{"content": "Hello"}, {"content": " wor"}, {"content": "ld"}],
            "Hello world",
        ),
        # DeepSeek's reasoning_content deltas are billed as output too.
        (
            DEEPSEEK,
            [
                {"role": "assistant", "reasoning_content": "The user "},
                {"reasoning_content": "greets me."},
                {"content": "Hi!"},
            ],
            "The user greets me.Hi!",
        ),
    ],
    ids=["content", "deepseek-reasoning-content"],
)
async def test_an_openai_stream_without_usage_costs_its_input_bound_and_output_bytes(
    provider_answers: Callable[[Handler], list[httpx.Request]],
    name: str,
    deltas: list[dict[str, Any]],
    output: str,
) -> None:
    *first, last = deltas
    chunks = [openai_chunk(delta) for delta in first] + [openai_chunk(last, finish="stop")]
    body = sse(*((None, chunk) for chunk in chunks))
    provider_answers(lambda request: httpx.Response(200, content=body))
    call = call_to(name, chat(stream=True))
    await collect(call.stream())
    assert call.billed == Usage(call.outbound.input_bound, len(output), False)


async def test_an_openai_stream_ending_before_any_finish_fails_costing_the_bytes_seen(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
    body = sse((None, openai_chunk({"content": "ab"})), (None, openai_chunk({"content": "cd"})))
    provider_answers(lambda request: httpx.Response(200, content=body))
    call = call_to(OPENAI, chat(stream=True))
    with pytest.raises(UpstreamError):
        await collect(call.stream())
    assert call.billed == Usage(call.outbound.input_bound, 4, False)


ANTHROPIC_START = message_start(8, tokens_out=None)
ANTHROPIC_TEXT = block_delta(0, text_delta("abc"))


@pytest.mark.parametrize(
    ("name", "before"),
    [
        (OPENAI, [(None, openai_chunk({"content": "abc"}))]),
        (ANTHROPIC, [ANTHROPIC_START, ANTHROPIC_TEXT]),
    ],
    ids=["openai", "anthropic"],
)
async def test_a_stream_event_that_is_not_json_costs_the_whole_output_bound(
    provider_answers: Callable[[Handler], list[httpx.Request]],
    name: str,
    before: list[tuple[str | None, object]],
) -> None:
    # What it held is unknown: it may be output never seen.
    provider_answers(lambda request: httpx.Response(200, content=sse(*before, (None, "{oops"))))
    call = call_to(name, chat(stream=True))
    with pytest.raises(UpstreamError):
        await collect(call.stream())
    tokens_in = 8 if name == ANTHROPIC else call.outbound.input_bound
    assert call.billed == Usage(tokens_in, call.outbound.max_tokens, False)


def answer_of(message: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An OpenAI chat.completion body of one choice."""
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}
    return {"id": "x", "choices": [choice], **fields}


async def test_an_answer_without_usage_costs_its_input_bound_and_output_bytes(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
    provider_answers(lambda request: httpx.Response(200, json=answer_of({"content": "abcdefgh"})))
    call = call_to(DIGITALOCEAN, chat())
    answer = await call.complete()
    assert call.billed == Usage(call.outbound.input_bound, 8, False)
    assert "usage" not in answer.body  # the proxy adds the billed usage at settlement


async def test_output_is_counted_in_utf8_bytes_not_characters(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
    text = "你好，世界"  # 5 characters, 15 bytes
    tool_call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '"é"'}}
    provider_answers(
        lambda request: httpx.Response(
            200, json=answer_of({"content": text, "tool_calls": [tool_call]})
        )
    )
    call = call_to(OPENAI, chat())
    await call.complete()
    assert call.billed.tokens_out == 15 + len("f") + len('"é"'.encode())


async def test_a_route_with_hidden_reasoning_costs_its_whole_output_bound_when_usage_is_unknown(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 70}
    answers = iter([answer_of({"content": "ok"}), answer_of({"content": "ok"}, usage=usage)])
    provider_answers(lambda request: httpx.Response(200, json=next(answers)))
    assert route(GPT_5).has_hidden_reasoning and not route(OPENAI).has_hidden_reasoning
    unknown, reported = call_to(GPT_5, chat()), call_to(GPT_5, chat())
    await unknown.complete()
    await reported.complete()
    # "ok" is all it showed; the reasoning it billed for is never shown.
    assert unknown.billed == unknown.whole_bound
    assert reported.billed == Usage(9, 70, True)


async def test_unknown_top_level_fields_of_an_answer_are_dropped(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
    provider_answers(
        lambda request: httpx.Response(
            200,
            json=answer_of(
                {"content": "ok"},
                usage={"prompt_tokens": 1, "completion_tokens": 1},
                provider_debug={"account": "acct_123"},
            ),
        )
    )
    answer = await complete(OPENAI, chat())
    assert set(answer.body) == {"id", "object", "created", "model", "choices"}


# --- errors -----------------------------------------------------------------------------


async def test_a_rejection_message_is_cleaned_of_the_key_and_truncated(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
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


async def test_a_rejection_without_a_message_gets_a_generic_one(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
    provider_answers(lambda request: httpx.Response(404, text="<html>nope</html>"))
    with pytest.raises(UpstreamRejected) as caught:
        await complete(OPENAI, chat())
    assert caught.value.payload()["error"]["message"] == "The model provider rejected the request"


@pytest.mark.parametrize(
    ("header", "expected"), [("12", "12"), ("0.5", "1"), ("soon", "5"), ("99999", "300")]
)
async def test_retry_after_is_taken_from_the_provider_within_bounds(
    provider_answers: Callable[[Handler], list[httpx.Request]], header: str, expected: str
) -> None:
    provider_answers(lambda request: httpx.Response(429, headers={"retry-after": header}, json={}))
    with pytest.raises(UpstreamOverloaded) as caught:
        await complete(OPENAI, chat())
    assert caught.value.headers()["Retry-After"] == expected


async def test_a_3xx_is_an_upstream_error(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
    provider_answers(lambda request: httpx.Response(302, headers={"location": "https://elsewhere"}))
    with pytest.raises(UpstreamError) as caught:
        await complete(OPENAI, chat())
    assert type(caught.value) is UpstreamError


# --- usage salvaged from a body that does not parse ---------------------------------------


@pytest.mark.parametrize(
    ("provider", "content", "usage"),
    [
        (
            "openai",
            b'{"id": "x", "usage": {"prompt_tokens_details": {"cached_tokens": 3}, '
            b'"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}, "choices": [{"mess',
            Usage(20, 7, True),
        ),
        (
            "anthropic",
            b'{"id": "m", "usage": {"input_tokens": 10, "cache_creation_input_tokens": 4, '
            b'"cache_read_input_tokens": 6, "output_tokens": 3}, "content": [{"type": "te',
            Usage(20, 3, True),
        ),
        (
            "openai",
            b'{"usage": {"prompt_tokens": 3, "completion_tokens": 40}, '
            b'"x": {"usage": {"prompt_tokens": 30, "completion_tokens": 4}}, "choi',
            Usage(30, 40, True),
        ),
    ],
    ids=[
        "openai-past-its-nested-details",
        "anthropic-cached-input-counted-as-input",
        "largest-counts-of-several-usage-objects",
    ],
)
def test_usage_is_salvaged_from_a_body_cut_short(
    provider: str, content: bytes, usage: Usage
) -> None:
    assert adapter_for(provider).salvage(content) == usage


def test_salvage_ignores_usage_the_model_wrote_inside_a_string() -> None:
    written = json.dumps({"usage": {"prompt_tokens": 999999, "completion_tokens": 999999}})
    text = json.dumps(f"Here is some JSON: {written}").encode()
    assert adapter_for("openai").salvage(b'{"choices": [{"message": {"content": ' + text) is None
    content = b'{"choices": [{"message": {"content": ' + text + b'}}], "usage": {'
    content += b'"prompt_tokens": 5, "completion_tokens": 6}, "x'
    assert adapter_for("openai").salvage(content) == Usage(5, 6, True)


def test_salvage_finds_nothing_without_both_counts() -> None:
    assert adapter_for("openai").salvage(b'{"usage": {"prompt_tokens": 5}, "x') is None
    assert adapter_for("anthropic").salvage(b'{"usage": {"output_tokens": 5}, "x') is None
    assert adapter_for("anthropic").salvage(b"<html>502 Bad Gateway</html>") is None


async def test_a_200_that_does_not_parse_is_billed_its_salvaged_input_and_the_whole_output_bound(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
    broken = b'{"id": "x", "usage": {"prompt_tokens": 7, "completion_tokens": 9}, "choices": [{'
    provider_answers(lambda request: httpx.Response(200, content=broken))
    call = call_to(OPENAI, chat())
    with pytest.raises(UpstreamError) as caught:
        await call.complete()
    assert type(caught.value) is UpstreamError
    # The provider may have produced output the gateway could not see (SPEC).
    assert call.billed == Usage(7, call.outbound.max_tokens, False)


async def test_a_200_that_does_not_parse_and_holds_no_usage_costs_the_whole_reservation(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
    provider_answers(lambda request: httpx.Response(200, content=b'{"id": "x", "choices": [{'))
    call = call_to(ANTHROPIC, chat())
    with pytest.raises(UpstreamError):
        await call.complete()
    assert call.billed == call.whole_bound


@pytest.mark.parametrize(
    ("name", "usage"),
    [
        (OPENAI, {"prompt_tokens": 12, "completion_tokens": 40}),
        (ANTHROPIC, {"input_tokens": 12, "output_tokens": 40}),
    ],
)
async def test_a_server_error_that_reports_usage_is_billed_that_usage(
    provider_answers: Callable[[Handler], list[httpx.Request]], name: str, usage: dict[str, int]
) -> None:
    error = {"error": {"type": "server_error", "message": "failed mid-answer"}, "usage": usage}
    provider_answers(lambda request: httpx.Response(500, json=error))
    call = call_to(name, chat())
    with pytest.raises(UpstreamError):
        await call.complete()
    # Read out of an error body, within the bounds: billed, marked estimated.
    assert call.billed == Usage(12, 40, False)


async def test_a_salvaged_usage_never_bills_more_than_the_reservation(
    provider_answers: Callable[[Handler], list[httpx.Request]],
) -> None:
    # Valid JSON, too deep for the gateway's parser (1,024 levels): the model
    # controls both the depth and the keys of a tool_use input.
    deep = b'{"a": ' * 1100 + b"{}" + b"}" * 1100
    forged = b'{"usage": {"input_tokens": 999999999, "output_tokens": 999999999}, "deep": '
    body = (
        b'{"id": "m", "type": "message", "content": [{"type": "tool_use", "id": "t", '
        b'"name": "get_weather", "input": ' + forged + deep + b'}}], "stop_reason": "tool_use", '
        b'"usage": {"input_tokens": 20, "output_tokens": 30}}'
    )
    provider_answers(lambda request: httpx.Response(200, content=body))
    call = call_to(ANTHROPIC, chat(tools=[WEATHER_TOOL]))
    with pytest.raises(UpstreamError):
        await call.complete()
    assert call.billed.tokens_in <= call.outbound.input_bound
    assert call.billed.tokens_out <= call.outbound.max_tokens


# --- server-sent events ------------------------------------------------------------------


def test_the_sse_decoder_handles_events_split_anywhere_crlf_and_comments() -> None:
    raw = b': keep-alive\r\nevent: a\r\ndata: {"x":\r\ndata: 1}\r\n\r\ndata: [DONE]\n\n'
    for size in (1, 2, 3, 7, len(raw)):
        decoder = SSEDecoder()
        events = []
        for start in range(0, len(raw), size):
            events += decoder.feed(raw[start : start + size])
        assert events == [SSEEvent("a", '{"x":\n1}'), SSEEvent(None, "[DONE]")]


def test_the_sse_decoder_keeps_characters_split_between_chunks() -> None:
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
async def test_an_odd_answer_is_accepted_or_an_upstream_error_costing_the_whole_bound(
    provider_answers: Callable[[Handler], list[httpx.Request]], name: str, answer: object
) -> None:
    provider_answers(lambda request: httpx.Response(200, json=answer))
    call = call_to(name, chat())
    try:
        await call.complete()
    except UpstreamError:
        # Refused as malformed: it may hold any output, unseen.
        assert call.billed == call.whole_bound


@pytest.mark.parametrize("name", [OPENAI, ANTHROPIC])
@pytest.mark.parametrize("event", ODD_EVENTS, ids=[e[1][:40] for e in ODD_EVENTS])
async def test_an_odd_stream_event_is_ignored_or_an_upstream_error_never_a_crash(
    provider_answers: Callable[[Handler], list[httpx.Request]],
    name: str,
    event: tuple[str | None, object],
) -> None:
    provider_answers(lambda request: httpx.Response(200, content=sse(event)))
    try:
        await collect(stream(name, chat(stream=True)))
    except UpstreamError:
        pass
