"""OpenAI-compatible providers: OpenAI itself and DigitalOcean serverless inference.

Both speak Chat Completions, so the request is the client's (known fields
only) under the provider's model id, and the answer passes through with the
public model name. They differ in the token cap's name: OpenAI's current
models take ``max_completion_tokens`` (``max_tokens`` is deprecated and
refused by its reasoning models), DigitalOcean documents ``max_tokens``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from django.conf import settings

from gateway.core import clock
from gateway.core.errors import InvalidRequest
from gateway.proxy.keys import ProviderKey
from gateway.proxy.providers.base import (
    Completion,
    Meter,
    SSEEvent,
    StreamDone,
    UpstreamError,
    UpstreamOverloaded,
    Usage,
    encode_body,
    endpoint,
    salvage_usage,
)
from gateway.proxy.routes import Route
from gateway.proxy.validation import ChatRequest, EmbeddingsRequest

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
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "reasoning_effort",
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


_OUTPUT_TEXTS = frozenset({"content", "reasoning_content", "reasoning"})


def _count_output(message: Any, meter: Meter) -> bool:
    """Count every text of an answer's message or delta the provider bills as output
    (content, reasoning such as DeepSeek's ``reasoning_content``, tool-call names and
    arguments); False when it is not the shape OpenAI documents (unreadable).

    Runs for every streamed delta: one pass over its few fields.
    """
    if message.__class__ is not dict:
        return False
    for name, value in message.items():
        if name in _OUTPUT_TEXTS:
            if value.__class__ is str:
                meter.output_bytes += len(value) if value.isascii() else len(value.encode())
            elif value is not None:
                return False
        elif name == "tool_calls" and value is not None and not _count_calls(value, meter):
            return False
    return True


def _count_calls(calls: Any, meter: Meter) -> bool:
    if not isinstance(calls, list):
        return False
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if function is None and isinstance(call, dict):
            continue  # a stream's later fragment may carry only its index
        if not isinstance(function, dict):
            return False
        for name in ("name", "arguments"):
            value = function.get(name)
            if isinstance(value, str):
                meter.count(value)
            elif value is not None:
                return False
    return True


def salvage(content: bytes) -> Usage | None:
    return salvage_usage(content, (b"prompt_tokens",), b"completion_tokens")


class OpenAIAdapter:
    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.max_tokens_field = "max_completion_tokens" if provider == "openai" else "max_tokens"

    def check_request(self, request: ChatRequest, route: Route) -> None:
        """Everything validation accepts is forwarded as it is, but reasoning effort
        only to a reasoning model."""
        if request.reasoning_effort is not None and not route.has_hidden_reasoning:
            raise InvalidRequest(
                f"The model '{route.public_name}' does not take 'reasoning_effort'",
                param="reasoning_effort",
            )

    def build_body(
        self, route: Route, request: ChatRequest, *, max_tokens: int, end_user: str
    ) -> bytes:
        body: dict[str, Any] = {
            "model": route.provider_model,
            "messages": request.messages,
            self.max_tokens_field: max_tokens,
        }
        for name in FORWARDED:
            value = getattr(request, name)
            if value is not None:
                body[name] = value
        if request.n > 1:
            body["n"] = request.n
        body["user"] = end_user
        if request.stream:
            # Always ask for usage: the gateway bills from it, whatever the client wants.
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return encode_body(body)

    def target(self, key: ProviderKey, *, stream: bool) -> tuple[httpx.URL, httpx.Headers]:
        base = settings.PROVIDER_BASE_URLS[self.provider]
        accept = "text/event-stream" if stream else "application/json"
        return endpoint(f"{base}/chat/completions"), _headers(key, accept)

    def salvage(self, content: bytes) -> Usage | None:
        return salvage(content)

    def parse_response(
        self, route: Route, request: ChatRequest, data: Any, meter: Meter
    ) -> Completion:
        usage = reported_usage(data.get("usage")) if isinstance(data, dict) else None
        if usage is not None:
            meter.reported = usage
        choices = data.get("choices") if isinstance(data, dict) else None
        if (
            not isinstance(choices, list)
            or not choices
            or not all(isinstance(choice, dict) for choice in choices)
        ):
            meter.is_output_unseen = True  # an answer we cannot read: it may hold anything
            raise UpstreamError()
        if not all(_count_output(choice.get("message"), meter) for choice in choices):
            meter.is_output_unseen = True
            raise UpstreamError()
        body = {name: data[name] for name in ANSWER_FIELDS if name in data}
        body["object"] = "chat.completion"
        body["model"] = route.public_name
        body.setdefault("id", f"chatcmpl-{route.public_name}")
        body.setdefault("created", int(clock.now()))
        return Completion(body=body)

    def stream_translator(self, route: Route, request: ChatRequest, meter: Meter) -> OpenAIStream:
        return OpenAIStream(route=route, meter=meter)

    # --- embeddings (both providers speak OpenAI's /embeddings) ------------------

    def build_embeddings_body(
        self, route: Route, request: EmbeddingsRequest, *, end_user: str
    ) -> bytes:
        body: dict[str, Any] = {"model": route.provider_model, "input": request.input}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        if request.encoding_format is not None:
            body["encoding_format"] = request.encoding_format
        body["user"] = end_user
        return encode_body(body)

    def embeddings_target(self, key: ProviderKey) -> tuple[httpx.URL, httpx.Headers]:
        base = settings.PROVIDER_BASE_URLS[self.provider]
        return endpoint(f"{base}/embeddings"), _headers(key, "application/json")

    def parse_embeddings(self, route: Route, data: Any, meter: Meter) -> dict[str, Any]:
        usage = data.get("usage") if isinstance(data, dict) else None
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        if type(prompt) is int and prompt >= 0:
            meter.reported = Usage(prompt, 0, True)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or not all(
            isinstance(item, dict) and isinstance(item.get("embedding"), list | str)
            for item in items
        ):
            meter.is_output_unseen = True
            raise UpstreamError()
        return {"object": "list", "data": items, "model": route.public_name}


@dataclass(slots=True)
class OpenAIStream:
    """Passes OpenAI chunks through (public model name, no usage); usage and output go
    to the meter."""

    route: Route
    meter: Meter
    finished: bool = False
    id: str = ""
    created: int = 0
    finish_reason: str | None = None

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        if self.finished:
            return []
        if event.data.strip() == "[DONE]":
            self.finished = True
            return []
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise self._unreadable() from None
        if not isinstance(chunk, dict):
            raise self._unreadable()
        if "error" in chunk:
            self._raise_stream_error(chunk)
        # Every chunk carries "usage" (null until the last) when it was asked for.
        usage = chunk.pop("usage", None)
        if usage is not None:
            self.meter.reported = reported_usage(usage) or self.meter.reported
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return []  # the usage chunk (or a keep-alive): consumed here
        self.id = self.id or str(chunk.get("id") or "")
        self.created = self.created or int(chunk.get("created") or 0)
        for choice in choices:
            if not isinstance(choice, dict) or not _count_output(choice.get("delta"), self.meter):
                raise self._unreadable()
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        chunk["model"] = self.route.public_name
        return [chunk]

    def _raise_stream_error(self, chunk: dict[str, Any]) -> None:
        error = chunk.get("error")
        kind = error.get("type") if isinstance(error, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        if "overloaded" in f"{kind} {code}" or code == "rate_limit_exceeded":
            raise UpstreamOverloaded(retry_after=5)
        raise UpstreamError()

    def _unreadable(self) -> UpstreamError:
        """An event we cannot read: it may hold output never seen."""
        self.meter.is_output_unseen = True
        return UpstreamError()

    def done(self) -> StreamDone:
        return StreamDone(
            id=self.id or f"chatcmpl-{self.route.public_name}",
            created=self.created or int(clock.now()),
            model=self.route.public_name,
            finish_reason=self.finish_reason,
        )
