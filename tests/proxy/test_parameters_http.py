"""What real clients send: OpenAI's parameter set and ``n``, through the official SDK.

Each parameter reaches the provider in its wire form (forwarded, or translated
for Anthropic); what a provider has no equivalent for, and every bad value, is
a 400 from the gateway before admission, never the provider's."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam
from pytest_django import Settings

from devices.tokens import end_user_id
from tests.devices.support import Registered
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger
from tests.proxy.support import assert_refused, chat_body, post, remaining

HELLO: list[Any] = [{"role": "user", "content": "Hello [[tokens:3]]"}]
WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
}
SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "answer", "schema": {"type": "object"}},
}
OPENAI_PARAMETERS: dict[str, Any] = {
    "seed": 42,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "logit_bias": {"50256": -100, "1234": 2},
    "logprobs": True,
    "top_logprobs": 3,
    "response_format": SCHEMA,
    "stop": ["END", "STOP"],
}


@pytest.mark.parametrize(
    ("model", "provider_name"),
    [("openai-gpt-4o", "openai"), ("llama3-8b-instruct", "digitalocean")],
)
def test_openai_compatible_routes_get_every_parameter_as_sent(
    gateway: Gateway,
    provider: FakeProvider,
    make_device: Any,
    model: str,
    provider_name: str,
) -> None:
    device: Registered = make_device("approved", tier="paid")
    client = gateway.sdk(device.token)
    client.chat.completions.create(
        model=model,
        messages=HELLO,
        tools=[WEATHER_TOOL],
        parallel_tool_calls=False,
        user="alice@example.com",
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={"50256": -100, "1234": 2},
        logprobs=True,
        top_logprobs=3,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}},
        },
        stop=["END", "STOP"],
    )
    (sent,) = provider.requests_for(provider_name)
    for name, value in OPENAI_PARAMETERS.items():
        assert sent.body[name] == value, name
    assert sent.body["parallel_tool_calls"] is False
    # SPEC: the client's user is replaced by the device's opaque id.
    assert sent.body["user"] == end_user_id(device.device.pk)
    assert "n" not in sent.body  # one choice is the provider's default
    assert len(ledger(1)) == 1  # landed before the next test's database


def test_reasoning_effort_reaches_a_reasoning_model_and_is_refused_elsewhere(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    client = gateway.sdk(paid_token)
    client.chat.completions.create(model="openai-gpt-5", messages=HELLO, reasoning_effort="low")
    (sent,) = provider.requests_for("openai")
    assert sent.body["reasoning_effort"] == "low"
    before = remaining(gateway, paid_token)
    response = post(
        gateway, chat_body(model="openai-gpt-4o", reasoning_effort="low"), token=paid_token
    )
    error = assert_refused(response, 400, "invalid_request")
    assert error["param"] == "reasoning_effort" and "openai-gpt-4o" in error["message"]
    assert remaining(gateway, paid_token) == before
    assert len(ledger(1)) == 1


def test_an_anthropic_route_gets_the_equivalents_and_drops_the_sampling_hints(
    gateway: Gateway, provider: FakeProvider, make_device: Any
) -> None:
    device: Registered = make_device("approved", tier="paid")
    gateway.sdk(device.token).chat.completions.create(
        model="anthropic-claude-4-sonnet",
        messages=HELLO,
        stop=["END"],
        seed=7,
        presence_penalty=1.0,
        frequency_penalty=1.0,
        tools=[WEATHER_TOOL],
        parallel_tool_calls=False,
        user="alice@example.com",
        response_format={"type": "text"},
    )
    (sent,) = provider.requests_for("anthropic")
    assert sent.body["stop_sequences"] == ["END"]
    assert sent.body["metadata"] == {"user_id": end_user_id(device.device.pk)}
    assert sent.body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    for dropped in ("seed", "presence_penalty", "frequency_penalty", "response_format", "user"):
        assert dropped not in sent.body
    assert len(ledger(1)) == 1


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"response_format": SCHEMA}, "response_format"),
    ],
)
def test_what_anthropic_has_no_equivalent_for_is_a_400_before_admission(
    gateway: Gateway, provider: FakeProvider, paid_token: str, fields: dict[str, Any], param: str
) -> None:
    before = remaining(gateway, paid_token)
    response = post(
        gateway, chat_body(model="anthropic-claude-4-sonnet", **fields), token=paid_token
    )
    error = assert_refused(response, 400, "invalid_request")
    assert error["param"] == param
    assert "anthropic-claude-4-sonnet" in error["message"]
    assert provider.requests_for("anthropic") == []
    assert remaining(gateway, paid_token) == before


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 0}, "n"),
        ({"n": 9}, "n"),
        ({"n": True}, "n"),
        ({"logit_bias": {"1": 101}}, "logit_bias"),
        ({"logit_bias": {"token": 1}}, "logit_bias"),
        ({"logit_bias": [1, 2]}, "logit_bias"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"seed": 2**63}, "seed"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"response_format": {"type": "xml"}}, "response_format"),
    ],
)
def test_a_known_parameter_with_a_bad_value_is_the_gateways_400(
    gateway: Gateway, provider: FakeProvider, paid_token: str, fields: dict[str, Any], param: str
) -> None:
    before = remaining(gateway, paid_token)
    response = post(gateway, chat_body(model="openai-gpt-4o", **fields), token=paid_token)
    assert assert_refused(response, 400, "invalid_request")["param"] == param
    assert provider.requests_for("openai") == []
    assert remaining(gateway, paid_token) == before


def test_n_choices_non_streamed_are_each_answered_and_billed(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    completion = gateway.sdk(paid_token).chat.completions.create(
        model="openai-gpt-4o", messages=HELLO, n=3, max_tokens=10
    )
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert {choice.message.content for choice in completion.choices} == {"tok0 tok1 tok2 "}
    assert completion.usage is not None and completion.usage.completion_tokens == 9
    (sent,) = provider.requests_for("openai")
    assert sent.body["n"] == 3
    (record,) = ledger(1)
    assert record.tokens_out == 9 and record.status == "ok"


def test_n_choices_streamed_carry_every_choice_index(gateway: Gateway, paid_token: str) -> None:
    stream = gateway.sdk(paid_token).chat.completions.create(
        model="llama3-8b-instruct",
        messages=HELLO,
        n=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts: dict[int, str] = {}
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
        usage = chunk.usage or usage
    assert texts == {0: "tok0 tok1 tok2 ", 1: "tok0 tok1 tok2 ", 2: "tok0 tok1 tok2 "}
    assert usage is not None and usage.completion_tokens == 9
    (record,) = ledger(1)
    assert record.tokens_out == 9


def test_n_choices_reserve_n_times_the_output_cap(
    start_gateway: Any, provider: FakeProvider, paid_token: str, settings: Settings
) -> None:
    # gpt-4o: $10 per 1M output tokens. 1,000 output tokens cost $0.01 a choice: with
    # $0.035 of budget one, two or three choices fit and four do not, whatever the input.
    gateway = start_gateway(DAILY_BUDGET_USD="0.035", BUDGET_PAUSE_REMAINING_USD="0")
    body = chat_body(model="openai-gpt-4o", messages=HELLO, max_tokens=1000)
    refused = post(gateway, {**body, "n": 4}, token=paid_token)
    assert_refused(refused, 503, "budget_exceeded")
    assert provider.requests_for("openai") == []
    assert post(gateway, {**body, "n": 3}, token=paid_token).status_code == 200
    (record,) = ledger(1)
    assert record.tokens_out == 3 * 3  # three tokens, three times


def test_the_sdk_sees_a_refused_n_as_a_bad_request(gateway: Gateway, paid_token: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.sdk(paid_token).chat.completions.create(
            model="anthropic-claude-4-sonnet", messages=HELLO, n=2
        )
    assert caught.value.status_code == 400
