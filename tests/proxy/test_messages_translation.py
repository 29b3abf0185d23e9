"""The Messages API's translation to and from the chat pipeline, without a gateway."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.core.errors import AuthenticationFailed, GatewayError, InvalidRequest
from gateway.proxy.messages import error_payload, to_chat_body, to_message
from gateway.proxy.messages_stream import MessageEvents
from gateway.proxy.providers.base import StreamDone, UpstreamOverloaded, UpstreamTimeout, Usage
from gateway.proxy.validation import parse_chat_request
from usage.errors import ServicePaused


def chat(**body: Any) -> dict[str, Any]:
    body = {"model": "m", "max_tokens": 10, **body}
    translated: dict[str, Any] = orjson.loads(to_chat_body(orjson.dumps(body)))
    return translated


def test_a_full_body_becomes_the_equivalent_chat_body_that_validation_accepts() -> None:
    translated = chat(
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "t1", "name": "look", "input": {"q": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "There you go"},
                    {"type": "tool_result", "tool_use_id": "t1", "content": "seen"},
                ],
            },
        ],
        tools=[{"name": "look", "description": "Look", "input_schema": {"type": "object"}}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        stop_sequences=["END"],
        temperature=0.5,
        top_k=3,
        metadata={"user_id": "someone"},
        thinking={"type": "enabled", "budget_tokens": 5},
    )
    assert translated["messages"] == [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Let me look."}],
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "look", "arguments": '{"q":1}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "seen"},
        {"role": "user", "content": [{"type": "text", "text": "There you go"}]},
    ]
    assert translated["tools"] == [
        {
            "type": "function",
            "function": {"name": "look", "description": "Look", "parameters": {"type": "object"}},
        }
    ]
    assert translated["tool_choice"] == "required" and translated["parallel_tool_calls"] is False
    assert translated["stop"] == ["END"] and translated["temperature"] == 0.5
    assert not {"top_k", "metadata", "thinking", "user"} & set(translated)
    request = parse_chat_request(orjson.dumps(translated))
    assert request.images == 2 and request.max_tokens == 10


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "document"}]}]}, "messages"),
        ({"system": [{"type": "image"}]}, "system"),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ],
)
def test_a_body_not_shaped_as_anthropic_s_is_refused_naming_the_field(
    body: dict[str, Any], param: str
) -> None:
    full = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(InvalidRequest) as refused:
        to_chat_body(orjson.dumps({**full, **body}))
    assert refused.value.extra["param"] == param


def test_a_completion_becomes_a_message() -> None:
    message = to_message(
        {
            "id": "chatcmpl-1",
            "model": "openai-gpt-4o",
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": "Calling",
                        "tool_calls": [
                            {"id": "c1", "function": {"name": "f", "arguments": '{"a": 1}'}},
                            {"id": "c2", "function": {"name": "g", "arguments": "not json"}},
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
    )
    assert message == {
        "id": "msg_chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "openai-gpt-4o",
        "content": [
            {"type": "text", "text": "Calling"},
            {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
            {"type": "tool_use", "id": "c2", "name": "g", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 3},
    }


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InvalidRequest("bad", param="messages"), "invalid_request_error"),
        (AuthenticationFailed(), "authentication_error"),
        (UpstreamOverloaded(retry_after=5), "overloaded_error"),
        (ServicePaused(), "api_error"),
        (UpstreamTimeout(), "timeout_error"),
    ],
)
def test_errors_are_anthropic_s_error_object_with_the_gateway_s_code(
    error: GatewayError, kind: str
) -> None:
    payload = error_payload(error)
    assert payload["type"] == "error"
    assert payload["error"]["type"] == kind
    assert payload["error"]["code"] == error.code and payload["error"]["message"]


def events(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    parsed = []
    for event in stream.decode().split("\n\n"):
        if event:
            kind, data = event.split("\n")
            parsed.append((kind.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return parsed


def test_chunks_become_blocks_and_the_end_carries_the_billed_usage() -> None:
    translator = MessageEvents()

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"id": "c", "model": "m", "choices": [choice]}

    out = translator.chunk(chunk({"role": "assistant", "content": "Hi"}), input_tokens=0)
    out += translator.chunk(chunk({"content": " there"}), input_tokens=0)
    call = {"index": 0, "id": "t", "function": {"name": "f", "arguments": ""}}
    out += translator.chunk(chunk({"tool_calls": [call]}), input_tokens=0)
    more = {"index": 0, "function": {"arguments": '{"a":'}}
    out += translator.chunk(chunk({"tool_calls": [more]}), input_tokens=0)
    out += translator.chunk(chunk({}, "tool_calls"), input_tokens=0)
    out += translator.end(StreamDone("c", 0, "m"), Usage(5, 2))
    kinds = [(kind, data.get("index")) for kind, data in events(out)]
    assert kinds == [
        ("message_start", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("message_delta", None),
        ("message_stop", None),
    ]
    parsed = dict(events(out))
    assert parsed["message_delta"]["delta"]["stop_reason"] == "tool_use"
    assert parsed["message_delta"]["usage"] == {"input_tokens": 5, "output_tokens": 2}


def test_a_stream_without_chunks_still_starts_and_stops() -> None:
    out = MessageEvents().end(StreamDone("c", 0, "m", "length"), Usage(5, 0))
    assert [kind for kind, _ in events(out)] == ["message_start", "message_delta", "message_stop"]
    assert dict(events(out))["message_delta"]["delta"]["stop_reason"] == "max_tokens"
