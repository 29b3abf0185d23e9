"""The cost of a request, in integer micro-dollars (1e-6 USD). No floats.

A route prices input and output tokens in USD per 1M tokens, which is exactly
micro-dollars per token: 0.50 USD / 1M tokens = 0.5 micro-dollars a token.
A request's cost is computed exactly (in integers, over the prices' common
denominator) and rounded UP to a whole micro-dollar once per request, never
per token or per part, so the ledger never undercharges and never compounds
rounding.

The reservation taken before forwarding uses ``worst_case_micro_usd``: the
same formula at an upper bound of the input tokens and the output cap, so it
is never below the cost the provider's usage can later produce (the cost is
monotonic in both token counts and the rounding is the same).
"""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

MICRO_PER_USD = 1_000_000
SIX_PLACES = Decimal("0.000001")

# Input-token bound (see input_token_upper_bound). Every tokenizer our
# providers use (tiktoken's byte-level BPE for OpenAI, Llama 3's BPE,
# Anthropic's) emits at most one token per UTF-8 byte of text; SentencePiece
# may add one "dummy prefix" token per text segment, hence the per-string
# allowance. The overheads cover what providers add around the text: chat
# template tokens per message (OpenAI 3-4, Llama 3 ~5, plus a name), the
# priming of the reply, and for tools the hidden tool-use system prompt
# (Anthropic documents 346 tokens for Claude 4 models) and per-function
# wrapping (OpenAI renders the schemas as a TypeScript namespace).
PER_REQUEST_OVERHEAD_TOKENS = 64
PER_MESSAGE_OVERHEAD_TOKENS = 16
PER_STRING_OVERHEAD_TOKENS = 2
TOOLS_OVERHEAD_TOKENS = 1024
PER_TOOL_OVERHEAD_TOKENS = 32
# A non-text part (image, audio, file) costs at least this many tokens in
# the bound, or its JSON bytes if larger (a base64 image is far larger than
# its tokens). The largest image bills are ~1,600 tokens (Claude: ~1.15 MP /
# 750; GPT-4o high detail: 85 + 170 x 8 tiles = 1,445). Limit: a PDF "file"
# part bills its pages' text and images, which can exceed its bytes for a
# tiny many-page file; the proxy should refuse or drop file parts.
NON_TEXT_PART_MIN_TOKENS = 4096

_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text", "refusal"})


def usd_to_micro(value: Decimal | int) -> int:
    """USD -> micro-dollars, to the nearest micro-dollar (exact for *_usd fields)."""
    if isinstance(value, float):
        raise TypeError("money is never a float")
    micro = (Decimal(value) * MICRO_PER_USD).to_integral_value(rounding=ROUND_HALF_UP)
    return int(micro)


def micro_to_usd(micro: int) -> Decimal:
    """Micro-dollars -> USD with exactly six decimal places."""
    return (Decimal(int(micro)) / MICRO_PER_USD).quantize(SIX_PLACES)


def usd_number(value: Decimal) -> float:
    """A USD amount as a JSON number that prints exactly to six places.

    A double holds any decimal of up to 15 significant digits exactly enough
    that its shortest repr is that decimal; six places leave nine integer
    digits (a billion dollars), which no report here reaches.
    """
    quantized = Decimal(value).quantize(SIX_PLACES)
    if abs(quantized) >= Decimal(10) ** 9:
        raise ValueError("amount too large to print exactly as a JSON number")
    return float(quantized)


def _price(value: Decimal | int | str) -> tuple[int, int]:
    """The price as an exact fraction (numerator, denominator > 0)."""
    if isinstance(value, float):
        raise TypeError("prices are Decimal, never float")
    numerator, denominator = Decimal(value).as_integer_ratio()
    if numerator < 0:
        raise ValueError("a price cannot be negative")
    return numerator, denominator


def _tokens(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def cost_micro_usd(
    *,
    tokens_in: int,
    tokens_out: int,
    input_price: Decimal | int | str,
    output_price: Decimal | int | str,
) -> int:
    """Cost of one request in micro-dollars, rounded up once per request.

    Prices are USD per 1M tokens (= micro-dollars per token).
    """
    # In plain integers over a common denominator: Fraction would do the same
    # with a gcd and type dispatch at every step, five times slower.
    in_numerator, in_denominator = _price(input_price)
    out_numerator, out_denominator = _price(output_price)
    numerator = (
        _tokens("tokens_in", tokens_in) * in_numerator * out_denominator
        + _tokens("tokens_out", tokens_out) * out_numerator * in_denominator
    )
    return -(-numerator // (in_denominator * out_denominator))  # rounded up


def worst_case_micro_usd(
    *,
    input_bound_tokens: int,
    max_output_tokens: int,
    input_price: Decimal | int | str,
    output_price: Decimal | int | str,
) -> int:
    """The reservation: an upper bound of ``cost_micro_usd`` for the request."""
    return cost_micro_usd(
        tokens_in=input_bound_tokens,
        tokens_out=max_output_tokens,
        input_price=input_price,
        output_price=output_price,
    )


def _json_bytes(value: Any) -> int:
    # ensure_ascii=False: a non-ASCII character counts its UTF-8 bytes, and
    # escaping only ever adds bytes, so this is >= the bytes of every string.
    return len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8"))


def _string_bytes(value: Any) -> int:
    """UTF-8 bytes of every string (and number) inside ``value``, plus a per-string allowance."""
    if isinstance(value, str):
        return len(value.encode("utf-8")) + PER_STRING_OVERHEAD_TOKENS
    if isinstance(value, dict):
        return sum(_string_bytes(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(_string_bytes(item) for item in value)
    if value is None or isinstance(value, bool):
        return 0
    # Numbers and anything else: as they would be printed.
    return _json_bytes(value) + PER_STRING_OVERHEAD_TOKENS


def _part_bound(part: Any) -> int:
    if isinstance(part, dict):
        kind = part.get("type")
        if kind in _TEXT_PART_TYPES or (kind is None and "text" in part):
            return _string_bytes(part)
        return max(_json_bytes(part), NON_TEXT_PART_MIN_TOKENS)
    return _string_bytes(part)


def _message_bound(message: Any) -> int:
    if not isinstance(message, dict):
        return PER_MESSAGE_OVERHEAD_TOKENS + _json_bytes(message)
    total = PER_MESSAGE_OVERHEAD_TOKENS
    for field, value in message.items():
        if field == "content" and isinstance(value, list):
            total += sum(_part_bound(part) for part in value)
        else:
            # role, name, string content, tool_calls (names and arguments),
            # tool_call_id: every string the provider may render.
            total += _string_bytes(value)
    return total


def input_token_upper_bound(
    messages: list[dict[str, Any]],
    *,
    tools: list[Any] | None = None,
    system: str | None = None,
) -> int:
    """A true upper bound of the input tokens any provider can bill for the request.

    UTF-8 bytes of every string the request carries (no tokenizer in use
    emits more tokens than bytes), plus fixed overheads per request, message,
    string and tool; non-text parts count their JSON bytes with a floor (see
    NON_TEXT_PART_MIN_TOKENS). Tool definitions count their JSON bytes.
    """
    total = PER_REQUEST_OVERHEAD_TOKENS + sum(_message_bound(message) for message in messages)
    if system:
        total += PER_MESSAGE_OVERHEAD_TOKENS + _string_bytes(system)
    if tools:
        total += TOOLS_OVERHEAD_TOKENS + sum(
            PER_TOOL_OVERHEAD_TOKENS + _json_bytes(tool) for tool in tools
        )
    return total
