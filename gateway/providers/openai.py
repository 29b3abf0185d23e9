"""OpenAI-compatible providers: OpenAI itself and DigitalOcean serverless inference.

Both speak Chat Completions, so the request is the client's (known fields
only) under the provider's model id, and the answer passes through with the
public model name. They differ in the token cap's name: OpenAI's current
models take ``max_completion_tokens`` (``max_tokens`` is deprecated and
refused by its reasoning models), DigitalOcean documents ``max_tokens``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from django.conf import settings

from gateway import clock
from gateway.keys import ProviderKey
from gateway.providers.base import (
    NO_USAGE,
    Completion,
    SSEEvent,
    StreamDone,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRequest,
    Usage,
    endpoint,
    estimate_tokens,
)
from gateway.routes import Route
from gateway.validation import ChatRequest, estimate_input_tokens

# ChatRequest fields forwarded as they are when set.
FORWARDED = (
    "temperature",
    "top_p",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "response_format",
    "user",
)
# Top-level fields of an answer that reach the client (the rest is dropped).
ANSWER_FIELDS = ("id", "object", "created", "choices", "system_fingerprint")


def reported_usage(usage: Any) -> Usage | None:
    """An OpenAI ``usage`` object as Usage, when it holds both counts."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if type(prompt) is not int or type(completion) is not int or prompt < 0 or completion < 0:
        return None
    return Usage(prompt, completion, True)


@functools.lru_cache(maxsize=16)
def _headers(key: ProviderKey, accept: str) -> httpx.Headers:
    """Built once per key (a rotated key is a new entry, the old one ages out)."""
    return httpx.Headers(
        {
            "Authorization": f"Bearer {key.reveal()}",
            "Content-Type": "application/json",
            "Accept": accept,
        }
    )


def _message_chars(message: Any) -> int:
    if not isinstance(message, dict):
        return 0
    content = message.get("content")
    total = len(content) if isinstance(content, str) else 0
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            total += len(function["arguments"])
    return total


class OpenAIAdapter:
    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.max_tokens_field = "max_completion_tokens" if provider == "openai" else "max_tokens"

    def check_request(self, request: ChatRequest) -> None:
        """Everything validation accepts is forwarded as it is."""

    def build_request(
        self, route: Route, request: ChatRequest, *, key: ProviderKey, max_tokens: int
    ) -> UpstreamRequest:
        body: dict[str, Any] = {
            "model": route.provider_model,
            "messages": request.messages,
            self.max_tokens_field: max_tokens,
        }
        for name in FORWARDED:
            value = getattr(request, name)
            if value is not None:
                body[name] = value
        if request.stream:
            # Always ask for usage: the gateway bills from it, whatever the client wants.
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        base = settings.PROVIDER_BASE_URLS[self.provider]
        return UpstreamRequest(
            url=endpoint(f"{base}/chat/completions"),
            headers=_headers(key, "text/event-stream" if request.stream else "application/json"),
            body=body,
        )

    def parse_response(self, route: Route, request: ChatRequest, data: Any) -> Completion:
        choices = data.get("choices") if isinstance(data, dict) else None
        usage = reported_usage(data.get("usage")) if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            raise UpstreamError(usage=usage or NO_USAGE)
        if not all(isinstance(choice, dict) for choice in choices):
            raise UpstreamError(usage=usage or NO_USAGE)
        body = {name: data[name] for name in ANSWER_FIELDS if name in data}
        body["object"] = "chat.completion"
        body["model"] = route.public_name
        body.setdefault("id", f"chatcmpl-{route.public_name}")
        body.setdefault("created", int(clock.now()))
        if usage is None:
            chars = sum(_message_chars(choice.get("message")) for choice in choices)
            usage = Usage(estimate_input_tokens(request), estimate_tokens(chars, 0), False)
        body["usage"] = {
            "prompt_tokens": usage.tokens_in,
            "completion_tokens": usage.tokens_out,
            "total_tokens": usage.tokens,
        }
        return Completion(body=body, usage=usage)

    def stream_translator(self, route: Route, request: ChatRequest) -> OpenAIStream:
        return OpenAIStream(route=route, request=request)


@dataclass(slots=True)
class OpenAIStream:
    """Passes OpenAI chunks through (public model name, no usage) and keeps the usage."""

    route: Route
    request: ChatRequest
    finished: bool = False
    id: str = ""
    created: int = 0
    finish_reason: str | None = None
    reported: Usage | None = None
    deltas: int = 0
    chars: int = 0
    _estimated_input: int | None = field(default=None)

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        if self.finished:
            return []
        if event.data.strip() == "[DONE]":
            self.finished = True
            return []
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise UpstreamError(usage=self.usage()) from None
        if not isinstance(chunk, dict):
            raise UpstreamError(usage=self.usage())
        if "error" in chunk:
            self._raise_stream_error(chunk)
        # Every chunk carries "usage" (null until the last) when it was asked for.
        usage = chunk.pop("usage", None)
        if usage is not None:
            self.reported = reported_usage(usage) or self.reported
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return []  # the usage chunk (or a keep-alive): consumed here
        self.id = self.id or str(chunk.get("id") or "")
        self.created = self.created or int(chunk.get("created") or 0)
        for choice in choices:
            if not isinstance(choice, dict):
                raise UpstreamError(usage=self.usage())
            delta = choice.get("delta")
            chars = _message_chars(delta)
            if chars:
                self.deltas += 1
                self.chars += chars
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        chunk["model"] = self.route.public_name
        return [chunk]

    def _raise_stream_error(self, chunk: dict[str, Any]) -> None:
        error = chunk.get("error")
        kind = error.get("type") if isinstance(error, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        if "overloaded" in f"{kind} {code}" or code == "rate_limit_exceeded":
            raise UpstreamOverloaded(usage=self.usage(), retry_after=5)
        raise UpstreamError(usage=self.usage())

    def usage(self) -> Usage:
        if self.reported is not None:
            return self.reported
        if self._estimated_input is None:
            self._estimated_input = estimate_input_tokens(self.request)
        return Usage(self._estimated_input, estimate_tokens(self.chars, self.deltas), False)

    def done(self) -> StreamDone:
        return StreamDone(
            id=self.id or f"chatcmpl-{self.route.public_name}",
            created=self.created or int(clock.now()),
            model=self.route.public_name,
            usage=self.usage(),
            finish_reason=self.finish_reason,
        )
