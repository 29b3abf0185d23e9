"""The cost of a request, in integer micro-dollars (1e-6 USD). No floats.

(Conversions and formats: ``gateway.core.money``, re-exported here for callers.)

A route prices input and output tokens in USD per 1M tokens, which is exactly
micro-dollars per token: 0.50 USD / 1M tokens = 0.5 micro-dollars a token.
A request's cost is computed exactly (in integers, over the prices' common
denominator) and rounded UP to a whole micro-dollar once per request, never
per token or per part, so the ledger never undercharges and never compounds
rounding.

The reservation taken before forwarding is the same formula at an upper
bound of the input tokens (``input_token_bound``, from the exact upstream
body) and the output cap, so it is never below the cost
the provider's usage can later produce (the cost is monotonic in both token
counts and the rounding is the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from gateway.core.money import MICRO_PER_USD, SIX_PLACES, micro_to_usd, usd_number, usd_to_micro

# Input-token bound (see input_token_bound). Every tokenizer our providers
# use (tiktoken's byte-level BPE for OpenAI, Llama 3's BPE, Anthropic's)
# emits at most one token per UTF-8 byte of text, and the upstream body holds
# every text the model reads plus JSON's quotes and keys (SentencePiece's one
# "dummy prefix" token per text segment is covered by the segment's quotes).
# The overheads cover what providers add that is not in the body: chat
# template tokens per message (OpenAI 3-4, Llama 3 ~5, plus a name), the
# priming of the reply, and for tools the hidden tool-use system prompt
# (Anthropic documents 346 tokens for Claude 4 models) and per-function
# wrapping (OpenAI renders the schemas as a TypeScript namespace).
PER_REQUEST_OVERHEAD_TOKENS = 64
PER_MESSAGE_OVERHEAD_TOKENS = 16
TOOLS_OVERHEAD_TOKENS = 1024
PER_TOOL_OVERHEAD_TOKENS = 32
# Embeddings: the texts are tokenized alone (no template, no JSON), but some
# embedding tokenizers add special tokens to each input (BERT's [CLS] and
# [SEP], a Llama BOS/EOS); this covers them.
PER_EMBEDDING_INPUT_OVERHEAD_TOKENS = 4


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


def input_token_bound(
    body: bytes,
    *,
    messages: int,
    tools: int = 0,
    images: int = 0,
    image_bytes: int = 0,
    tokens_per_image: int = 0,
) -> int:
    """A true upper bound of the input tokens a provider can bill for ``body``.

    ``body`` is the exact upstream body (every forwarded byte counts:
    messages, tools, ``response_format``, re-serialised tool calls); no token
    is shorter than one byte. ``messages`` and ``tools`` count what the
    provider wraps in template tokens of its own. Images are not text: the
    ``image_bytes`` of their data (or URLs) in ``body`` are taken out, and
    each of the ``images`` counts ``tokens_per_image``, the route's maximum.
    """
    total = len(body) - image_bytes + images * tokens_per_image
    total += PER_REQUEST_OVERHEAD_TOKENS + PER_MESSAGE_OVERHEAD_TOKENS * messages
    if tools:
        total += TOOLS_OVERHEAD_TOKENS + PER_TOOL_OVERHEAD_TOKENS * tools
    return total


def embedding_input_bound(texts: Sequence[str]) -> int:
    """A true upper bound of the input tokens a provider can bill for embedding ``texts``.

    The same reasoning as ``input_token_bound``: no token is shorter than one
    UTF-8 byte, so a text has at most as many tokens as bytes, plus the special
    tokens a tokenizer adds per input. An embedding request has no output.
    """
    total = PER_EMBEDDING_INPUT_OVERHEAD_TOKENS * len(texts)
    for text in texts:
        total += len(text) if text.isascii() else len(text.encode())
    return total


__all__ = [
    "MICRO_PER_USD",
    "SIX_PLACES",
    "cost_micro_usd",
    "embedding_input_bound",
    "input_token_bound",
    "micro_to_usd",
    "usd_number",
    "usd_to_micro",
]
