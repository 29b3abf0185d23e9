from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from pytest_django import Settings

from gateway.core.errors import GatewayError, InvalidRequest
from gateway.proxy.validation import (
    ChatRequest,
    MaxTokensExceeded,
    check_tier_cap,
    effective_max_tokens,
    parse_chat_request,
)
from tests.support.wire import OPENAI_CHAT_FIELDS

USER = [{"role": "user", "content": "hi"}]


def body(**fields: Any) -> bytes:
    return json.dumps({"model": "llama3-8b-instruct", "messages": USER, **fields}).encode()


def raw_field(name: str, raw: bytes) -> bytes:
    """A valid body plus one field written as raw JSON text (numbers json.dumps can't make)."""
    return body()[:-1] + b', "' + name.encode() + b'": ' + raw + b"}"


BAD_BODIES = {
    "empty body": b"",
    "not json": b"{model: x}",
    "truncated json": b'{"model": "x", "messages": [',
    "a list": b"[]",
    "a string": b'"hello"',
    "null": b"null",
    "invalid utf-8": b'{"model": "\xff"}',
    "lone surrogate": b'{"model": "x", "messages": [{"role": "user", "content": "\\ud800"}]}',
    "NaN temperature": raw_field("temperature", b"NaN"),
    "Infinity max_tokens": raw_field("max_tokens", b"Infinity"),
    "-Infinity top_p": raw_field("top_p", b"-Infinity"),
    "1e400 temperature": raw_field("temperature", b"1e400"),
    "1e400 max_tokens": raw_field("max_tokens", b"1e400"),
    "-1e400 seed": raw_field("seed", b"-1e400"),
    "huge int max_tokens": raw_field("max_tokens", b"9" * 400),
    "huge int temperature": raw_field("temperature", b"9" * 400),
    "huge int seed": raw_field("seed", b"99999999999999999999"),
    "huge negative int seed": raw_field("seed", b"-" + b"9" * 30),
    "10 000-deep nesting": b'{"model": "x", "messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "deep nesting in a tool schema": (
        b'{"model":"x","messages":[{"role":"user","content":"a"}],"tools":[{"type":"function",'
        b'"function":{"name":"f","parameters":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}}]}"
    ),
    "missing model": json.dumps({"messages": USER}).encode(),
    "model not a string": body(model=5),
    "empty model": body(model=""),
    "missing messages": json.dumps({"model": "x"}).encode(),
    "empty messages": body(messages=[]),
    "messages not a list": body(messages={"role": "user", "content": "hi"}),
    "message not an object": body(messages=["hi"]),
    "unknown role": body(messages=[{"role": "wizard", "content": "hi"}]),
    "missing role": body(messages=[{"content": "hi"}]),
    "content a number": body(messages=[{"role": "user", "content": 5}]),
    "content missing": body(messages=[{"role": "user"}]),
    "image part": body(
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    ),
    "text part without text": body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
    "tool message without id": body(messages=[{"role": "tool", "content": "42"}]),
    "assistant tool call without arguments": body(
        messages=[
            *USER,
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]},
        ]
    ),
    "boolean max_tokens": body(max_tokens=True),
    "false max_tokens": body(max_tokens=False),
    "string max_tokens": body(max_tokens="100"),
    "float max_tokens": body(max_tokens=100.0),
    "fractional max_tokens": body(max_tokens=10.5),
    "negative max_tokens": body(max_tokens=-1),
    "zero max_tokens": body(max_tokens=0),
    "negative max_completion_tokens": body(max_completion_tokens=-5),
    "boolean max_completion_tokens": body(max_completion_tokens=True),
    "different max_tokens and max_completion_tokens": body(max_tokens=10, max_completion_tokens=20),
    "string stream": body(stream="true"),
    "integer stream": body(stream=1),
    "stream_options not an object": body(stream=True, stream_options=True),
    "include_usage not a boolean": body(stream=True, stream_options={"include_usage": 1}),
    "boolean temperature": body(temperature=True),
    "string temperature": body(temperature="0.5"),
    "temperature above 2": body(temperature=2.5),
    "negative temperature": body(temperature=-0.1),
    "top_p above 1": body(top_p=1.5),
    "stop a number": body(stop=5),
    "stop with a number": body(stop=["a", 5]),
    "too many stops": body(stop=["a", "b", "c", "d", "e"]),
    "tools not a list": body(tools={"type": "function"}),
    "tool without function": body(tools=[{"type": "function"}]),
    "tool with a bad name": body(tools=[{"type": "function", "function": {"name": "a b"}}]),
    "tool parameters not an object": body(
        tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}]
    ),
    "unknown tool_choice": body(tool_choice="sometimes"),
    "required tool_choice without tools": body(tool_choice="required"),
    "n of 9": body(n=9),
    "n of 0": body(n=0),
    "boolean n": body(n=True),
    "bad response_format": body(response_format={"type": "xml"}),
    "boolean seed": body(seed=False),
    "user not a string": body(user=5),
    "presence_penalty out of range": body(presence_penalty=3),
    "boolean parallel_tool_calls as string": body(parallel_tool_calls="yes"),
}


@pytest.mark.parametrize("raw", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_bad_body_is_a_400_invalid_request_and_nothing_else(raw: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_chat_request(raw)
    assert type(caught.value) is InvalidRequest
    assert caught.value.status == 400
    assert caught.value.payload()["error"]["code"] == "invalid_request"
    assert caught.value.payload()["error"]["type"] == "invalid_request_error"


def test_the_error_names_the_offending_parameter() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(body(max_tokens=True))
    assert caught.value.payload()["error"]["param"] == "max_tokens"
    assert "max_tokens" in caught.value.payload()["error"]["message"]


def test_a_minimal_request_parses_with_defaults() -> None:
    request = parse_chat_request(body())
    assert request == ChatRequest(model="llama3-8b-instruct", messages=USER)


def test_unknown_parameters_are_dropped_and_known_ones_kept() -> None:
    request = parse_chat_request(
        body(
            max_completion_tokens=50,
            temperature=0,
            top_p=1,
            stop="END",
            seed=7,
            user="u1",
            logit_bias={"1": 5},
            store=True,
            metadata={"a": "b"},
            n=1,
            response_format={"type": "json_object", "extra": 1},
        )
    )
    assert request.max_tokens == 50
    assert request.temperature == 0.0
    assert request.top_p == 1.0
    assert request.stop == ["END"]
    assert request.seed == 7
    assert not hasattr(request, "user")  # the provider gets the device's opaque id instead
    assert request.response_format == {"type": "json_object"}
    assert request.logit_bias == {"1": 5}
    assert request.n == 1
    assert not hasattr(request, "store") and not hasattr(request, "metadata")


def test_max_tokens_and_max_completion_tokens_may_both_be_sent_when_equal() -> None:
    assert parse_chat_request(body(max_tokens=64, max_completion_tokens=64)).max_tokens == 64


def test_nulls_mean_absent() -> None:
    request = parse_chat_request(
        body(max_tokens=None, stream=None, temperature=None, stop=None, tools=None)
    )
    assert request.max_tokens is None
    assert request.stream is False


def test_include_usage_counts_only_for_streams() -> None:
    assert parse_chat_request(
        body(stream=True, stream_options={"include_usage": True})
    ).include_usage
    assert not parse_chat_request(body(stream=True)).include_usage
    assert not parse_chat_request(body(stream_options={"include_usage": True})).include_usage


def test_messages_are_normalised_to_known_fields_and_developer_becomes_system() -> None:
    request = parse_chat_request(
        body(
            messages=[
                {"role": "developer", "content": "be brief", "cache_control": {"x": 1}},
                {"role": "user", "content": [{"type": "text", "text": "hi", "extra": 1}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                    "refusal": None,
                },
                {"role": "tool", "tool_call_id": "c1", "content": "42", "name": "ignored"},
            ]
        )
    )
    assert request.messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]


def test_tools_and_tool_choice_are_normalised() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "unknown": 1,
            },
        }
    ]
    request = parse_chat_request(
        body(tools=tools, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    )
    assert request.tools == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    assert request.tool_choice == {"type": "function", "function": {"name": "get_weather"}}


def test_the_tier_cap_is_sent_when_the_client_sends_none(settings: Settings) -> None:
    settings.MAX_TOKENS = {"free": 1024, "paid": 8192}
    request = parse_chat_request(body())
    assert check_tier_cap(request, "free") == 1024
    assert effective_max_tokens(request, "paid") == 8192


def test_max_tokens_at_the_cap_passes_and_above_it_is_max_tokens_exceeded(
    settings: Settings,
) -> None:
    settings.MAX_TOKENS = {"free": 1024, "paid": 8192}
    assert check_tier_cap(parse_chat_request(body(max_tokens=1024)), "free") == 1024
    with pytest.raises(MaxTokensExceeded) as caught:
        check_tier_cap(parse_chat_request(body(max_tokens=1025)), "free")
    error = caught.value.payload()["error"]
    assert (caught.value.status, error["code"], error["limit"]) == (
        400,
        "max_tokens_exceeded",
        1024,
    )
    assert check_tier_cap(parse_chat_request(body(max_tokens=1025)), "paid") == 1025


def test_a_64_bit_max_tokens_is_valid_json_and_exceeds_the_cap() -> None:
    request = parse_chat_request(body(max_tokens=2**64 - 1))
    with pytest.raises(MaxTokensExceeded):
        check_tier_cap(request, "paid")


def nested(depth: int) -> object:
    """A value ``depth`` levels deep (objects and arrays alternating)."""
    value: object = "leaf"
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


def test_a_body_nested_64_levels_deep_passes_and_65_is_invalid() -> None:
    # The body object is level 1, so a field's value may be 63 levels deep.
    assert parse_chat_request(body(metadata=nested(63)))
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(body(metadata=nested(64)))
    assert "64 levels" in caught.value.payload()["error"]["message"]


def test_a_wide_body_with_many_brackets_is_not_deep() -> None:
    many = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}] * 500
    assert len(parse_chat_request(body(messages=many)).messages) == 500


def test_the_parsed_request_serialises_back_to_json() -> None:
    request = parse_chat_request(
        body(stop=["a"], tools=[{"type": "function", "function": {"name": "f"}}])
    )
    assert orjson.loads(orjson.dumps(request.messages)) == USER


ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    2**64 - 1,
    1.5,
    -0.0,
    1e308,
    "",
    "x",
    "auto",
    [],
    [None],
    ["a", 1],
    [{}],
    [{"type": "text"}],
    [{"type": "function", "function": {"name": 5}}],
    {},
    {"type": "function"},
    {"function": None},
    {"include_usage": None},
]
FIELDS = list(OPENAI_CHAT_FIELDS)
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id"]


def test_any_odd_value_in_any_field_is_accepted_or_a_400_never_anything_else() -> None:
    bodies = [body(**{field: value}) for field in FIELDS for value in ODD_VALUES]
    bodies += [
        body(messages=[{"role": "assistant", "content": "a", field: value}])
        for field in MESSAGE_FIELDS
        for value in ODD_VALUES
    ]
    outcomes = {"accepted": 0, "refused": 0}
    for raw in bodies:
        try:
            parse_chat_request(raw)
        except InvalidRequest:
            outcomes["refused"] += 1
        else:
            outcomes["accepted"] += 1
    assert outcomes["refused"] > 0 and outcomes["accepted"] > 0
