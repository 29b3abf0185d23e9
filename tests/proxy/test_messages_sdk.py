"""``POST /v1/messages``: the official Anthropic SDK, pointed at a running gateway."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import MessageParam, ToolParam, ToolUseBlock

from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger
from tests.proxy.support import bearer, remaining
from tests.support.processes import wait_for
from usage.models import UsageRecord

ROUTES = [
    ("anthropic-claude-4-sonnet", "anthropic"),
    ("openai-gpt-4o", "openai"),
    ("llama3-8b-instruct", "digitalocean"),
]
TOOL_ROUTES = ROUTES[:2]
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}
ASK: list[MessageParam] = [{"role": "user", "content": "Weather in Paris? [[tool:get_weather]]"}]


def client(gateway: Gateway, token: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=token, max_retries=0, timeout=30)


def messages_post(gateway: Gateway, body: Any, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/messages", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize(("model", "provider_name"), ROUTES)
def test_a_message_completes_on_each_provider(
    gateway: Gateway, provider: FakeProvider, paid_token: str, model: str, provider_name: str
) -> None:
    before = remaining(gateway, paid_token)["device"]
    raw = client(gateway, paid_token).messages.with_raw_response.create(
        model=model,
        max_tokens=50,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello [[tokens:4]]"}],
        metadata={"user_id": "someone"},
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.model == model and message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].type == "text" and message.content[0].text == "tok0 tok1 tok2 tok3 "
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 4 and message.usage.input_tokens > 0
    (sent,) = provider.requests_for(provider_name)
    if provider_name == "anthropic":
        assert sent.body["system"] == "Be brief." and sent.body["max_tokens"] == 50
        assert sent.body["metadata"]["user_id"] != "someone"
    else:
        assert sent.body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert sent.body["user"] != "someone"
    (record,) = ledger(1)
    assert record.model == model and record.status == "ok"
    assert record.tokens_out == 4 and record.tokens_in == message.usage.input_tokens
    assert f"{record.cost_usd:.6f}" == raw.headers["x-request-cost-usd"]
    assert remaining(gateway, paid_token)["device"] == before - 1


@pytest.mark.parametrize(("model", "provider_name"), ROUTES)
def test_a_streamed_message_arrives_as_anthropic_events(
    gateway: Gateway, paid_token: str, model: str, provider_name: str
) -> None:
    before = remaining(gateway, paid_token)["device"]
    with client(gateway, paid_token).messages.stream(
        model=model, max_tokens=50, messages=[{"role": "user", "content": "Count [[tokens:5]]"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "tok0 tok1 tok2 tok3 tok4 "
    assert final.model == model and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5 and final.usage.input_tokens > 0
    (record,) = ledger(1)
    assert record.is_streamed and record.status == "ok" and record.model == model
    assert record.tokens_out == 5 and record.tokens_in == final.usage.input_tokens
    assert record.cost_usd > 0
    assert remaining(gateway, paid_token)["device"] == before - 1


def test_create_with_stream_true_yields_the_event_sequence(
    gateway: Gateway, paid_token: str
) -> None:
    events = list(
        client(gateway, paid_token).messages.create(
            model="llama3-8b-instruct",
            max_tokens=2,
            messages=[{"role": "user", "content": "Count [[tokens:5]]"}],
            stream=True,
        )
    )
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds[1] == "content_block_start"
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    delta = events[-2]
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "max_tokens" and delta.usage.output_tokens == 2
    assert ledger(1)[0].tokens_out == 2


@pytest.mark.parametrize(("model", "provider_name"), TOOL_ROUTES)
def test_a_tool_use_then_its_result(
    gateway: Gateway, provider: FakeProvider, paid_token: str, model: str, provider_name: str
) -> None:
    sdk = client(gateway, paid_token)
    message = sdk.messages.create(model=model, max_tokens=100, messages=ASK, tools=[WEATHER])
    assert message.stop_reason == "tool_use"
    (call,) = [block for block in message.content if isinstance(block, ToolUseBlock)]
    assert call.name == "get_weather" and call.input == {"city": "tok", "days": 1}
    arguments = dict(call.input) if isinstance(call.input, dict) else {}
    history: list[MessageParam] = [
        *ASK,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}],
        },
    ]
    answer = sdk.messages.create(
        model=model,
        max_tokens=100,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=history,
    )
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].type == "text" and answer.content[0].text.startswith("tok0 ")
    sent = provider.requests_for(provider_name)[-1].body
    if provider_name == "anthropic":
        assert sent["messages"][1]["content"][0]["input"] == {"city": "tok", "days": 1}
        assert sent["messages"][2]["content"] == [
            {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}
        ]
        assert sent["tool_choice"] == {"type": "tool", "name": "get_weather"}
    else:
        calls = sent["messages"][1]["tool_calls"]
        assert json.loads(calls[0]["function"]["arguments"]) == {"city": "tok", "days": 1}
        assert sent["messages"][2] == {
            "role": "tool",
            "tool_call_id": call.id,
            "content": "Sunny, 21 C",
        }
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    records = ledger(2)
    assert [r.status for r in records] == ["ok", "ok"] and {r.model for r in records} == {model}


@pytest.mark.parametrize(("model", "provider_name"), TOOL_ROUTES)
def test_a_streamed_tool_use_arrives_as_input_json_deltas(
    gateway: Gateway, paid_token: str, model: str, provider_name: str
) -> None:
    with client(gateway, paid_token).messages.stream(
        model=model, max_tokens=100, messages=ASK, tools=[WEATHER]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds
    assert final.stop_reason == "tool_use"
    (call,) = [block for block in final.content if isinstance(block, ToolUseBlock)]
    assert call.name == "get_weather" and call.input == {"city": "tok", "days": 1}
    assert ledger(1)[0].tokens_out > 0


def test_the_token_may_be_a_bearer_token_too(gateway: Gateway, paid_token: str) -> None:
    body = {
        "model": "llama3-8b-instruct",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi [[tokens:2]]"}],
    }
    response = messages_post(gateway, body, bearer(paid_token))
    assert response.status_code == 200, response.text
    assert response.json()["content"] == [{"type": "text", "text": "tok0 tok1 "}]
    both = messages_post(gateway, body, {**bearer(paid_token), "x-api-key": paid_token})
    assert both.status_code == 200
    conflicting = messages_post(gateway, body, {**bearer(paid_token), "x-api-key": "hzt_other"})
    assert conflicting.status_code == 401
    assert len(ledger(2)) == 2


def test_a_bad_token_is_a_401_in_anthropic_shape(gateway: Gateway) -> None:
    with pytest.raises(anthropic.AuthenticationError) as refused:
        client(gateway, "hzt_not-a-real-token-000000000000000000000000").messages.create(
            model="llama3-8b-instruct",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
        )
    body = refused.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == "invalid_credentials"


def test_a_bad_body_is_a_400_in_anthropic_shape_before_admission(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    before = remaining(gateway, paid_token)
    headers = {"x-api-key": paid_token}
    hello = [{"role": "user", "content": "hi"}]
    bodies: list[Any] = [
        {"model": "llama3-8b-instruct", "messages": hello},  # no max_tokens
        {"model": "llama3-8b-instruct", "max_tokens": 0, "messages": hello},
        {"model": "llama3-8b-instruct", "max_tokens": 5, "messages": []},
        {
            "model": "llama3-8b-instruct",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}],
        },
        {"model": "llama3-8b-instruct", "max_tokens": 5, "messages": hello, "temperature": 7},
        {"model": "llama3-8b-instruct", "max_tokens": 5, "messages": hello, "tool_choice": "x"},
    ]
    for body in bodies:
        response = messages_post(gateway, body, headers)
        assert response.status_code == 400, (body, response.text)
        error = response.json()
        assert error["type"] == "error", error
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["message"]
    assert remaining(gateway, paid_token) == before
    assert provider.requests_for("digitalocean") == []
    assert not UsageRecord.objects.exists()


def test_a_model_not_allowed_is_a_403_permission_error(gateway: Gateway, free_token: str) -> None:
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        client(gateway, free_token).messages.create(
            model="anthropic-claude-4-sonnet",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
        )
    body = refused.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "permission_error"
    assert body["error"]["code"] == "model_not_allowed"


@pytest.mark.parametrize(("model", "provider_name"), TOOL_ROUTES)
def test_a_client_leaving_mid_stream_is_settled_as_on_chat(
    gateway: Gateway, provider: FakeProvider, paid_token: str, model: str, provider_name: str
) -> None:
    content = "Count [[tokens:200]] [[fault:slow_chunks:delay=0.05]]"
    with client(gateway, paid_token).messages.stream(
        model=model, max_tokens=500, messages=[{"role": "user", "content": content}]
    ) as stream:
        for received, _text in enumerate(stream.text_stream, start=1):
            if received == 2:
                break
    wait_for(lambda: provider.stream_endings, timeout=5, what="the provider's stream to end")
    assert provider.stream_endings[0] != "completed"
    (record,) = ledger(1)
    assert record.status == "client_disconnected" and record.is_streamed
    assert 0 < record.tokens_out < 200 and record.cost_usd > 0
