"""The official OpenAI SDK, pointed at a running gateway, on every kind of route."""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from pytest_django import Settings

from tests.devices.support import Registered
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger

ROUTES = [
    ("llama3-8b-instruct", "digitalocean"),
    ("openai-gpt-4o", "openai"),
    ("anthropic-claude-4-sonnet", "anthropic"),
]


@pytest.mark.parametrize(("model", "provider_name"), ROUTES)
def test_a_non_streamed_chat_completes_on_each_provider(
    gateway: Gateway, provider: FakeProvider, paid_token: str, model: str, provider_name: str
) -> None:
    client = gateway.sdk(paid_token)
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello [[tokens:4]]"},
        ],
        max_tokens=50,
    )
    completion = raw.parse()
    assert completion.model == model
    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 "
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4
    assert completion.usage.prompt_tokens > 0
    assert raw.headers["x-request-cost-usd"].count(".") == 1
    assert len(raw.headers["x-request-cost-usd"].split(".")[1]) == 6
    assert int(raw.headers["x-ratelimit-remaining-device"]) >= 0
    assert raw.headers["x-request-id"].startswith("req_")
    (sent,) = provider.requests_for(provider_name)
    if provider_name == "anthropic":
        assert sent.headers["x-api-key"] == provider.keys["anthropic"]
        assert sent.headers["anthropic-version"]
        assert sent.body["system"] == "Be brief."
        assert all(message["role"] != "system" for message in sent.body["messages"])
        assert sent.body["max_tokens"] == 50
    else:
        assert sent.headers["authorization"] == f"Bearer {provider.keys[provider_name]}"
    (record,) = ledger(1)
    assert record.model == model and record.status == "ok" and record.tokens_out == 4
    assert f"{record.cost_usd:.6f}" == raw.headers["x-request-cost-usd"]


@pytest.mark.parametrize(("model", "provider_name"), ROUTES)
def test_a_streamed_chat_completes_on_each_provider_with_usage_when_asked(
    gateway: Gateway, provider: FakeProvider, paid_token: str, model: str, provider_name: str
) -> None:
    client = gateway.sdk(paid_token)
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count [[tokens:5]]"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4 "
    assert all(c.model == model for c in chunks)
    usage_chunk = chunks[-1]
    assert usage_chunk.usage is not None and usage_chunk.usage.model_extra is not None
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == 5
    assert usage_chunk.usage.model_extra["cost_usd"] > 0
    (sent,) = provider.requests_for(provider_name)
    if provider_name != "anthropic":
        assert sent.body["stream_options"] == {"include_usage": True}
    (record,) = ledger(1)
    assert record.is_streamed and record.status == "ok" and record.tokens_out == 5


def test_a_stream_without_include_usage_gets_no_usage_chunk_but_is_counted(
    gateway: Gateway, provider: FakeProvider, free_token: str
) -> None:
    stream = gateway.sdk(free_token).chat.completions.create(
        model="llama3-8b-instruct",
        messages=[{"role": "user", "content": "Count [[tokens:3]]"}],
        stream=True,
    )
    chunks = list(stream)
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    (sent,) = provider.requests_for("digitalocean")
    assert sent.body["stream_options"] == {"include_usage": True}
    assert ledger(1)[0].tokens_out == 3


def test_models_are_listed_per_tier(gateway: Gateway, free_token: str, paid_token: str) -> None:
    free = {model.id for model in gateway.sdk(free_token).models.list()}
    paid = {model.id for model in gateway.sdk(paid_token).models.list()}
    assert free == {
        "llama3.3-70b-instruct",
        "llama3-8b-instruct",
        "deepseek-r1-distill-llama-70b",
        "openai-text-embedding-3-small",
    }
    assert paid == free | {"anthropic-claude-4-sonnet", "openai-gpt-5", "openai-gpt-4o"}


def test_the_sdk_raises_the_right_exception_for_each_refusal(
    gateway: Gateway, free_token: str, pending_device: Registered, settings: Settings
) -> None:
    hello: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError):
        gateway.sdk("hzt_not-a-real-token-000000000000000000000000").chat.completions.create(
            model="llama3-8b-instruct", messages=hello
        )
    with pytest.raises(openai.PermissionDeniedError) as pending:
        gateway.sdk(pending_device.token).chat.completions.create(
            model="llama3-8b-instruct", messages=hello
        )
    assert pending.value.code == "device_pending_approval"
    client = gateway.sdk(free_token)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-17", messages=hello)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.PermissionDeniedError) as tier:
        client.chat.completions.create(model="openai-gpt-4o", messages=hello)
    assert tier.value.code == "model_not_allowed"
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(model="llama3-8b-instruct", messages=hello, max_tokens=5000)
    assert too_many.value.code == "max_tokens_exceeded"
    with pytest.raises(openai.BadRequestError) as invalid:
        client.chat.completions.create(model="llama3-8b-instruct", messages=[])
    assert invalid.value.code == "invalid_request"
    # The free tier's burst is 5 a minute: the next ones are refused.
    codes = []
    for _ in range(6):
        try:
            client.chat.completions.create(model="llama3-8b-instruct", messages=hello)
        except openai.RateLimitError as error:
            codes.append(error.code)
    assert codes == ["burst_rate_limit_exceeded"]
    assert len(ledger(5)) == 5
