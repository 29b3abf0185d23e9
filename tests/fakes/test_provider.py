"""The fake provider speaks the real wire formats: the official SDKs are its clients."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from anthropic.types import TextBlock, ToolParam
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageFunctionToolCall

from tests.fakes import provider_formats as fmt
from tests.fakes.provider import Bill, FakeProvider
from tests.support.wire import weather_tool_round_trip

WEATHER_TOOL_OPENAI: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
WEATHER_TOOL_ANTHROPIC: ToolParam = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": WEATHER_TOOL_OPENAI["function"]["parameters"],
}
EXPECTED_ARGS = {"city": "tok", "days": 1, "unit": "celsius"}
TEN_TOKENS = "".join(f"tok{i} " for i in range(10))


def oai(fake: FakeProvider, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=fake.openai_base_url, api_key=key or fake.keys["openai"], max_retries=0
    )


def claude(fake: FakeProvider, key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=fake.anthropic_base_url, api_key=key or fake.keys["anthropic"], max_retries=0
    )


def user(text: str) -> list[Any]:
    """One user message, as either SDK takes it (their TypedDicts differ only in name)."""
    return [{"role": "user", "content": text}]


def openai_post(fake: FakeProvider, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {fake.keys['openai']}"}
    return httpx.post(
        fake.openai_base_url + "/chat/completions", json=body, headers=headers, **kwargs
    )


def openai_stream(
    fake: FakeProvider, body: dict[str, Any]
) -> contextlib.AbstractContextManager[httpx.Response]:
    headers = {"Authorization": f"Bearer {fake.keys['openai']}"}
    return httpx.stream(
        "POST", fake.openai_base_url + "/chat/completions", json=body, headers=headers
    )


def anthropic_headers(fake: FakeProvider) -> dict[str, str]:
    return {"x-api-key": fake.keys["anthropic"], "anthropic-version": "2023-06-01"}


def sse_events(lines: list[str]) -> list[tuple[str | None, str]]:
    """(event name, data) pairs from SSE lines."""
    events: list[tuple[str | None, str]] = []
    name: str | None = None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((name, line[len("data: ") :]))
            name = None
    return events


# ------------------------------------------------------------------ OpenAI


def test_it_answers_an_openai_chat_completion_with_deterministic_tokens_and_usage(
    provider: FakeProvider,
) -> None:
    completion = oai(provider).chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hello there world"}]},
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    assert completion.usage is not None
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == TEN_TOKENS
    assert choice.finish_reason == "stop"
    # 2 + 3 words, + 3 per message
    assert completion.usage.prompt_tokens == 5 + 2 * 3
    assert completion.usage.completion_tokens == 10
    assert completion.usage.total_tokens == 21


def test_it_streams_openai_chunks_without_a_usage_chunk_when_not_asked(
    provider: FakeProvider,
) -> None:
    stream = oai(provider).chat.completions.create(
        model="gpt-4o", messages=user("hi [[tokens:4]]"), stream=True
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert contents == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None and len(c.choices) == 1 for c in chunks)


def test_it_streams_openai_chunks_with_a_usage_chunk_when_asked(provider: FakeProvider) -> None:
    stream = oai(provider).chat.completions.create(
        model="gpt-4o",
        messages=user("one two [[tokens:3]]"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == 3 + 3
    assert last.usage.completion_tokens == 3
    assert last.usage.total_tokens == 9
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert text == "tok0 tok1 tok2 "


def test_it_ends_openai_streams_with_a_done_line(provider: FakeProvider) -> None:
    body = {"model": "m", "messages": user("[[tokens:2]]"), "stream": True}
    with openai_stream(provider, body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [d for _, d in sse_events(list(response.iter_lines()))]
    assert data[-1] == "[DONE]"
    assert len(data) == 1 + 2 + 1 + 1  # role, 2 tokens, finish, [DONE]


@pytest.mark.parametrize("cap_param", ["max_tokens", "max_completion_tokens"])
def test_it_cuts_openai_answers_at_the_token_cap_with_finish_reason_length(
    provider: FakeProvider, cap_param: str
) -> None:
    cap: dict[str, Any] = {cap_param: 3}
    completion = oai(provider).chat.completions.create(model="gpt-4o", messages=user("hi"), **cap)
    assert completion.choices[0].message.content == "tok0 tok1 tok2 "
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


def test_it_finishes_with_stop_when_the_answer_fits_under_the_cap(provider: FakeProvider) -> None:
    completion = oai(provider).chat.completions.create(
        model="gpt-4o", messages=user("hi [[tokens:4]]"), max_tokens=4
    )
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4


def test_it_stops_openai_answers_at_a_stop_sequence(provider: FakeProvider) -> None:
    completion = oai(provider).chat.completions.create(
        model="gpt-4o", messages=user("hi"), stop=["tok3"]
    )
    assert completion.choices[0].message.content == "tok0 tok1 tok2 "
    assert completion.choices[0].finish_reason == "stop"


def test_it_calls_an_openai_tool_when_a_message_asks_for_it(provider: FakeProvider) -> None:
    completion = oai(provider).chat.completions.create(
        model="gpt-4o", messages=user("weather? [[tool:get_weather]]"), tools=[WEATHER_TOOL_OPENAI]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_")
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == EXPECTED_ARGS


def test_it_ignores_the_tool_directive_when_the_request_has_no_tools(
    provider: FakeProvider,
) -> None:
    completion = oai(provider).chat.completions.create(
        model="gpt-4o", messages=user("[[tool:get_weather]]")
    )
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.tool_calls is None


def test_it_answers_in_text_after_an_openai_tool_result(provider: FakeProvider) -> None:
    messages = [
        *user("weather? [[tool:get_weather]]"),
        *weather_tool_round_trip(),
    ]
    completion = oai(provider).chat.completions.create(
        model="gpt-4o", messages=messages, tools=[WEATHER_TOOL_OPENAI]
    )
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content == TEN_TOKENS


def test_it_streams_an_openai_tool_call_as_argument_fragments(provider: FakeProvider) -> None:
    stream = oai(provider).chat.completions.create(
        model="gpt-4o",
        messages=user("[[tool:get_weather]]"),
        tools=[WEATHER_TOOL_OPENAI],
        stream=True,
    )
    deltas = [tc for c in stream if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    head, fragments = deltas[0], deltas[1:]
    assert head.index == 0
    assert head.id is not None and head.id.startswith("call_")
    assert head.type == "function"
    assert head.function is not None and head.function.arguments is not None
    assert head.function.name == "get_weather"
    assert len(fragments) > 1
    assert all(f.index == 0 and f.id is None for f in fragments)
    arguments = head.function.arguments
    for fragment in fragments:
        assert fragment.function is not None and fragment.function.arguments is not None
        arguments += fragment.function.arguments
    assert json.loads(arguments) == EXPECTED_ARGS


def test_it_reports_the_openai_tool_call_finish_reason_when_streaming(
    provider: FakeProvider,
) -> None:
    stream = oai(provider).chat.completions.create(
        model="gpt-4o",
        messages=user("[[tool:get_weather]]"),
        tools=[WEATHER_TOOL_OPENAI],
        stream=True,
    )
    finishes = [c.choices[0].finish_reason for c in stream if c.choices]
    assert finishes[-1] == "tool_calls"
    assert set(finishes[:-1]) == {None}


def test_it_rejects_a_wrong_openai_key_without_echoing_it(provider: FakeProvider) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        oai(provider, key="sk-wrong-secret-123").chat.completions.create(
            model="gpt-4o", messages=user("hi")
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert caught.value.status_code == 401
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_api_key"
    assert error["param"] is None
    assert "sk-wrong-secret-123" not in caught.value.response.text


@pytest.mark.parametrize(
    ("fault", "error_class", "status"),
    [
        ("http_500", openai.InternalServerError, 500),
        ("http_502", openai.InternalServerError, 502),
        ("http_529", openai.InternalServerError, 529),
        ("http_429", openai.RateLimitError, 429),
        ("http_400", openai.BadRequestError, 400),
        ("http_401", openai.AuthenticationError, 401),
    ],
)
def test_it_turns_queued_http_faults_into_the_matching_openai_sdk_errors(
    provider: FakeProvider, fault: str, error_class: type[openai.APIStatusError], status: int
) -> None:
    provider.fail_next(fault)
    with pytest.raises(error_class) as caught:
        oai(provider).chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert caught.value.status_code == status
    # the fault was consumed: the next request succeeds
    assert oai(provider).chat.completions.create(model="gpt-4o", messages=user("hi")).choices


def test_it_sends_openai_rate_limits_with_retry_after_and_a_provider_shaped_body(
    provider: FakeProvider,
) -> None:
    provider.fail_next("http_429")
    response = openai_post(provider, {"model": "gpt-4o", "messages": user("hi")})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_it_explains_openai_context_length_errors(provider: FakeProvider) -> None:
    provider.fail_next("http_400")
    with pytest.raises(openai.BadRequestError) as caught:
        oai(provider).chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert caught.value.code == "context_length_exceeded"
    assert "maximum context length" in caught.value.message


def test_it_serves_digitalocean_through_the_openai_sdk_with_its_own_key(
    provider: FakeProvider,
) -> None:
    client = openai.OpenAI(
        base_url=provider.digitalocean_base_url,
        api_key=provider.keys["digitalocean"],
        max_retries=0,
    )
    completion = client.chat.completions.create(model="llama3.3-70b-instruct", messages=user("hi"))
    assert completion.model == "llama3.3-70b-instruct"
    assert completion.choices[0].message.content == TEN_TOKENS
    assert provider.requests[-1].provider == "digitalocean"
    assert provider.requests[-1].path == "/do/v1/chat/completions"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=provider.digitalocean_base_url,
            api_key=provider.keys["openai"],
            max_retries=0,
        ).chat.completions.create(model="m", messages=user("hi"))


def test_it_raises_in_the_openai_sdk_when_an_error_arrives_mid_stream(
    provider: FakeProvider,
) -> None:
    stream = oai(provider).chat.completions.create(
        model="gpt-4o", messages=user("[[fault:error_mid_stream:after=2]]"), stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "tok0 tok1 "


# ------------------------------------------------------------------ Anthropic


def test_it_answers_an_anthropic_message_with_a_text_block_and_usage(
    provider: FakeProvider,
) -> None:
    message = claude(provider).messages.create(
        model="claude-fake-1",
        max_tokens=100,
        system="You are terse.",
        messages=user("hello there"),
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "claude-fake-1"
    assert [b.type for b in message.content] == ["text"]
    assert isinstance(message.content[0], TextBlock)
    assert message.content[0].text == TEN_TOKENS
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens == 3 + 2 + 3
    assert message.usage.output_tokens == 10


def test_it_accepts_an_anthropic_system_prompt_given_as_blocks(provider: FakeProvider) -> None:
    message = claude(provider).messages.create(
        model="claude-fake-1",
        max_tokens=100,
        system=[{"type": "text", "text": "one two three four"}],
        messages=user("hi"),
    )
    assert message.usage.input_tokens == 4 + 1 + 3


def test_it_streams_an_anthropic_message_with_cumulative_usage(provider: FakeProvider) -> None:
    with claude(provider).messages.stream(
        model="claude-fake-1", max_tokens=100, messages=user("hi [[tokens:5]]")
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert texts == ["tok0 ", "tok1 ", "tok2 ", "tok3 ", "tok4 "]
    assert isinstance(final.content[0], TextBlock)
    assert final.content[0].text == "tok0 tok1 tok2 tok3 tok4 "
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 2 + 3
    assert final.usage.output_tokens == 5


def test_it_sends_the_documented_anthropic_event_sequence(provider: FakeProvider) -> None:
    body = {"model": "claude", "max_tokens": 50, "stream": True, "messages": user("[[tokens:3]]")}
    with httpx.stream(
        "POST",
        provider.anthropic_base_url + "/v1/messages",
        json=body,
        headers=anthropic_headers(provider),
    ) as response:
        events = sse_events(list(response.iter_lines()))
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [json.loads(data) for _, data in events]
    assert [p["type"] for p in payloads] == names  # data.type mirrors the event name
    start = payloads[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["output_tokens"] == 1
    assert payloads[1]["content_block"] == {"type": "text", "text": ""}
    assert payloads[3]["delta"] == {"type": "text_delta", "text": "tok0 "}
    assert payloads[7]["delta"]["stop_reason"] == "end_turn"
    assert payloads[7]["usage"]["output_tokens"] == 3


def test_it_stops_anthropic_answers_at_max_tokens(provider: FakeProvider) -> None:
    client = claude(provider)
    message = client.messages.create(model="claude", max_tokens=2, messages=user("hi"))
    assert message.stop_reason == "max_tokens"
    assert isinstance(message.content[0], TextBlock)
    assert message.content[0].text == "tok0 tok1 "
    with client.messages.stream(model="claude", max_tokens=2, messages=user("hi")) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 2


def test_it_stops_anthropic_answers_at_a_stop_sequence(provider: FakeProvider) -> None:
    message = claude(provider).messages.create(
        model="claude", max_tokens=100, stop_sequences=["tok2"], messages=user("hi")
    )
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "tok2"
    assert isinstance(message.content[0], TextBlock)
    assert message.content[0].text == "tok0 tok1 "


def test_it_answers_with_an_anthropic_tool_use_block(provider: FakeProvider) -> None:
    message = claude(provider).messages.create(
        model="claude",
        max_tokens=100,
        tools=[WEATHER_TOOL_ANTHROPIC],
        messages=user("[[tool:get_weather]]"),
    )
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert block.type == "tool_use"
    assert block.id.startswith("toolu_")
    assert block.name == "get_weather"
    assert block.input == EXPECTED_ARGS


def test_it_streams_an_anthropic_tool_use_as_input_json_deltas(provider: FakeProvider) -> None:
    with claude(provider).messages.stream(
        model="claude",
        max_tokens=100,
        tools=[WEATHER_TOOL_ANTHROPIC],
        messages=user("[[tool:get_weather]]"),
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert len(deltas) > 1
    assert {d.type for d in deltas} == {"input_json_delta"}
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use"
    assert final.content[0].input == EXPECTED_ARGS


def test_it_answers_in_text_after_an_anthropic_tool_result(provider: FakeProvider) -> None:
    messages = [
        *user("[[tool:get_weather]]"),
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
        },
    ]
    message = claude(provider).messages.create(
        model="claude", max_tokens=100, tools=[WEATHER_TOOL_ANTHROPIC], messages=messages
    )
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"


def test_it_rejects_a_wrong_anthropic_key_without_echoing_it(provider: FakeProvider) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        claude(provider, key="sk-ant-wrong-777").messages.create(
            model="claude", max_tokens=10, messages=user("hi")
        )
    assert caught.value.status_code == 401
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "authentication_error"
    assert "sk-ant-wrong-777" not in caught.value.response.text


def test_it_can_insist_on_the_documented_x_api_key_header(provider: FakeProvider) -> None:
    body = {"model": "claude", "max_tokens": 5, "messages": user("hi")}
    url = provider.anthropic_base_url + "/v1/messages"
    key = provider.keys["anthropic"]
    bearer = {"Authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"}
    assert httpx.post(url, json=body, headers=bearer).status_code == 200
    provider.anthropic_accepts_bearer = False
    assert httpx.post(url, json=body, headers=bearer).status_code == 401
    assert httpx.post(url, json=body, headers=anthropic_headers(provider)).status_code == 200


def test_it_requires_the_anthropic_version_header(provider: FakeProvider) -> None:
    response = httpx.post(
        provider.anthropic_base_url + "/v1/messages",
        json={"model": "claude", "max_tokens": 10, "messages": user("hi")},
        headers={"x-api-key": provider.keys["anthropic"]},
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }


def test_it_reports_anthropic_overload_as_a_529(provider: FakeProvider) -> None:
    provider.fail_next("http_529", provider="anthropic")
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude(provider).messages.create(model="claude", max_tokens=10, messages=user("hi"))
    assert isinstance(caught.value, anthropic.InternalServerError)
    assert caught.value.status_code == 529
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize(
    ("fault", "error_class", "error_type"),
    [
        ("http_500", anthropic.InternalServerError, "api_error"),
        ("http_429", anthropic.RateLimitError, "rate_limit_error"),
        ("http_400", anthropic.BadRequestError, "invalid_request_error"),
    ],
)
def test_it_turns_queued_http_faults_into_the_matching_anthropic_sdk_errors(
    provider: FakeProvider, fault: str, error_class: type[anthropic.APIStatusError], error_type: str
) -> None:
    provider.fail_next(fault)
    with pytest.raises(error_class) as caught:
        claude(provider).messages.create(model="claude", max_tokens=10, messages=user("hi"))
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == error_type


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "claude", "messages": user("hi")}, "max_tokens"),
        (
            {
                "model": "claude",
                "max_tokens": 5,
                "messages": [{"role": "system", "content": "x"}, *user("hi")],
            },
            'Unexpected role "system"',
        ),
    ],
)
def test_it_rejects_invalid_anthropic_requests(
    provider: FakeProvider, body: dict[str, Any], fragment: str
) -> None:
    response = httpx.post(
        provider.anthropic_base_url + "/v1/messages", json=body, headers=anthropic_headers(provider)
    )
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fragment in response.json()["error"]["message"]


def test_it_raises_in_the_anthropic_sdk_when_an_error_event_arrives_mid_stream(
    provider: FakeProvider,
) -> None:
    stream = claude(provider).messages.stream(
        model="claude", max_tokens=50, messages=user("[[fault:error_mid_stream:after=1]]")
    )
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught, stream as events:
        texts.extend(events.text_stream)
    assert texts == ["tok0 "]
    assert "overloaded_error" in str(caught.value)


# ------------------------------------------------------------------ faults over raw HTTP


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_it_aborts_the_connection_after_the_requested_number_of_chunks(
    provider: FakeProvider, dialect: str
) -> None:
    if dialect == "openai":
        url = provider.openai_base_url + "/chat/completions"
        headers = {"Authorization": f"Bearer {provider.keys['openai']}"}
        body = {"model": "m", "messages": user("hi"), "stream": True}
    else:
        url = provider.anthropic_base_url + "/v1/messages"
        headers = anthropic_headers(provider)
        body = {"model": "m", "max_tokens": 50, "messages": user("hi"), "stream": True}
    provider.fail_next("drop_mid_stream", after=3)
    lines: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", url, json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        lines.extend(response.iter_lines())
    contents = [d for _, d in sse_events(lines) if re.search(r'"tok\d+ "', d)]
    assert len(contents) == 3
    assert not any("[DONE]" in d or "message_stop" in d for _, d in sse_events(lines))


def test_it_cuts_a_non_stream_body_in_half_for_drop_mid_stream(provider: FakeProvider) -> None:
    provider.fail_next("drop_mid_stream")
    with pytest.raises(httpx.RemoteProtocolError):
        openai_post(provider, {"model": "m", "messages": user("hi")})


def test_it_closes_the_connection_without_a_response_for_drop(provider: FakeProvider) -> None:
    provider.fail_next("drop")
    with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
        openai_post(provider, {"model": "m", "messages": user("hi")})
    with pytest.raises(openai.APIConnectionError):
        provider.fail_next("drop")
        oai(provider).chat.completions.create(model="m", messages=user("hi"))


def test_it_answers_late_for_slow_and_times_out_a_short_client(provider: FakeProvider) -> None:
    provider.fail_next("slow", seconds=0.4)
    started = time.monotonic()
    response = openai_post(provider, {"model": "m", "messages": user("hi")})
    assert time.monotonic() - started >= 0.4
    assert response.status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        openai_post(
            provider, {"model": "m", "messages": user("[[fault:slow:seconds=2]]")}, timeout=0.2
        )


def test_it_spaces_stream_chunks_for_slow_chunks(provider: FakeProvider) -> None:
    body: dict[str, Any] = {
        "model": "m",
        "messages": user("[[tokens:3]] [[fault:slow_chunks:delay=0.15]]"),
    }
    body["stream"] = True
    arrivals: list[float] = []
    with openai_stream(provider, body) as response:
        for line in response.iter_lines():
            if '"content":"tok' in line:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 3
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap >= 0.12 for gap in gaps)


def test_it_serves_garbage_for_non_json_and_missing_fields_for_malformed(
    provider: FakeProvider,
) -> None:
    provider.fail_next("non_json")
    garbage = openai_post(provider, {"model": "m", "messages": user("hi")})
    assert garbage.status_code == 200
    assert garbage.headers["content-type"].startswith("text/plain")
    with pytest.raises(json.JSONDecodeError):
        json.loads(garbage.text)
    provider.fail_next("malformed")
    malformed = openai_post(provider, {"model": "m", "messages": user("hi")})
    assert malformed.status_code == 200
    assert "choices" not in malformed.json()
    provider.fail_next("malformed", provider="anthropic")
    message = httpx.post(
        provider.anthropic_base_url + "/v1/messages",
        json={"model": "m", "max_tokens": 5, "messages": user("hi")},
        headers=anthropic_headers(provider),
    ).json()
    assert message["type"] == "message" and "content" not in message


def test_it_lets_concurrent_requests_choose_their_own_faults_with_directives(
    provider: FakeProvider,
) -> None:
    texts = ["[[fault:http_500]]", "plain", "[[fault:http_429:retry_after=7]]", "[[tokens:2]]"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(
            pool.map(lambda t: openai_post(provider, {"model": "m", "messages": user(t)}), texts)
        )
    assert [r.status_code for r in responses] == [500, 200, 429, 200]
    assert responses[0].json()["error"]["type"] == "server_error"
    assert responses[2].headers["retry-after"] == "7"
    assert responses[3].json()["usage"]["completion_tokens"] == 2


def test_it_rejects_unknown_fault_names(provider: FakeProvider) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        provider.fail_next("http_999")
    response = openai_post(provider, {"model": "m", "messages": user("[[fault:nope]]")})
    assert response.status_code == 400
    assert "nope" in response.json()["error"]["message"]


def test_it_consumes_queued_faults_in_order_and_only_for_their_provider(
    provider: FakeProvider,
) -> None:
    provider.fail_next("http_500", provider="anthropic", count=2)
    provider.fail_next("http_429")
    ok = openai_post(provider, {"model": "m", "messages": user("hi")})
    assert ok.status_code == 429  # the anthropic-only faults were skipped, the next one taken
    assert openai_post(provider, {"model": "m", "messages": user("hi")}).status_code == 200
    statuses = [
        httpx.post(
            provider.anthropic_base_url + "/v1/messages",
            json={"model": "m", "max_tokens": 5, "messages": user("hi")},
            headers=anthropic_headers(provider),
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [500, 500, 200]


def test_it_does_not_spend_a_queued_fault_on_a_refused_request(provider: FakeProvider) -> None:
    provider.fail_next("http_500")
    refused = httpx.post(
        provider.openai_base_url + "/chat/completions",
        json={"model": "m", "messages": user("hi")},
        headers={"Authorization": "Bearer nope"},
    )
    assert refused.status_code == 401
    assert openai_post(provider, {"model": "m", "messages": user("hi")}).status_code == 500


# ------------------------------------------------------------------ recording, keys, counting


def test_it_records_every_request_with_lower_cased_headers_and_parsed_body(
    provider: FakeProvider,
) -> None:
    oai(provider).chat.completions.create(model="gpt-4o", messages=user("hi"))
    with pytest.raises(anthropic.AuthenticationError):
        claude(provider, key="bad").messages.create(model="c", max_tokens=5, messages=user("x"))
    first, second = provider.requests
    assert first.provider == "openai"
    assert first.method == "POST"
    assert first.path == "/openai/v1/chat/completions"
    assert first.headers["authorization"] == f"Bearer {provider.keys['openai']}"
    assert first.body == {"model": "gpt-4o", "messages": user("hi")}
    assert second.provider == "anthropic"
    assert second.headers["authorization"] == "Bearer bad"  # how anthropic-sdk 2.x sends api_key
    assert "anthropic-version" in second.headers
    assert second.body["max_tokens"] == 5
    assert first.received_at <= second.received_at <= time.time()


def test_it_honours_key_rotation_and_reset_restores_the_default_keys(
    provider: FakeProvider,
) -> None:
    old = provider.keys["openai"]
    provider.keys["openai"] = "sk-fake-openai-rotated"
    with pytest.raises(openai.AuthenticationError):
        oai(provider, key=old).chat.completions.create(model="m", messages=user("hi"))
    assert (
        oai(provider, key="sk-fake-openai-rotated")
        .chat.completions.create(model="m", messages=user("hi"))
        .choices
    )
    provider.fail_next("http_500")
    provider.reset()
    assert provider.keys["openai"] == old
    assert provider.requests == []
    assert oai(provider).chat.completions.create(model="m", messages=user("hi")).choices


SECOND_OPENAI_KEY = "sk-fake-openai-second-0123456789"


def openai_status(fake: FakeProvider, key: str) -> int:
    return openai_post_with(fake, key).status_code


def openai_post_with(fake: FakeProvider, key: str, text: str = "hi") -> httpx.Response:
    return httpx.post(
        fake.openai_base_url + "/chat/completions",
        json={"model": "m", "messages": user(text)},
        headers={"Authorization": f"Bearer {key}"},
    )


def test_it_accepts_every_extra_key_of_a_provider_and_reset_forgets_them(
    provider: FakeProvider,
) -> None:
    provider.extra_keys["openai"] = [SECOND_OPENAI_KEY]
    provider.extra_keys["anthropic"] = ["sk-ant-fake-second-0123456789"]
    assert openai_status(provider, provider.keys["openai"]) == 200
    assert openai_status(provider, SECOND_OPENAI_KEY) == 200
    assert openai_status(provider, "sk-fake-openai-unknown-0123") == 401
    # Anthropic's extra key works in x-api-key and, as the SDK sends it, as a bearer.
    second = claude(provider, key="sk-ant-fake-second-0123456789")
    assert second.messages.create(model="c", max_tokens=5, messages=user("x")).content
    headers = {"x-api-key": "sk-ant-fake-second-0123456789", "anthropic-version": "2023-06-01"}
    answered = httpx.post(
        provider.anthropic_base_url + "/v1/messages",
        json={"model": "c", "max_tokens": 5, "messages": user("x")},
        headers=headers,
    )
    assert answered.status_code == 200
    # The second key goes to its own provider only.
    assert (
        oai(provider, key=SECOND_OPENAI_KEY)
        .chat.completions.create(model="m", messages=user("hi"))
        .choices
    )
    do = openai.OpenAI(
        base_url=provider.digitalocean_base_url, api_key=SECOND_OPENAI_KEY, max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        do.chat.completions.create(model="m", messages=user("hi"))
    provider.reset()
    assert provider.extra_keys == {}
    assert openai_status(provider, SECOND_OPENAI_KEY) == 401


def test_a_failed_key_gets_its_fault_on_every_request_until_reset(
    provider: FakeProvider,
) -> None:
    provider.extra_keys["openai"] = [SECOND_OPENAI_KEY]
    provider.fail_key(SECOND_OPENAI_KEY, "http_429", retry_after=30)
    for _ in range(3):
        response = openai_post_with(provider, SECOND_OPENAI_KEY)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "30"
        assert openai_status(provider, provider.keys["openai"]) == 200
    sent = [r.headers["authorization"] for r in provider.requests_for("openai")]
    assert sent == [f"Bearer {SECOND_OPENAI_KEY}", f"Bearer {provider.keys['openai']}"] * 3
    # Only the answered requests are billed: a 429 costs nothing.
    assert [bill.ending for bill in provider.bills] == ["answered"] * 3
    provider.reset()
    provider.extra_keys["openai"] = [SECOND_OPENAI_KEY]
    assert openai_status(provider, SECOND_OPENAI_KEY) == 200


def test_a_key_fault_comes_before_directives_and_leaves_the_queue_alone(
    provider: FakeProvider,
) -> None:
    provider.fail_key(provider.keys["anthropic"], "http_401")
    provider.extra_keys["anthropic"] = ["sk-ant-fake-second-0123456789"]
    provider.fail_next("http_500")
    with pytest.raises(anthropic.AuthenticationError):
        claude(provider).messages.create(
            model="c", max_tokens=5, messages=user("[[fault:http_529]]")
        )
    # The queued fault is still there for the next request with a healthy key.
    second = claude(provider, key="sk-ant-fake-second-0123456789")
    with pytest.raises(anthropic.InternalServerError) as caught:
        second.messages.create(model="c", max_tokens=5, messages=user("x"))
    assert caught.value.status_code == 500
    assert second.messages.create(model="c", max_tokens=5, messages=user("x")).content


def test_a_key_fault_also_answers_embeddings(provider: FakeProvider) -> None:
    provider.fail_key(provider.keys["digitalocean"], "http_503", retry_after=7)
    response = httpx.post(
        provider.digitalocean_base_url + "/embeddings",
        json={"model": "e", "input": "hello"},
        headers={"Authorization": f"Bearer {provider.keys['digitalocean']}"},
    )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert provider.bills == []


def test_a_key_fault_never_lets_an_unknown_key_in(provider: FakeProvider) -> None:
    provider.fail_key("sk-fake-openai-unknown-0123", "slow", seconds=0)
    assert openai_status(provider, "sk-fake-openai-unknown-0123") == 401


@pytest.mark.parametrize(
    ("key", "fault", "params"),
    [
        ("", "http_429", {}),
        ("sk-x-0123456789", "http_999", {}),
        ("sk-x-0123456789", "broken_json", {"kind": "nope"}),
    ],
)
def test_fail_key_refuses_what_it_cannot_do(
    provider: FakeProvider, key: str, fault: str, params: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        provider.fail_key(key, fault, **params)


def test_it_never_counts_more_input_tokens_than_bytes_plus_message_overhead(
    provider: FakeProvider,
) -> None:
    texts = ["a b c", "héllo wörld ünïcode", "x" * 50, "   spaced    out   ", ""]
    messages = [{"role": "user", "content": t} for t in texts]
    usage = openai_post(provider, {"model": "m", "messages": messages}).json()["usage"]
    words = sum(len(t.split()) for t in texts)
    assert usage["prompt_tokens"] == words + 3 * len(texts)
    assert usage["prompt_tokens"] <= sum(len(t.encode()) for t in texts) + 3 * len(texts)


def test_it_answers_404_in_the_provider_format_for_unknown_paths(provider: FakeProvider) -> None:
    response = httpx.post(
        provider.url + "/openai/v1/completions",
        json={},
        headers={"Authorization": f"Bearer {provider.keys['openai']}"},
    )
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert provider.requests[-1].path == "/openai/v1/completions"


def test_it_holds_requests_until_released_then_answers_them_normally(
    provider: FakeProvider,
) -> None:
    body = {"model": "m", "messages": user("[[tokens:2]] [[fault:hold]]")}
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(openai_post, provider, body) for _ in range(3)]
        provider.wait_for_held(3)
        assert not any(future.done() for future in futures)
        provider.release_held()
        responses = [future.result() for future in futures]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all(r.json()["usage"]["completion_tokens"] == 2 for r in responses)
    assert provider.held == 0
    # Released stays released until held again.
    assert openai_post(provider, body).status_code == 200
    provider.hold()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(openai_post, provider, body)
        provider.wait_for_held(1)
        provider.release_held()
        assert future.result().status_code == 200


# ------------------------------------------------------------------ pieces and reasoning


def chat_url(fake: FakeProvider, dialect: str) -> str:
    if dialect == "openai":
        return fake.openai_base_url + "/chat/completions"
    return fake.anthropic_base_url + "/v1/messages"


def chat_headers(fake: FakeProvider, dialect: str) -> dict[str, str]:
    if dialect == "openai":
        return {"Authorization": f"Bearer {fake.keys['openai']}"}
    return anthropic_headers(fake)


def chat_body(text: str, stream: bool = False, **extra: Any) -> dict[str, Any]:
    """A request body both dialects accept (Anthropic requires max_tokens)."""
    return {
        "model": "m",
        "max_tokens": 100_000,
        "messages": user(text),
        "stream": stream,
        **extra,
    }


def streamed(
    fake: FakeProvider, dialect: str, body: dict[str, Any]
) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) of a whole stream; ``[DONE]`` stays a string."""
    body = {**body, "stream": True}
    with httpx.stream(
        "POST", chat_url(fake, dialect), json=body, headers=chat_headers(fake, dialect)
    ) as response:
        assert response.status_code == 200
        events = sse_events(list(response.iter_lines()))
    return [(name, data if data == "[DONE]" else json.loads(data)) for name, data in events]


def openai_deltas(events: list[tuple[str | None, Any]], key: str) -> list[str]:
    return [
        data["choices"][0]["delta"][key]
        for _, data in events
        if data != "[DONE]" and data["choices"] and key in data["choices"][0]["delta"]
    ]


def anthropic_deltas(events: list[tuple[str | None, Any]], kind: str) -> list[tuple[int, Any]]:
    return [
        (data["index"], data["delta"])
        for name, data in events
        if name == "content_block_delta" and data["delta"]["type"] == kind
    ]


def test_it_streams_pieces_of_any_text_and_counts_one_token_per_piece(
    provider: FakeProvider,
) -> None:
    body = chat_body("hi [[piece:漢]] [[tokens:5]]", stream_options={"include_usage": True})
    events = streamed(provider, "openai", body)
    assert openai_deltas(events, "content") == ["", *["漢"] * 5]  # the role chunk, then pieces
    assert events[-2][1]["usage"]["completion_tokens"] == 5
    answer = openai_post(provider, chat_body("hi [[piece:漢]] [[tokens:5]]")).json()
    assert answer["choices"][0]["message"]["content"] == "漢" * 5
    assert len(answer["choices"][0]["message"]["content"].encode()) == 15
    assert answer["usage"]["completion_tokens"] == 5


def test_it_streams_pieces_of_a_given_byte_size_in_the_anthropic_format(
    provider: FakeProvider,
) -> None:
    events = streamed(provider, "anthropic", chat_body("[[piece_bytes:7]] [[tokens:3]]"))
    assert (
        anthropic_deltas(events, "text_delta")
        == [(0, {"type": "text_delta", "text": "xxxxxxx"})] * 3
    )
    assert events[-2][1]["usage"]["output_tokens"] == 3


def test_it_streams_thousands_of_large_pieces_quickly(provider: FakeProvider) -> None:
    body = chat_body("[[tokens:8000]] [[piece_bytes:4096]]", stream=True)
    started = time.monotonic()
    received = 0
    with httpx.stream(
        "POST", chat_url(provider, "openai"), json=body, headers=chat_headers(provider, "openai")
    ) as response:
        for chunk in response.iter_bytes():
            received += len(chunk)
    elapsed = time.monotonic() - started
    assert received > 8000 * 4096
    assert elapsed < 5, f"8000 pieces of 4 KiB took {elapsed:.1f}s"


def test_it_cuts_custom_pieces_at_a_stop_sequence(provider: FakeProvider) -> None:
    body = chat_body("[[piece:ab]] [[tokens:5]]", stop=["ba"])
    answer = openai_post(provider, body).json()
    # "ab|ab|ab..." holds "ba" from offset 1: one byte kept, two tokens generated
    assert answer["choices"][0]["message"]["content"] == "a"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] == 2


def test_it_cuts_a_long_answer_at_a_late_stop_sequence_quickly(provider: FakeProvider) -> None:
    started = time.monotonic()
    answer = openai_post(provider, chat_body("[[tokens:20000]]", stop=["tok19999"])).json()
    assert time.monotonic() - started < 2  # a quadratic cut takes seconds here
    assert answer["choices"][0]["message"]["content"].endswith(" tok19998 ")
    assert answer["usage"]["completion_tokens"] == 20000


def test_it_answers_openai_reasoning_as_deepseek_reasoning_content(provider: FakeProvider) -> None:
    answer = openai_post(provider, chat_body("[[reasoning:3]] [[tokens:2]]")).json()
    message = answer["choices"][0]["message"]
    assert message["reasoning_content"] == "think0 think1 think2 "
    assert message["content"] == "tok0 tok1 "
    assert answer["usage"]["completion_tokens"] == 5
    assert answer["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    plain = openai_post(provider, chat_body("[[tokens:2]]")).json()
    assert "reasoning_content" not in plain["choices"][0]["message"]
    assert plain["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0


def test_it_streams_openai_reasoning_deltas_before_the_content(provider: FakeProvider) -> None:
    body = chat_body("[[reasoning:2]] [[tokens:2]]", stream_options={"include_usage": True})
    events = streamed(provider, "openai", body)
    deltas = [data["choices"][0]["delta"] for _, data in events[1:5]]
    assert deltas == [
        {"reasoning_content": "think0 "},
        {"reasoning_content": "think1 "},
        {"content": "tok0 "},
        {"content": "tok1 "},
    ]
    usage = events[-2][1]["usage"]
    assert usage["completion_tokens"] == 4
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 2


def test_it_answers_anthropic_reasoning_with_a_signed_thinking_block(
    provider: FakeProvider,
) -> None:
    message = claude(provider).messages.create(
        model="claude",
        max_tokens=100,
        messages=[{"role": "user", "content": "[[reasoning:3]] [[tokens:2]]"}],
    )
    thinking, text = message.content
    assert thinking.type == "thinking" and text.type == "text"
    assert thinking.thinking == "think0 think1 think2 "
    assert thinking.signature
    assert text.text == "tok0 tok1 "
    assert message.usage.output_tokens == 5


def test_it_streams_anthropic_reasoning_as_a_thinking_block_then_the_text_block(
    provider: FakeProvider,
) -> None:
    events = streamed(provider, "anthropic", chat_body("[[reasoning:2]] [[tokens:1]]"))
    assert [(name, data.get("index")) for name, data in events] == [
        ("message_start", None),
        ("content_block_start", 0),
        ("ping", None),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[1][1]["content_block"] == {"type": "thinking", "thinking": ""}
    assert [d for _, d in anthropic_deltas(events, "thinking_delta")] == [
        {"type": "thinking_delta", "thinking": "think0 "},
        {"type": "thinking_delta", "thinking": "think1 "},
    ]
    assert anthropic_deltas(events, "signature_delta")[0][1]["signature"]
    assert events[7][1]["content_block"] == {"type": "text", "text": ""}
    assert events[-2][1]["usage"]["output_tokens"] == 3


def test_the_anthropic_sdk_assembles_the_streamed_thinking_block(provider: FakeProvider) -> None:
    with claude(provider).messages.stream(
        model="claude",
        max_tokens=100,
        messages=[{"role": "user", "content": "[[reasoning:2]] [[tokens:1]]"}],
    ) as stream:
        final = stream.get_final_message()
    thinking, text = final.content
    assert thinking.type == "thinking" and thinking.thinking == "think0 think1 "
    assert thinking.signature
    assert text.type == "text" and text.text == "tok0 "
    assert final.usage.output_tokens == 3


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_it_counts_hidden_reasoning_without_emitting_it(
    provider: FakeProvider, dialect: str
) -> None:
    text = "[[hidden_reasoning:7]] [[tokens:2]]"
    answer = httpx.post(
        chat_url(provider, dialect), json=chat_body(text), headers=chat_headers(provider, dialect)
    ).json()
    events = streamed(provider, dialect, chat_body(text, stream_options={"include_usage": True}))
    if dialect == "openai":
        assert "reasoning_content" not in answer["choices"][0]["message"]
        assert answer["choices"][0]["message"]["content"] == "tok0 tok1 "
        assert answer["usage"]["completion_tokens"] == 9
        assert answer["usage"]["completion_tokens_details"]["reasoning_tokens"] == 7
        assert openai_deltas(events, "reasoning_content") == []
        assert events[-2][1]["usage"]["completion_tokens"] == 9
    else:
        assert [block["type"] for block in answer["content"]] == ["text"]
        assert answer["usage"]["output_tokens"] == 9
        assert anthropic_deltas(events, "thinking_delta") == []
        assert events[-2][1]["usage"]["output_tokens"] == 9


def test_it_spends_the_token_cap_on_reasoning_first(provider: FakeProvider) -> None:
    answer = openai_post(provider, chat_body("[[reasoning:4]] [[tokens:5]]", max_tokens=6)).json()
    assert answer["choices"][0]["message"]["reasoning_content"] == "think0 think1 think2 think3 "
    assert answer["choices"][0]["message"]["content"] == "tok0 tok1 "
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 6


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_it_can_drop_a_stream_in_the_middle_of_its_reasoning(
    provider: FakeProvider, dialect: str
) -> None:
    body = chat_body("[[reasoning:5]] [[fault:drop_mid_stream:after=2]]", stream=True)
    lines: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST", chat_url(provider, dialect), json=body, headers=chat_headers(provider, dialect)
        ) as response,
    ):
        lines.extend(response.iter_lines())
    data = [d for _, d in sse_events(lines)]
    assert sum(bool(re.search(r'"think\d+ "', d)) for d in data) == 2
    assert not any("tok0" in d for d in data)


def test_it_can_send_an_error_in_the_middle_of_anthropic_thinking(provider: FakeProvider) -> None:
    events = streamed(
        provider, "anthropic", chat_body("[[reasoning:4]] [[fault:error_mid_stream:after=3]]")
    )
    assert len(anthropic_deltas(events, "thinking_delta")) == 3
    assert anthropic_deltas(events, "signature_delta") == []
    assert events[-1][0] == "error"


def test_slow_chunks_also_spaces_the_reasoning_pieces(provider: FakeProvider) -> None:
    body = chat_body("[[reasoning:3]] [[tokens:1]] [[fault:slow_chunks:delay=0.15]]")
    started = time.monotonic()
    events = streamed(provider, "openai", body)
    assert len(openai_deltas(events, "reasoning_content")) == 3
    assert time.monotonic() - started >= 4 * 0.15


# ------------------------------------------------------------------ billing


def post_raw(fake: FakeProvider, dialect: str, body: dict[str, Any]) -> tuple[httpx.Response, int]:
    """Post ``body`` as exactly known bytes; return the response and the body's length."""
    raw = json.dumps(body).encode()
    headers = {**chat_headers(fake, dialect), "Content-Type": "application/json"}
    return httpx.post(chat_url(fake, dialect), content=raw, headers=headers), len(raw)


def test_it_records_the_size_of_the_raw_body(provider: FakeProvider) -> None:
    response, size = post_raw(provider, "openai", chat_body("héllo wörld"))
    assert response.status_code == 200
    assert provider.requests[-1].size == size


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_it_reports_the_body_bytes_as_input_tokens_when_billing_by_bytes(
    provider: FakeProvider, dialect: str
) -> None:
    provider.input_billing = "bytes"
    answer, size = post_raw(provider, dialect, chat_body("漢字 and more [[tokens:2]]"))
    usage = answer.json()["usage"]
    assert usage["prompt_tokens" if dialect == "openai" else "input_tokens"] == size
    body = chat_body("[[tokens:2]]", stream=True, stream_options={"include_usage": True})
    raw = json.dumps(body).encode()
    headers = {**chat_headers(provider, dialect), "Content-Type": "application/json"}
    with httpx.stream("POST", chat_url(provider, dialect), content=raw, headers=headers) as r:
        events = [json.loads(d) for _, d in sse_events(list(r.iter_lines())) if d != "[DONE]"]
    if dialect == "openai":
        assert events[-1]["usage"]["prompt_tokens"] == len(raw)
    else:
        assert events[0]["message"]["usage"]["input_tokens"] == len(raw)
    provider.reset()
    assert provider.input_billing == "words"
    answer, size = post_raw(provider, dialect, chat_body("one two"))
    assert answer.json()["usage"]["prompt_tokens" if dialect == "openai" else "input_tokens"] == 5


def test_a_bill_directive_chooses_the_billing_of_one_request(provider: FakeProvider) -> None:
    system = "[[bill:bytes]] be brief"
    answer, size = post_raw(provider, "anthropic", chat_body("one two", system=system))
    assert answer.json()["usage"]["input_tokens"] == size
    answer, _ = post_raw(provider, "anthropic", chat_body("one two"))
    assert answer.json()["usage"]["input_tokens"] == 2 + 3
    provider.input_billing = "bytes"
    answer, _ = post_raw(provider, "openai", chat_body("[[bill:words]] one two"))
    assert answer.json()["usage"]["prompt_tokens"] == 3 + 3


def test_it_refuses_unknown_billings(provider: FakeProvider) -> None:
    with pytest.raises(ValueError, match="unknown input billing"):
        provider.input_billing = "chars"
    assert provider.input_billing == "words"
    answer, _ = post_raw(provider, "openai", chat_body("[[bill:chars]]"))
    assert answer.status_code == 400
    assert "chars" in answer.json()["error"]["message"]
    assert provider.bills == []


# ------------------------------------------------------------------ broken_json


@pytest.mark.parametrize("kind", ["deep", "surrogate", "truncated"])
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_broken_json_carries_the_usage_then_fails_to_parse(
    provider: FakeProvider, dialect: str, kind: str
) -> None:
    provider.fail_next("broken_json", kind=kind)
    answer, _ = post_raw(provider, dialect, chat_body("one two three [[tokens:4]]"))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert int(answer.headers["content-length"]) == len(answer.content)
    if dialect == "openai":
        usage = b'"usage":{"prompt_tokens":7,"completion_tokens":4,"total_tokens":11}'
    else:
        usage = b'"usage":{"input_tokens":7,"output_tokens":4}'
    assert usage in answer.content[:200]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(answer.content)


def test_each_broken_json_kind_breaks_in_its_own_way(provider: FakeProvider) -> None:
    bodies = {}
    for kind in ("deep", "surrogate", "truncated"):
        text = f"[[fault:broken_json:kind={kind}]]"
        bodies[kind] = openai_post(provider, chat_body(text)).content
    assert b"[" * 1100 in bodies["deep"]
    assert json.loads(bodies["surrogate"])["choices"][0]["message"]["content"].endswith("\ud800")
    with pytest.raises(json.JSONDecodeError):
        json.loads(bodies["truncated"])


def test_broken_json_reports_and_bills_the_token_counts_it_is_given(provider: FakeProvider) -> None:
    provider.fail_next("broken_json", prompt_tokens=123, completion_tokens=45)
    answer, size = post_raw(provider, "anthropic", chat_body("hi [[id:broken]]", stream=True))
    assert answer.headers["content-type"].startswith("application/json")
    assert b'"usage":{"input_tokens":123,"output_tokens":45}' in answer.content
    assert provider.bills == [Bill("anthropic", "broken", 123, 45, "answered", size)]


def test_it_refuses_unknown_broken_json_kinds(provider: FakeProvider) -> None:
    with pytest.raises(ValueError, match="broken_json kind"):
        provider.fail_next("broken_json", kind="sideways")
    answer = openai_post(provider, chat_body("[[fault:broken_json:kind=sideways]]"))
    assert answer.status_code == 400
    assert "sideways" in answer.json()["error"]["message"]


# ------------------------------------------------------------------ bills


def test_it_bills_an_answer_with_its_label_tokens_and_body_size(provider: FakeProvider) -> None:
    answer, size = post_raw(provider, "openai", chat_body("one [[id:alpha]] [[tokens:3]]"))
    assert answer.status_code == 200
    assert provider.bills == [Bill("openai", "alpha", 3 + 3, 3, "answered", size)]


def test_it_labels_a_bill_with_the_first_id_directive_in_any_text(provider: FakeProvider) -> None:
    body = chat_body("[[id:from-user]]", system="[[id:from-system]]")
    post_raw(provider, "anthropic", body)
    (bill,) = provider.bills
    assert bill.label == "from-system"
    provider.reset()
    assert provider.bills == []
    post_raw(provider, "openai", chat_body("no label"))
    assert provider.bills[0].label is None


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_it_bills_a_completed_stream_as_its_usage_says(
    provider: FakeProvider, dialect: str
) -> None:
    body = chat_body(
        "[[reasoning:2]] [[hidden_reasoning:3]] [[tokens:4]]",
        stream_options={"include_usage": True},
        stop=["tok3"],
        stop_sequences=["tok3"],
    )
    events = streamed(provider, dialect, body)
    usage = events[-2][1]["usage"]
    reported = usage["completion_tokens" if dialect == "openai" else "output_tokens"]
    assert reported == 2 + 3 + 4  # the token completing the stop sequence is generated
    (bill,) = provider.wait_for_bills(1)
    assert (bill.output_tokens, bill.ending) == (reported, "completed")


@pytest.mark.parametrize("fault", ["drop_mid_stream", "error_mid_stream"])
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_it_bills_the_pieces_sent_before_a_stream_fault_ended_it(
    provider: FakeProvider, dialect: str, fault: str
) -> None:
    provider.fail_next(fault, after=3)
    body = chat_body("[[reasoning:2]] [[hidden_reasoning:4]] [[tokens:10]]", stream=True)
    with (
        contextlib.suppress(httpx.RemoteProtocolError),
        httpx.stream(
            "POST", chat_url(provider, dialect), json=body, headers=chat_headers(provider, dialect)
        ) as response,
    ):
        list(response.iter_lines())
    (bill,) = provider.wait_for_bills(1)
    assert bill.output_tokens == 4 + 3
    assert bill.ending == provider.stream_endings[0]


def test_it_bills_what_went_out_when_the_client_hangs_up_mid_stream(provider: FakeProvider) -> None:
    body = chat_body("[[tokens:50]] [[fault:slow_chunks:delay=0.05]]", stream=True)
    with httpx.stream(
        "POST", chat_url(provider, "openai"), json=body, headers=chat_headers(provider, "openai")
    ) as response:
        lines = response.iter_lines()
        contents = 0
        while contents < 3:
            contents += '"content":"tok' in next(lines)
    (bill,) = provider.wait_for_bills(1)
    assert bill.ending != "completed"
    assert 3 <= bill.output_tokens <= 10
    assert provider.stream_endings == [bill.ending]


def test_it_bills_a_huge_stream_only_up_to_where_a_stalled_client_stopped_it(
    provider: FakeProvider,
) -> None:
    body = chat_body("[[tokens:8000]] [[piece_bytes:4096]]", stream=True)
    with httpx.stream(
        "POST", chat_url(provider, "openai"), json=body, headers=chat_headers(provider, "openai")
    ) as response:
        chunks = response.iter_raw()  # held: closing it would close the connection
        received = len(next(chunks))
        time.sleep(0.5)  # the client stops reading: the fake fills the socket buffers and waits
        assert provider.bills == []
        assert provider.stream_endings == []
    (bill,) = provider.wait_for_bills(1)
    assert bill.ending == "CancelledError"
    assert received // 4096 <= bill.output_tokens < 8000


def test_it_bills_a_non_streamed_answer_whole_when_the_client_left_while_it_was_slow(
    provider: FakeProvider,
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        openai_post(provider, chat_body("[[fault:slow:seconds=5]] [[tokens:4]]"), timeout=0.2)
    (bill,) = provider.wait_for_bills(1)
    assert (bill.output_tokens, bill.ending) == (4, "CancelledError")


def test_it_bills_only_the_answers_a_provider_would_charge_for(provider: FakeProvider) -> None:
    billed = ["slow:seconds=0.01", "hold:seconds=0.01", "malformed", "drop_mid_stream"]
    unbilled = ["http_500", "http_502", "http_429", "http_529", "http_503", "http_400"]
    unbilled += ["http_401", "drop", "non_json", "unknown_fault"]
    for fault in billed + unbilled:
        with contextlib.suppress(httpx.TransportError):
            openai_post(provider, chat_body(f"[[fault:{fault}]] [[id:{fault.split(':')[0]}]]"))
    wrong_key = {"Authorization": "Bearer nope"}
    httpx.post(chat_url(provider, "openai"), json=chat_body("hi [[id:x]]"), headers=wrong_key)
    openai_post(provider, {"messages": user("[[id:invalid]]")})
    bills = provider.wait_for_bills(len(billed))
    assert [b.label for b in bills] == ["slow", "hold", "malformed", "drop_mid_stream"]
    assert all(b.ending == "answered" and b.output_tokens == 10 for b in bills)


# ------------------------------------------------------------------ embeddings


@pytest.mark.parametrize("base", ["openai_base_url", "digitalocean_base_url"])
def test_embeddings_are_deterministic_vectors_with_word_usage(
    provider: FakeProvider, base: str
) -> None:
    client = openai.OpenAI(
        base_url=getattr(provider, base),
        api_key=provider.keys["openai" if base.startswith("openai") else "digitalocean"],
        max_retries=0,
    )
    answer = client.embeddings.create(
        model="text-embedding-3-small", input=["one two", "three"], encoding_format="float"
    )
    assert [len(item.embedding) for item in answer.data] == [8, 8]
    assert answer.data[0].embedding == fmt.embedding_vector("one two", 8)
    assert answer.data[0].embedding != answer.data[1].embedding
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (3, 3)
    decoded = client.embeddings.create(model="m", input="one two", dimensions=5)  # base64
    assert decoded.data[0].embedding == fmt.embedding_vector("one two", 5)
    assert provider.requests[-1].body["encoding_format"] == "base64"
    assert [bill.input_tokens for bill in provider.bills] == [3, 2]


def test_embeddings_bill_bytes_of_the_texts_refuse_bad_input_and_fault(
    provider: FakeProvider,
) -> None:
    url = f"{provider.openai_base_url}/embeddings"
    headers = {"Authorization": f"Bearer {provider.keys['openai']}"}
    provider.input_billing = "bytes"
    answer = httpx.post(url, json={"model": "m", "input": ["héllo", "x y"]}, headers=headers)
    assert answer.json()["usage"]["prompt_tokens"] == 6 + 3
    assert (
        httpx.post(url, json={"model": "m", "input": [[1, 2]]}, headers=headers).status_code == 400
    )
    assert httpx.post(url, json={"model": "m", "input": "x"}).status_code == 401
    provider.embeddings_report_usage = False
    assert "usage" not in httpx.post(url, json={"model": "m", "input": "x"}, headers=headers).json()
    provider.fail_next("http_500")
    assert httpx.post(url, json={"model": "m", "input": "x"}, headers=headers).status_code == 500
    provider.reset()
    assert provider.embeddings_report_usage
