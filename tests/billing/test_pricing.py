from __future__ import annotations

import json
import math
import random
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from billing.pricing import (
    TOOLS_OVERHEAD_TOKENS,
    cost_micro_usd,
    micro_to_usd,
    usd_number,
    usd_to_micro,
)
from gateway.proxy.upstream import outbound
from gateway.proxy.validation import parse_chat_request
from tests.gateway.upstream_support import (
    DIGITALOCEAN,
    END_USER,
    ONE_ROUTE_PER_PROVIDER,
    OPENAI,
    route,
)

# SPEC section 6: USD per 1M input / output tokens.
PRICES = {
    "llama3.3-70b-instruct": (Decimal("0.50"), Decimal("0.50")),
    "llama3-8b-instruct": (Decimal("0.10"), Decimal("0.10")),
    "deepseek-r1-distill-llama-70b": (Decimal("0.50"), Decimal("0.50")),
    "anthropic-claude-4-sonnet": (Decimal("3.00"), Decimal("15.00")),
    "openai-gpt-5": (Decimal("5.00"), Decimal("15.00")),
    "openai-gpt-4o": (Decimal("2.50"), Decimal("10.00")),
}

ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz ",
    "0123456789 .,;:!?\n\t\"'\\{}[]",
    "éüñçøßàÅ",
    "日本語中文한국어",
    "😀🚀👍🏽🇫🇷👨‍👩‍👧",
    "\u0301\u200b\u202e\x00",
]


def _cost(model: str, tokens_in: int, tokens_out: int) -> int:
    input_price, output_price = PRICES[model]
    return cost_micro_usd(
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        input_price=input_price,
        output_price=output_price,
    )


@pytest.mark.parametrize(
    ("model", "tokens_in", "tokens_out", "micro"),
    [
        ("llama3.3-70b-instruct", 1000, 500, 750),
        ("llama3-8b-instruct", 10, 10, 2),
        ("anthropic-claude-4-sonnet", 1000, 1000, 18_000),
        ("anthropic-claude-4-sonnet", 1_000_000, 0, 3_000_000),
        ("openai-gpt-5", 1_000_000, 1_000_000, 20_000_000),
        ("openai-gpt-4o", 1234, 567, 8755),  # 3085 + 5670
        ("deepseek-r1-distill-llama-70b", 0, 0, 0),
    ],
)
def test_cost_matches_the_route_prices_exactly(
    model: str, tokens_in: int, tokens_out: int, micro: int
) -> None:
    assert _cost(model, tokens_in, tokens_out) == micro


def test_cost_rounds_up_to_a_whole_micro_dollar() -> None:
    assert _cost("llama3-8b-instruct", 1, 0) == 1  # 0.1 micro-dollar
    assert _cost("llama3-8b-instruct", 15, 0) == 2  # 1.5
    assert _cost("openai-gpt-4o", 1, 0) == 3  # 2.5


def test_cost_rounds_once_per_request_not_per_side() -> None:
    # 0.5 + 0.5 = 1 micro-dollar; rounding each side would charge 2.
    assert _cost("llama3.3-70b-instruct", 1, 1) == 1


def test_cost_is_monotonic_in_both_token_counts() -> None:
    rng = random.Random(6)
    for _ in range(2000):
        model = rng.choice(list(PRICES))
        tokens_in, tokens_out = rng.randrange(200_000), rng.randrange(20_000)
        base = _cost(model, tokens_in, tokens_out)
        assert _cost(model, tokens_in + rng.randrange(1, 50), tokens_out) >= base
        assert _cost(model, tokens_in, tokens_out + rng.randrange(1, 50)) >= base
        # Never more than one micro-dollar above the exact figure.
        input_price, output_price = PRICES[model]
        exact = tokens_in * input_price + tokens_out * output_price
        assert exact <= base < exact + 1


def test_cost_is_the_exact_sum_rounded_up_once_for_any_price() -> None:
    rng = random.Random(10)
    for _ in range(3000):
        # Any number of decimal places, and the forms a price may come in.
        prices = [Decimal(rng.randrange(10**9)).scaleb(-rng.randrange(13)) for _ in range(2)]
        forms: list[Decimal | int | str] = []
        for price in prices:
            options: list[Decimal | int | str] = [price, str(price), f"{price:E}"]
            forms.append(rng.choice(options))
        if prices[1] == int(prices[1]):
            forms[1] = int(prices[1])
        tokens_in, tokens_out = rng.randrange(10**7), rng.randrange(10**6)
        exact = tokens_in * Fraction(prices[0]) + tokens_out * Fraction(prices[1])
        cost = cost_micro_usd(
            tokens_in=tokens_in, tokens_out=tokens_out, input_price=forms[0], output_price=forms[1]
        )
        assert cost == math.ceil(exact)


def test_the_worst_case_covers_every_cost_within_its_bounds() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        model = rng.choice(list(PRICES))
        bound, max_output = rng.randrange(1, 100_000), rng.randrange(1, 8193)
        worst = _cost(model, bound, max_output)  # what admission reserves
        assert worst >= _cost(model, rng.randrange(bound + 1), rng.randrange(max_output + 1))


def test_costs_refuse_floats_and_negative_tokens() -> None:
    with pytest.raises(TypeError):
        cost_micro_usd(tokens_in=1, tokens_out=1, input_price=0.5, output_price=Decimal(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cost_micro_usd(tokens_in=-1, tokens_out=1, input_price=Decimal(1), output_price=Decimal(1))
    with pytest.raises(ValueError):
        cost_micro_usd(tokens_in=1, tokens_out=1, input_price=Decimal(-1), output_price=Decimal(1))


def test_usd_and_micro_dollars_convert_both_ways_exactly() -> None:
    assert usd_to_micro(Decimal("50")) == 50_000_000
    assert usd_to_micro(Decimal("0.000123")) == 123
    assert micro_to_usd(123) == Decimal("0.000123")
    assert str(micro_to_usd(50_000_000)) == "50.000000"
    rng = random.Random(8)
    for _ in range(1000):
        micro = rng.randrange(10**14)
        assert usd_to_micro(micro_to_usd(micro)) == micro
    with pytest.raises(TypeError):
        usd_to_micro(0.1)


def test_usd_numbers_print_exactly_to_six_places() -> None:
    rng = random.Random(9)
    for _ in range(1000):
        amount = micro_to_usd(rng.randrange(10**15))
        assert Decimal(json.dumps(usd_number(amount))) == amount


def _random_text(rng: random.Random) -> str:
    alphabet = rng.choice(ALPHABETS)
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 300)))


def _random_message(rng: random.Random) -> tuple[dict[str, Any], int]:
    """A message and the UTF-8 bytes of the text in it."""
    role = rng.choice(["system", "user", "assistant", "tool"])
    reply = {"tool_call_id": "call_1"} if role == "tool" else {}
    shape = rng.randrange(4)
    if shape == 0:
        text = _random_text(rng)
        return {"role": role, "content": text, **reply}, len(text.encode())
    if shape == 1:
        texts = [_random_text(rng) for _ in range(rng.randrange(1, 4))]
        parts = [{"type": "text", "text": text} for text in texts]
        return {"role": role, "content": parts, **reply}, sum(len(t.encode()) for t in texts)
    if shape == 2:
        name, arguments = _random_text(rng)[:40], json.dumps({"q": _random_text(rng)})
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        }
        return message, len(name.encode()) + len(arguments.encode())
    text = _random_text(rng)
    return (
        {"role": "tool", "tool_call_id": "call_1", "name": "lookup", "content": text},
        len(text.encode()) + len(b"lookup"),
    )


def input_bound(
    messages: list[dict[str, Any]], name: str, tools: list[dict[str, Any]] | None = None
) -> int:
    """The input bound of the body the gateway sends upstream on route ``name``."""
    body = {"model": name, "messages": messages, **({"tools": tools} if tools else {})}
    request = parse_chat_request(json.dumps(body).encode())
    return outbound(route(name), request, max_tokens=16, end_user=END_USER).input_bound


def _string_bytes(value: object) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, dict):
        return sum(_string_bytes(item) for item in value.values())
    if isinstance(value, list):
        return sum(_string_bytes(item) for item in value)
    return 0


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
def test_the_input_bound_is_at_least_every_text_byte_sent_plus_chat_template_tokens(
    name: str,
) -> None:
    rng = random.Random(10)
    for _ in range(300):
        pairs = [_random_message(rng) for _ in range(rng.randrange(1, 12))]
        messages = [message for message, _ in pairs]
        body = {"model": name, "messages": messages}
        request = parse_chat_request(json.dumps(body).encode())
        sent = outbound(route(name), request, max_tokens=16, end_user=END_USER)
        # No tokenizer emits more tokens than bytes; chat templates add a few
        # tokens per message (OpenAI 3-4, Llama 3 five) and a few per request.
        text_bytes = _string_bytes(json.loads(sent.body))
        assert sent.input_bound >= text_bytes + 5 * len(messages) + 8
        if route(name).provider != "anthropic":  # forwarded as they are, with every text
            client_bytes = sum(size for _, size in pairs)
            assert sent.input_bound >= client_bytes + 5 * len(messages) + 8


# Anthropic's translation drops what it does not send (message names, empty
# parts) and re-encodes tool arguments: its bound follows the body sent (above).
@pytest.mark.parametrize("name", [OPENAI, DIGITALOCEAN])
def test_the_input_bound_grows_with_every_message(name: str) -> None:
    rng = random.Random(11)
    messages = [{"role": "user", "content": "hi"}]
    bound = input_bound(messages, name)
    for _ in range(50):
        message, size = _random_message(rng)
        messages.append(message)
        grown = input_bound(messages, name)
        assert grown >= bound + size + 1
        bound = grown


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
def test_the_input_bound_counts_tool_definitions_and_names(name: str) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather?"}]
    tools: list[dict[str, Any]] = [
        {
            "type": "function",
            "function": {
                "name": "get_weather_for_a_rather_long_city_name",
                "description": "Weather in a city " * 10,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    without = input_bound(messages, name)
    with_tools = input_bound(messages, name, tools)
    # The hidden tool-use system prompt (346 tokens on Claude 4) plus the schema's text.
    schema_text = tools[0]["function"]["description"] + tools[0]["function"]["name"]
    assert with_tools - without >= 346 + len(schema_text.encode())
    assert TOOLS_OVERHEAD_TOKENS >= 346
