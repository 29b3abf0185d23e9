"""What every provider adapter shares: usage, results, upstream errors, SSE decoding.

An adapter turns a validated OpenAI request into the provider's HTTP request
and the provider's answer (a JSON body or a stream of server-sent events)
back into OpenAI's shape, always under the route's public model name.
``gateway.upstream`` does the HTTP and maps transport failures.

Every upstream error carries ``usage``: what is known of the tokens the
provider consumed when it failed (reported, or estimated and marked so). Its
``code`` is also the usage record's status (``upstream_error``,
``upstream_timeout``, ``upstream_overloaded``, ``upstream_rejected``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from gateway.errors import GatewayError
from gateway.keys import ProviderKey
from gateway.logs import redact
from gateway.routes import Route
from gateway.validation import ChatRequest

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


@dataclass(slots=True)
class Completion:
    """A non-streamed answer: OpenAI's ``chat.completion`` body and its usage."""

    body: dict[str, Any]
    usage: Usage


@dataclass(frozen=True, slots=True)
class StreamDone:
    """The last event of a stream: it ended normally; this is its usage."""

    id: str
    created: int
    model: str
    usage: Usage
    finish_reason: str | None = None

    def usage_chunk(self, cost_usd: float | None = None) -> dict[str, Any]:
        """OpenAI's final usage chunk (``choices`` empty), for a client that asked for it."""
        usage: dict[str, Any] = {
            "prompt_tokens": self.usage.tokens_in,
            "completion_tokens": self.usage.tokens_out,
            "total_tokens": self.usage.tokens,
        }
        if cost_usd is not None:
            usage["cost_usd"] = cost_usd
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        }


# A stream yields OpenAI chunk dicts, then one StreamDone.
StreamEvent = dict[str, Any] | StreamDone


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: httpx.URL
    headers: httpx.Headers  # built once per key and shared between requests: never mutated
    body: dict[str, Any]


@functools.lru_cache(maxsize=16)
def endpoint(url: str) -> httpx.URL:
    """``url`` parsed once: parsing costs more than the rest of building a request.

    Keyed by the whole URL, so a base URL changed in settings is a new entry.
    """
    return httpx.URL(url)


# --- errors --------------------------------------------------------------------


class UpstreamError(GatewayError):
    """The provider failed: refused or reset connection, 5xx, malformed answer."""

    status = 502
    code = "upstream_error"
    message = "The model provider failed to answer"

    def __init__(
        self, message: str | None = None, *, usage: Usage = NO_USAGE, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.usage = usage


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


def estimate_tokens(text_chars: int, pieces: int) -> int:
    """Output tokens not reported: one per streamed delta, or about four characters each."""
    return max(pieces, math.ceil(text_chars / 4))


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
        """OpenAI chunks for one provider event; raises UpstreamError on an error event."""
        ...

    def done(self) -> StreamDone: ...

    def usage(self) -> Usage:
        """Tokens so far: reported where the provider said, estimated otherwise."""
        ...


class Adapter(Protocol):
    def check_request(self, request: ChatRequest) -> None:
        """Refuse (InvalidRequest) what this provider cannot take; runs before admission."""
        ...

    def build_request(
        self,
        route: Route,
        request: ChatRequest,
        *,
        key: ProviderKey,
        max_tokens: int,
    ) -> UpstreamRequest: ...

    def parse_response(self, route: Route, request: ChatRequest, data: Any) -> Completion:
        """OpenAI's chat.completion for a 200 body; UpstreamError when it is malformed."""
        ...

    def stream_translator(self, route: Route, request: ChatRequest) -> StreamTranslator: ...
