"""What every provider adapter shares: usage, results, upstream errors, SSE decoding.

An adapter turns a validated OpenAI request into the provider's HTTP request
and the provider's answer (a JSON body or a stream of server-sent events)
back into OpenAI's shape, always under the route's public model name.
``gateway.proxy.upstream`` does the HTTP and maps transport failures.

What the provider may bill is written as the request goes into its
``Meter`` (reported usage, the output seen so far, whether the request was
sent or refused), by the upstream client and the adapters; the settlement
reads it once (SPEC: "What a request costs when the provider's usage is
unknown"). An upstream error's ``code`` is also the usage record's status
(``upstream_error``, ``upstream_timeout``, ``upstream_overloaded``,
``upstream_rejected``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson

from gateway.core.errors import GatewayError, InvalidRequest
from gateway.core.logs import redact
from gateway.proxy.keys import ProviderKey
from gateway.proxy.routes import Route
from gateway.proxy.validation import ChatRequest, EmbeddingsRequest

MAX_ERROR_MESSAGE_CHARS = 500


@dataclass(frozen=True, slots=True)
class Usage:
    tokens_in: int = 0
    tokens_out: int = 0
    is_reported: bool = False  # both counts came from the provider (else some are estimated)

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


NO_USAGE = Usage(0, 0, True)


def usage_payload(usage: Usage) -> dict[str, Any]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": usage.tokens_in,
        "completion_tokens": usage.tokens_out,
        "total_tokens": usage.tokens,
    }


@dataclass(slots=True)
class Meter:
    """What is known, as one request goes, of what its provider may bill.

    Written by the upstream client and the adapters, read by the request's
    settlement: ``usage`` is SPEC's rule for what a request costs, in one place.
    """

    reported: Usage | None = None  # the provider's own final figures
    reported_input: int | None = None  # input it reported before the end (message_start)
    salvaged: Usage | None = None  # counts read out of a body that did not parse
    output_bytes: int = 0  # UTF-8 bytes of all output seen: content, reasoning, tool arguments
    is_sent: bool = False  # the request may have reached the provider
    is_refused: bool = False  # it answered that it did not process it (an error, no usage)
    is_output_unseen: bool = False  # it may have produced output never seen (timeout, garbage)

    def count(self, text: str) -> None:
        self.output_bytes += len(text) if text.isascii() else len(text.encode())

    def usage(self, *, input_bound: int, output_bound: int, hides_reasoning: bool) -> Usage:
        """The tokens to bill: the provider's report, else never less than it may bill.

        No token is shorter than a byte, so the bytes seen bound the output
        seen; the output bound (``max_tokens``, which the provider honours)
        bounds everything, seen or not.
        """
        if self.reported is not None:
            return self.reported
        if self.salvaged is not None:
            # The provider's counts, or text a model wrote to look like them
            # (an Anthropic tool input is raw JSON): never above the bounds.
            tokens_out = self.salvaged.tokens_out
            if self.is_output_unseen or hides_reasoning:
                tokens_out = output_bound
            return Usage(
                min(self.salvaged.tokens_in, input_bound), min(tokens_out, output_bound), False
            )
        if not self.is_sent or self.is_refused:
            return NO_USAGE
        tokens_in = self.reported_input if self.reported_input is not None else input_bound
        if self.is_output_unseen or hides_reasoning:
            return Usage(tokens_in, output_bound, False)
        return Usage(tokens_in, min(self.output_bytes, output_bound), False)


@dataclass(slots=True)
class Completion:
    """A non-streamed answer: OpenAI's ``chat.completion`` body (usage added at settlement)."""

    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StreamDone:
    """The last event of a stream: it ended normally."""

    id: str
    created: int
    model: str
    finish_reason: str | None = None

    def usage_chunk(self, usage: Usage, cost_usd: float | None = None) -> dict[str, Any]:
        """OpenAI's final usage chunk (``choices`` empty), for a client that asked for it."""
        payload = usage_payload(usage)
        if cost_usd is not None:
            payload["cost_usd"] = cost_usd
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": payload,
        }


# A stream yields OpenAI chunk dicts, then one StreamDone.
StreamEvent = dict[str, Any] | StreamDone


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: httpx.URL
    headers: httpx.Headers  # built once per key and shared between requests: never mutated
    body: bytes  # exactly what the input bound was computed from


@dataclass(frozen=True, slots=True)
class Outbound:
    """One request as the provider will receive it, built before admission.

    ``body`` is the exact upstream body: the budget's input bound is computed
    from these bytes (``billing.pricing.input_token_bound``) and these bytes
    are sent, whatever the adapter re-serialised (Anthropic tool calls, the
    schemas of tools and ``response_format``).
    """

    route: Route
    request: ChatRequest
    body: bytes
    max_tokens: int  # the client's max_tokens or the tier cap, sent upstream (per choice)
    input_bound: int  # tokens

    @property
    def output_bound(self) -> int:
        """Output tokens the provider can bill: the cap for each of the ``n`` choices."""
        return self.max_tokens * self.request.n

    @property
    def is_streamed(self) -> bool:
        return self.request.stream


@dataclass(frozen=True, slots=True)
class EmbeddingsOutbound:
    """An embeddings request as the provider will receive it, built before admission.

    Its input bound comes from the texts (``billing.pricing.embedding_input_bound``);
    embeddings have no output, so the output bound is 0, and no stream.
    """

    route: Route
    request: EmbeddingsRequest
    body: bytes
    input_bound: int  # tokens
    max_tokens: int = 0
    output_bound: int = 0
    is_streamed: bool = False


class Billable(Protocol):
    """What a request's settlement needs of its outbound request (either kind)."""

    @property
    def route(self) -> Route: ...

    @property
    def input_bound(self) -> int: ...

    @property
    def max_tokens(self) -> int: ...

    @property
    def output_bound(self) -> int: ...

    @property
    def is_streamed(self) -> bool: ...


@functools.lru_cache(maxsize=16)
def endpoint(url: str) -> httpx.URL:
    """``url`` parsed once: parsing costs more than the rest of building a request.

    Keyed by the whole URL, so a base URL changed in settings is a new entry.
    """
    return httpx.URL(url)


def encode_body(body: dict[str, Any]) -> bytes:
    """The upstream body's bytes; 400 before admission when they cannot be made."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:  # too deep, or an integer beyond 64 bits
        raise InvalidRequest("The request cannot be encoded for the model provider") from None


_USAGE_KEY = re.compile(rb'"usage"\s*:\s*\{')
# How far past '"usage": {' its counts may sit (OpenAI puts nested details first).
USAGE_WINDOW_BYTES = 1024


def salvage_usage(
    content: bytes, input_names: tuple[bytes, ...], output_name: bytes
) -> Usage | None:
    """The provider's counts out of a 200 body that does not parse as a whole.

    Its ``usage`` object may still be intact (a body broken further on, too
    deep, a lone surrogate elsewhere). Only an unescaped ``"usage"`` key is
    a match, so text the model wrote (escaped inside a string) is not; with
    several, the largest counts are taken.
    """
    tokens_in = tokens_out = -1
    for match in _USAGE_KEY.finditer(content):
        window = content[match.end() : match.end() + USAGE_WINDOW_BYTES]
        found_in = [_count(window, name) for name in input_names]
        found_out = _count(window, output_name)
        if found_in[0] is None or found_out is None:
            continue
        tokens_in = max(tokens_in, sum(count for count in found_in if count is not None))
        tokens_out = max(tokens_out, found_out)
    if tokens_in < 0:
        return None
    return Usage(tokens_in, tokens_out, True)


def _count(window: bytes, name: bytes) -> int | None:
    match = re.search(b'"' + re.escape(name) + rb'"\s*:\s*(\d{1,12})\b', window)
    return int(match.group(1)) if match else None


# --- errors --------------------------------------------------------------------


class UpstreamError(GatewayError):
    """The provider failed: refused or reset connection, 5xx, malformed answer."""

    status = 502
    code = "upstream_error"
    message = "The model provider failed to answer"


class UpstreamAuthRejected(UpstreamError):
    """The provider refused our key (401/403): refresh the key and retry once."""


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    message = "The model provider did not answer in time"


class UpstreamOverloaded(UpstreamError):
    status = 503
    code = "upstream_overloaded"
    message = "The model provider is overloaded, retry later"


class UpstreamRateLimited(UpstreamOverloaded):
    """A 429: the limit of the key it was sent with (another key may pass), answered to
    the client as any overload."""


class UpstreamRejected(UpstreamError):
    """Any other 4xx: the message is the provider's own text, cleaned, never its body."""

    status = 400
    code = "upstream_rejected"
    message = "The model provider rejected the request"


def provider_message(data: Any, key: ProviderKey | None) -> str | None:
    """The ``error.message`` text of an OpenAI- or Anthropic-shaped error body, made safe."""
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message.strip():
        return None
    if key is not None:
        message = message.replace(key.reveal(), "[REDACTED]")
    message = redact(message)
    if len(message) > MAX_ERROR_MESSAGE_CHARS:
        message = message[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"
    return message


# --- server-sent events ----------------------------------------------------------


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: str


@dataclass(slots=True)
class SSEDecoder:
    """Incremental ``text/event-stream`` parser over raw byte chunks."""

    _buffer: bytes = b""
    _event: str | None = None
    _data: list[str] = field(default_factory=list)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buffer = self._buffer + chunk if self._buffer else chunk
        end = buffer.rfind(b"\n")
        if end < 0:
            self._buffer = buffer
            return []
        self._buffer = buffer[end + 1 :]
        # Every complete line decoded at once: a newline byte is never part of
        # a multi-byte character, so this is the same as line by line.
        events: list[SSEEvent] = []
        for line in buffer[:end].decode("utf-8", "replace").split("\n"):
            line = line.rstrip("\r")
            if not line:
                if self._data:
                    events.append(SSEEvent(self._event, "\n".join(self._data)))
                    self._data = []
                self._event = None
            elif line[0] != ":":  # a line starting with a colon is a comment
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    self._data.append(value)
                elif name == "event":
                    self._event = value
        return events


# --- adapters ----------------------------------------------------------------------


class StreamTranslator(Protocol):
    finished: bool  # the provider said the answer is complete
    finish_reason: str | None

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        """OpenAI chunks for one provider event (its usage and output go to the meter);
        raises UpstreamError on an error event."""
        ...

    def done(self) -> StreamDone: ...


class Adapter(Protocol):
    def check_request(self, request: ChatRequest, route: Route) -> None:
        """Refuse (InvalidRequest) what this provider or route cannot take; runs before
        admission, so a provider's own 400 never costs the client a request."""
        ...

    def build_body(
        self, route: Route, request: ChatRequest, *, max_tokens: int, end_user: str
    ) -> bytes:
        """The exact upstream body, naming ``end_user`` as the provider's end-user id (never
        the client's own ``user``); InvalidRequest when it cannot be encoded."""
        ...

    def target(self, key: ProviderKey, *, stream: bool) -> tuple[httpx.URL, httpx.Headers]:
        """Where to send the body, with the key's headers."""
        ...

    def salvage(self, content: bytes) -> Usage | None:
        """The usage of a body that does not parse, when it can still be read."""
        ...

    def parse_response(
        self, route: Route, request: ChatRequest, data: Any, meter: Meter
    ) -> Completion:
        """OpenAI's chat.completion for a 200 body; UpstreamError when it is malformed."""
        ...

    def stream_translator(
        self, route: Route, request: ChatRequest, meter: Meter
    ) -> StreamTranslator: ...


class EmbeddingsAdapter(Protocol):
    """A provider with an embeddings API (OpenAI's ``/embeddings`` shape)."""

    def build_embeddings_body(
        self, route: Route, request: EmbeddingsRequest, *, end_user: str
    ) -> bytes:
        """The exact upstream body, naming ``end_user`` as the provider's end-user id."""
        ...

    def embeddings_target(self, key: ProviderKey) -> tuple[httpx.URL, httpx.Headers]: ...

    def parse_embeddings(self, route: Route, data: Any, meter: Meter) -> dict[str, Any]:
        """OpenAI's embeddings list for a 200 body (public model name, usage added at
        settlement); the provider's usage goes to ``meter``; UpstreamError when malformed."""
        ...
