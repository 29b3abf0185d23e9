"""``POST /v1/embeddings`` over HTTP with the official OpenAI SDK: embedding routes only,
chat's checks and admission, the input bound reserved, one usage record per request."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai
import orjson
import pytest

from billing.pricing import embedding_input_bound, micro_to_usd
from gateway.models import ModelRoute
from gateway.proxy.routes import route_of
from tests.fakes import provider_formats as fmt
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger
from tests.proxy.support import assert_refused, bearer, chat_body, post, remaining
from usage.models import UsageRecord

MODEL = "openai-text-embedding-3-small"


def embed(gateway: Gateway, token: str, body: bytes | dict[str, Any]) -> httpx.Response:
    """POST /v1/embeddings with a raw or JSON body."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(
        f"{gateway.url}/v1/embeddings",
        content=content,
        headers={**bearer(token), "Content-Type": "application/json"},
        timeout=30,
    )


def cost_usd(tokens_in: int) -> Decimal:
    route = route_of(ModelRoute.objects.get(public_name=MODEL))
    return micro_to_usd(route.cost_micro_usd(tokens_in, 0))


def test_a_single_input_is_embedded_and_recorded_at_its_reported_usage(
    gateway: Gateway, provider: FakeProvider, free_token: str
) -> None:
    raw = gateway.sdk(free_token).embeddings.with_raw_response.create(
        model=MODEL, input="The quick brown fox", user="client-chosen-id"
    )
    answer = raw.parse()  # the SDK asked for base64 and decoded it
    assert answer.model == MODEL
    (item,) = answer.data
    assert item.index == 0
    assert item.embedding == fmt.embedding_vector("The quick brown fox", 8)
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (4, 4)
    assert raw.headers["x-ratelimit-remaining-device"].isdigit()
    (sent,) = provider.requests_for("openai")
    assert sent.path == "/openai/v1/embeddings"
    assert sent.headers["authorization"] == f"Bearer {provider.keys['openai']}"
    assert sent.body["model"] == "text-embedding-3-small"
    assert sent.body["input"] == "The quick brown fox"
    # The client's user never reaches the provider: the device's opaque id does.
    assert sent.body["user"] != "client-chosen-id" and len(sent.body["user"]) == 32
    (record,) = ledger(1)
    assert (record.model, record.provider, record.status) == (MODEL, "openai", "ok")
    assert (record.tokens_in, record.tokens_out, record.is_estimated) == (4, 0, False)
    assert not record.is_streamed
    assert record.cost_usd == cost_usd(4) == Decimal("0.000001")  # rounded up once
    assert f"{record.cost_usd:.6f}" == raw.headers["x-request-cost-usd"]


def test_a_batch_with_dimensions_comes_back_as_floats_in_order(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    texts = ["one", "two words", "三 four five"]
    answer = gateway.sdk(paid_token).embeddings.create(
        model=MODEL, input=texts, dimensions=3, encoding_format="float"
    )
    assert [item.index for item in answer.data] == [0, 1, 2]
    assert [item.embedding for item in answer.data] == [
        fmt.embedding_vector(text, 3) for text in texts
    ]
    assert answer.usage.prompt_tokens == 1 + 2 + 3
    (sent,) = provider.requests_for("openai")
    assert (sent.body["input"], sent.body["dimensions"]) == (texts, 3)
    assert sent.body["encoding_format"] == "float"
    (record,) = ledger(1)
    assert record.tokens_in == 6 and record.cost_usd == cost_usd(6)


def test_base64_asked_for_is_passed_through_as_base64(gateway: Gateway, paid_token: str) -> None:
    answer = gateway.sdk(paid_token).embeddings.create(
        model=MODEL, input=["alpha", "beta"], encoding_format="base64", dimensions=4
    )
    for item, text in zip(answer.data, ["alpha", "beta"], strict=True):
        assert isinstance(item.embedding, str)
        decoded = list(struct.unpack("<4f", base64.b64decode(item.embedding)))
        assert decoded == fmt.embedding_vector(text, 4)
    assert len(ledger(1)) == 1


def test_a_missing_usage_is_charged_the_input_bound(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    provider.embeddings_report_usage = False
    texts = ["héllo wörld", "x"]
    response = embed(gateway, paid_token, {"model": MODEL, "input": texts})
    assert response.status_code == 200, response.text
    bound = embedding_input_bound(texts)
    assert bound == len("héllo wörld".encode()) + 1 + 4 * 2
    assert response.json()["usage"] == {"prompt_tokens": bound, "total_tokens": bound}
    (record,) = ledger(1)
    assert (record.tokens_in, record.tokens_out, record.is_estimated) == (bound, 0, True)
    assert record.cost_usd == cost_usd(bound)


def test_a_provider_failure_is_settled_and_recorded_once(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    provider.fail_next("http_500")
    response = embed(gateway, paid_token, {"model": MODEL, "input": "hi"})
    assert_refused(response, 502, "upstream_error")
    assert response.headers["x-request-cost-usd"] == "0.000000"
    (record,) = ledger(1)
    assert (record.status, record.tokens_in, record.cost_usd) == ("upstream_error", 0, Decimal(0))


def test_a_bound_beyond_the_budget_is_refused_and_records_nothing(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, free_token: str
) -> None:
    # 10 000 micro-dollars; at 0.02 a token, 700 000 bytes of input (a bound of
    # 14 000 micro-dollars) do not fit, whatever the provider would have counted.
    gateway = start_gateway(DAILY_BUDGET_USD="0.01")
    big = {"model": MODEL, "input": ["word " * 70_000, "word " * 70_000]}
    before = remaining(gateway, free_token)
    assert_refused(embed(gateway, free_token, big), 503, "budget_exceeded")
    assert remaining(gateway, free_token) == before
    assert provider.requests_for("openai") == []
    assert embed(gateway, free_token, {"model": MODEL, "input": "small"}).status_code == 200
    (record,) = ledger(1)
    assert record.tokens_in == 1


def test_a_request_counts_in_the_device_daily_limit(gateway: Gateway, free_token: str) -> None:
    before = remaining(gateway, free_token)
    response = embed(gateway, free_token, {"model": MODEL, "input": "count me"})
    assert response.status_code == 200
    after = remaining(gateway, free_token)
    assert after["device"] == before["device"] - 1
    assert int(response.headers["x-ratelimit-remaining-device"]) == after["device"]
    assert len(ledger(1)) == 1


def test_a_chat_model_is_refused_on_embeddings_and_an_embedding_model_on_chat(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.sdk(paid_token).embeddings.create(model="openai-gpt-4o", input="hi")
    assert caught.value.code == "invalid_request"
    assert "openai-gpt-4o" in caught.value.message
    refused = post(gateway, chat_body(model=MODEL), token=paid_token)
    error = assert_refused(refused, 400, "invalid_request")
    assert MODEL in error["message"] and "/v1/embeddings" in error["message"]
    unknown = embed(gateway, paid_token, {"model": "text-embedding-17", "input": "hi"})
    assert_refused(unknown, 404, "model_not_found")
    assert provider.requests == []
    assert UsageRecord.objects.count() == 0


BAD_INPUTS: dict[str, Any] = {
    "token ids": [1, 2, 3],
    "token-id arrays": [[1, 2], [3]],
    "empty list": [],
    "empty string": "",
    "a non-string item": ["fine", {"text": "no"}],
    "a null item": ["fine", None],
    "missing": None,
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_is_400_and_costs_nothing(
    gateway: Gateway, provider: FakeProvider, free_token: str, name: str
) -> None:
    body: dict[str, Any] = {"model": MODEL}
    if BAD_INPUTS[name] is not None:
        body["input"] = BAD_INPUTS[name]
    error = assert_refused(embed(gateway, free_token, body), 400, "invalid_request")
    assert error["param"] == "input"
    if name.startswith("token"):
        assert "token" in error["message"]
    assert provider.requests == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("dimensions", 0), ("dimensions", "8"), ("dimensions", True), ("encoding_format", "int8")],
)
def test_bad_options_are_400(gateway: Gateway, free_token: str, field: str, value: Any) -> None:
    body = {"model": MODEL, "input": "hi", field: value}
    error = assert_refused(embed(gateway, free_token, body), 400, "invalid_request")
    assert error["param"] == field


def test_huge_and_deep_bodies_are_refused_before_anything_else(
    gateway: Gateway, provider: FakeProvider, free_token: str
) -> None:
    huge = orjson.dumps({"model": MODEL, "input": "x" * 1_100_000})
    assert_refused(embed(gateway, free_token, huge), 413, "request_too_large")
    deep = b'{"model": "' + MODEL.encode() + b'", "input": ' + b"[" * 100 + b"]" * 100 + b"}"
    assert_refused(embed(gateway, free_token, deep), 400, "invalid_request")
    assert_refused(embed(gateway, free_token, b"not json"), 400, "invalid_request")
    assert provider.requests == []


def test_an_embedding_route_to_a_provider_without_embeddings_is_refused(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    # The running gateway has its route table loaded (its stamp is this test's epoch),
    # so the save below is seen through the epoch it bumps, as in production.
    assert httpx.get(f"{gateway.url}/v1/models", headers=bearer(paid_token)).status_code == 200
    # Saved past the admin's validation (ModelRoute.clean refuses it there).
    ModelRoute.objects.create(
        public_name="anthropic-embeddings",
        provider="anthropic",
        provider_model="none",
        input_price_usd=Decimal("1"),
        output_price_usd=Decimal("0"),
        kind="embedding",
        is_paid_tier=True,
    )
    response = embed(gateway, paid_token, {"model": "anthropic-embeddings", "input": "hi"})
    error = assert_refused(response, 400, "invalid_request")
    assert "embeddings" in error["message"]
    assert provider.requests == []
    assert UsageRecord.objects.count() == 0


def test_models_are_listed_with_their_kind(gateway: Gateway, free_token: str) -> None:
    response = httpx.get(f"{gateway.url}/v1/models", headers=bearer(free_token), timeout=30)
    kinds = {model["id"]: model["kind"] for model in response.json()["data"]}
    assert kinds[MODEL] == "embedding"
    assert kinds["llama3-8b-instruct"] == "chat"
    assert all("available" in model for model in response.json()["data"])


def test_an_embedding_model_without_its_provider_key_answers_503_and_takes_nothing(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, paid_token: str
) -> None:
    gateway = start_gateway(OPENAI_API_KEY="")
    before = remaining(gateway, paid_token)
    response = embed(gateway, paid_token, {"model": MODEL, "input": "hi"})
    error = assert_refused(response, 503, "provider_not_configured")
    assert MODEL in error["message"]
    # A bad body is still a 400 first.
    assert_refused(
        embed(gateway, paid_token, {"model": MODEL, "input": []}), 400, "invalid_request"
    )
    assert remaining(gateway, paid_token) == before
    assert provider.requests == []
    assert UsageRecord.objects.count() == 0
