"""Tools, stop sequences and forwarded parameters through a running gateway, with the SDK."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)

from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger

WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Weather in Paris? [[tool:get_weather]]"}
]
TOOL_ROUTES = [("openai-gpt-4o", "openai"), ("anthropic-claude-4-sonnet", "anthropic")]


@pytest.mark.parametrize(("model", "provider_name"), TOOL_ROUTES)
def test_a_tool_call_comes_back_in_openai_shape(
    gateway: Gateway, paid_token: str, model: str, provider_name: str
) -> None:
    completion = gateway.sdk(paid_token).chat.completions.create(
        model=model, messages=ASK, tools=[WEATHER]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.id and isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "tok", "days": 1}
    assert ledger(1)[0].status == "ok"


@pytest.mark.parametrize(("model", "provider_name"), TOOL_ROUTES)
def test_a_streamed_tool_call_arrives_as_openai_tool_call_deltas(
    gateway: Gateway, paid_token: str, model: str, provider_name: str
) -> None:
    stream = gateway.sdk(paid_token).chat.completions.create(
        model=model, messages=ASK, tools=[WEATHER], stream=True
    )
    ids: set[str] = set()
    names: set[str] = set()
    arguments, finish = "", None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or ():
                assert delta.index == 0
                if delta.id:
                    ids.add(delta.id)
                if delta.function and delta.function.name:
                    names.add(delta.function.name)
                arguments += (delta.function.arguments or "") if delta.function else ""
    assert len(ids) == 1 and names == {"get_weather"}
    assert json.loads(arguments) == {"city": "tok", "days": 1}
    assert finish == "tool_calls"
    (record,) = ledger(1)
    assert record.status == "ok" and record.tokens_out > 0


def round_trip(call_id: str) -> list[Any]:
    """The messages of a tool round trip, for the SDK or (changed) for a raw request."""
    return [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "Sunny, 21 C"},
    ]


def test_a_tool_result_reaches_anthropic_as_a_tool_result_block(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    completion = gateway.sdk(paid_token).chat.completions.create(
        model="anthropic-claude-4-sonnet",
        messages=round_trip("toolu_01abc"),
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    content = completion.choices[0].message.content
    assert content is not None and content.startswith("tok0 ")
    (sent,) = provider.requests_for("anthropic")
    user, assistant, result = sent.body["messages"]
    assert user["role"] == "user"
    assert assistant == {
        "role": "assistant",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_01abc",
                "name": "get_weather",
                "input": {"city": "Paris"},
            }
        ],
    }
    assert result == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01abc", "content": "Sunny, 21 C"}
        ],
    }
    assert sent.body["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    assert sent.body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert len(ledger(1)) == 1


def test_a_tool_result_reaches_openai_unchanged(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    gateway.sdk(paid_token).chat.completions.create(
        model="openai-gpt-4o", messages=round_trip("call_abc"), tools=[WEATHER]
    )
    (sent,) = provider.requests_for("openai")
    assert sent.body["messages"][1]["tool_calls"][0]["id"] == "call_abc"
    assert sent.body["messages"][2] == {
        "role": "tool",
        "tool_call_id": "call_abc",
        "content": "Sunny, 21 C",
    }
    assert sent.body["tools"] == [WEATHER]
    assert len(ledger(1)) == 1


def test_stop_reaches_anthropic_as_stop_sequences(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    completion = gateway.sdk(paid_token).chat.completions.create(
        model="anthropic-claude-4-sonnet",
        messages=[{"role": "user", "content": "Count"}],
        stop=["tok3", "never"],
    )
    (sent,) = provider.requests_for("anthropic")
    assert sent.body["stop_sequences"] == ["tok3", "never"]
    assert "stop" not in sent.body
    assert completion.choices[0].message.content == "tok0 tok1 tok2 "
    assert completion.choices[0].finish_reason == "stop"
    assert len(ledger(1)) == 1


# logit_bias, logprobs and top_logprobs are known now: tests/proxy/test_parameters_http.py.
UNKNOWN = {
    "foo": 1,
    "store": True,
    "metadata": {"k": "v"},
    "service_tier": "flex",
    "prediction": {"type": "content", "content": "x"},
}


@pytest.mark.parametrize(
    ("model", "provider_name"),
    [("llama3-8b-instruct", "digitalocean"), *TOOL_ROUTES],
)
def test_only_known_parameters_are_forwarded(
    gateway: Gateway, provider: FakeProvider, paid_token: str, model: str, provider_name: str
) -> None:
    gateway.sdk(paid_token).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.5,
        max_tokens=20,
        extra_body=UNKNOWN,
    )
    (sent,) = provider.requests_for(provider_name)
    forwarded = set(UNKNOWN) & set(sent.body)
    if provider_name == "anthropic":
        # Its metadata is the gateway's own: the device's opaque end-user id.
        assert set(sent.body["metadata"]) == {"user_id"}
        forwarded.discard("metadata")
    assert not forwarded, sent.body
    assert sent.body["temperature"] == 0.5
    assert len(ledger(1)) == 1


@pytest.mark.parametrize(
    ("model", "provider_name", "field"),
    [
        ("openai-gpt-4o", "openai", "max_completion_tokens"),
        ("llama3-8b-instruct", "digitalocean", "max_tokens"),
        ("anthropic-claude-4-sonnet", "anthropic", "max_tokens"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_without_max_tokens_the_tier_cap_is_sent(
    gateway: Gateway,
    provider: FakeProvider,
    paid_token: str,
    model: str,
    provider_name: str,
    field: str,
    stream: bool,
) -> None:
    created = gateway.sdk(paid_token).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=stream
    )
    if stream:
        list(created)
    (sent,) = provider.requests_for(provider_name)
    assert sent.body[field] == 8192
    other = {"max_tokens", "max_completion_tokens"} - {field}
    assert not other & set(sent.body)
    assert len(ledger(1)) == 1


def test_a_free_device_without_max_tokens_sends_its_own_tier_cap(
    gateway: Gateway, provider: FakeProvider, free_token: str
) -> None:
    gateway.sdk(free_token).chat.completions.create(
        model="llama3-8b-instruct", messages=[{"role": "user", "content": "hi"}]
    )
    (sent,) = provider.requests_for("digitalocean")
    assert sent.body["max_tokens"] == 1024
    assert len(ledger(1)) == 1


def test_tool_arguments_anthropic_cannot_take_are_refused_before_admission(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    from tests.proxy.support import assert_refused, post, remaining

    messages = round_trip("toolu_01abc")
    messages[1]["tool_calls"][0]["function"]["arguments"] = "not json at all"
    before = remaining(gateway, paid_token)
    response = post(
        gateway,
        {"model": "anthropic-claude-4-sonnet", "messages": messages, "tools": [WEATHER]},
        token=paid_token,
    )
    assert_refused(response, 400, "invalid_request")
    assert remaining(gateway, paid_token) == before
    assert provider.requests_for("anthropic") == []
    # The same conversation is fine where the provider takes any string.
    assert (
        post(
            gateway, {"model": "openai-gpt-4o", "messages": messages}, token=paid_token
        ).status_code
        == 200
    )
    (record,) = ledger(1)
    assert record.model == "openai-gpt-4o"
