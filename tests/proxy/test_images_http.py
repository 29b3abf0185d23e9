"""Images in user messages: on image routes only, translated for Anthropic, bounded
per image in the budget, and the larger body limit only for requests that carry them."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.proxy.routes import Route
from gateway.proxy.upstream import outbound
from gateway.proxy.validation import parse_chat_request
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger
from tests.proxy.support import assert_refused, bearer, chat_body, post, remaining

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()
DATA_URL = f"data:image/png;base64,{PNG}"
WEB_URL = "https://example.com/cat.jpg"


def with_images(*urls: str, detail: str | None = None) -> list[ChatCompletionMessageParam]:
    parts: list[Any] = [{"type": "text", "text": "What is in these? [[tokens:3]]"}]
    for url in urls:
        image: dict[str, str] = {"url": url}
        if detail:
            image["detail"] = detail
        parts.append({"type": "image_url", "image_url": image})
    return [{"role": "user", "content": parts}]


@pytest.mark.parametrize("model", ["openai-gpt-4o", "openai-gpt-5"])
def test_an_openai_image_route_gets_the_image_parts_as_sent(
    gateway: Gateway, provider: FakeProvider, paid_token: str, model: str
) -> None:
    completion = gateway.sdk(paid_token).chat.completions.create(
        model=model, messages=with_images(DATA_URL, WEB_URL, detail="low")
    )
    assert completion.choices[0].message.content == "tok0 tok1 tok2 "
    (sent,) = provider.requests_for("openai")
    parts = sent.body["messages"][0]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": DATA_URL, "detail": "low"}}
    assert parts[2] == {"type": "image_url", "image_url": {"url": WEB_URL, "detail": "low"}}
    (record,) = ledger(1)
    assert record.status == "ok" and record.tokens_in >= 2 * 50  # the fake bills 50 an image


def test_an_anthropic_route_gets_base64_and_url_image_blocks(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    gateway.sdk(paid_token).chat.completions.create(
        model="anthropic-claude-4-sonnet", messages=with_images(DATA_URL, WEB_URL)
    )
    (sent,) = provider.requests_for("anthropic")
    blocks = sent.body["messages"][0]["content"]
    assert blocks[0] == {"type": "text", "text": "What is in these? [[tokens:3]]"}
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": WEB_URL}}
    assert len(ledger(1)) == 1  # landed before the next test's database


@pytest.mark.parametrize(
    ("model", "url", "fragment"),
    [
        ("llama3-8b-instruct", DATA_URL, "does not accept images"),
        ("anthropic-claude-4-sonnet", "data:image/tiff;base64,AAAA", "image/tiff"),
        ("openai-gpt-4o", "http://example.com/cat.jpg", "https://"),
        ("openai-gpt-4o", "data:text/plain;base64,AAAA", "data:image/"),
        ("openai-gpt-4o", "data:image/png;base64,not base64!", "data:image/"),
    ],
)
def test_images_a_route_cannot_take_are_a_400_before_admission(
    gateway: Gateway, provider: FakeProvider, paid_token: str, model: str, url: str, fragment: str
) -> None:
    before = remaining(gateway, paid_token)
    response = post(gateway, chat_body(model=model, messages=with_images(url)), token=paid_token)
    error = assert_refused(response, 400, "invalid_request")
    assert fragment in error["message"]
    assert provider.requests == []
    assert remaining(gateway, paid_token) == before


def test_the_model_list_says_which_models_take_images_tools_and_reasoning(
    gateway: Gateway, paid_token: str
) -> None:
    response = httpx.get(f"{gateway.url}/v1/models", headers=bearer(paid_token), timeout=30)
    models = {model["id"]: model["capabilities"] for model in response.json()["data"]}
    assert models["openai-gpt-4o"] == {"images": True, "tools": True, "reasoning": False}
    assert models["openai-gpt-5"] == {"images": True, "tools": True, "reasoning": True}
    assert models["anthropic-claude-4-sonnet"]["images"] is True
    assert models["llama3-8b-instruct"] == {"images": False, "tools": True, "reasoning": False}
    assert models["openai-text-embedding-3-small"]["tools"] is False


def test_images_outside_user_messages_are_refused(gateway: Gateway, paid_token: str) -> None:
    image = {"type": "image_url", "image_url": {"url": WEB_URL}}
    body = chat_body(
        model="openai-gpt-4o",
        messages=[{"role": "system", "content": [image]}, {"role": "user", "content": "hi"}],
    )
    assert_refused(post(gateway, body, token=paid_token), 400, "invalid_request")


def _route(**fields: Any) -> Route:
    from decimal import Decimal

    defaults: dict[str, Any] = {
        "public_name": "m",
        "provider": "openai",
        "provider_model": "m",
        "input_price_usd": Decimal("2.50"),
        "output_price_usd": Decimal("10"),
        "tiers": frozenset({"paid"}),
        "created": 0,
        "accepts_images": True,
        "max_tokens_per_image": 1445,
    }
    return Route(**{**defaults, **fields})


@pytest.mark.parametrize("provider_name", ["openai", "anthropic"])
def test_the_input_bound_is_the_text_bound_plus_each_image_at_its_maximum(
    provider_name: str,
) -> None:
    import orjson

    route = _route(provider=provider_name)
    text_only = parse_chat_request(
        orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    )
    images = parse_chat_request(
        orjson.dumps(
            {
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "hi"},
                            {"type": "image_url", "image_url": {"url": DATA_URL}},
                            {"type": "image_url", "image_url": {"url": WEB_URL}},
                        ],
                    }
                ],
            }
        )
    )
    plain = outbound(route, text_only, max_tokens=10, end_user="u")
    sent = outbound(route, images, max_tokens=10, end_user="u")
    # The images' data is not counted as text; each image counts its route's maximum.
    text_bytes = len(sent.body) - len(PNG) - len(WEB_URL)
    assert sent.input_bound - plain.input_bound == (
        text_bytes - len(plain.body) + 2 * route.max_tokens_per_image
    )


def test_an_image_request_that_does_not_fit_a_small_budget_is_refused(
    start_gateway: Any, provider: FakeProvider, paid_token: str
) -> None:
    # gpt-4o input: $2.50 per 1M tokens. Ten images are 14,450 tokens of bound,
    # $0.036; the output cap (10 tokens) and the text are under $0.001.
    gateway = start_gateway(DAILY_BUDGET_USD="0.02", BUDGET_PAUSE_REMAINING_USD="0")
    body = chat_body(model="openai-gpt-4o", messages=with_images(*[WEB_URL] * 10), max_tokens=10)
    assert_refused(post(gateway, body, token=paid_token), 503, "budget_exceeded")
    few = chat_body(model="openai-gpt-4o", messages=with_images(WEB_URL), max_tokens=10)
    assert post(gateway, few, token=paid_token).status_code == 200
    assert len(provider.requests_for("openai")) == 1
    assert len(ledger(1)) == 1


def test_only_a_request_with_images_may_pass_the_text_size_limit(
    start_gateway: Any, provider: FakeProvider, paid_token: str
) -> None:
    gateway = start_gateway(MAX_REQUEST_BYTES="4096", MAX_IMAGE_REQUEST_BYTES="65536")
    big_image = "data:image/png;base64," + "A" * 20_000
    with_image = chat_body(model="openai-gpt-4o", messages=with_images(big_image), max_tokens=5)
    assert post(gateway, with_image, token=paid_token).status_code == 200
    padded_text = chat_body(
        model="openai-gpt-4o", messages=[{"role": "user", "content": "x" * 20_000}]
    )
    assert_refused(post(gateway, padded_text, token=paid_token), 413, "request_too_large")
    # "image_url" inside a text is not an image.
    disguised = chat_body(
        model="openai-gpt-4o",
        messages=[{"role": "user", "content": '"image_url"' + "x" * 20_000}],
    )
    assert_refused(post(gateway, disguised, token=paid_token), 413, "request_too_large")
    # Without valid credentials the text limit holds: 413 before the 401.
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=with_image,
        headers=bearer("hzt_" + "A" * 43),
        timeout=30,
    )
    assert_refused(response, 413, "request_too_large")
    too_big = chat_body(
        model="openai-gpt-4o", messages=with_images("data:image/png;base64," + "A" * 70_000)
    )
    assert_refused(post(gateway, too_big, token=paid_token), 413, "request_too_large")
    assert len(provider.requests_for("openai")) == 1
    assert len(ledger(1)) == 1
