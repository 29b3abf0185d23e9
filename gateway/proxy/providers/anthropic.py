"""Anthropic Messages, translated both ways to and from OpenAI Chat Completions.

Request: system messages become the top-level ``system``; tool results
(role ``tool``) become ``tool_result`` blocks of a user turn and assistant
``tool_calls`` become ``tool_use`` blocks (consecutive turns of one role are
merged, as the API wants them alternating); ``stop`` becomes
``stop_sequences``; tools and ``tool_choice`` (auto/none/required/function)
map to Anthropic's; ``max_tokens`` is always sent. Temperatures above
Anthropic's maximum of 1 are clamped to it.

Answer and stream: text and ``tool_use`` blocks become OpenAI content and
``tool_calls``, stop reasons become finish reasons, and usage is input from
``message_start`` plus the output count of the last ``message_delta``, which
is cumulative: taken as the total, never summed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
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
from gateway.proxy.validation import ChatRequest, image_media_type

API_VERSION = "2023-06-01"
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
OVERLOADED_ERRORS = ("overloaded_error", "rate_limit_error")
# The image formats Anthropic's vision accepts (a data URL of another is a 400 here).
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


@functools.lru_cache(maxsize=16)
def _headers(key: ProviderKey, accept: str) -> httpx.Headers:
    """Built once per key (a rotated key is a new entry, the old one ages out)."""
    return httpx.Headers(
        {
            "x-api-key": key.reveal(),
            "anthropic-version": API_VERSION,
            "Content-Type": "application/json",
            "Accept": accept,
        }
    )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content or () if part["type"] == "text")


def _image_block(url: str) -> dict[str, Any]:
    """An ``image_url`` as Anthropic's image block: base64 for a data URL, a url
    source for https (Anthropic fetches it; the gateway never does)."""
    data = image_media_type(url)
    if data is None:
        return {"type": "image", "source": {"type": "url", "url": url}}
    media_type, payload = data
    if media_type not in IMAGE_MEDIA_TYPES:
        raise InvalidRequest(
            f"Images for this model must be one of {', '.join(IMAGE_MEDIA_TYPES)}, "
            f"not {media_type[:50]}",
            param="messages",
        )
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": payload},
    }


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    """A user message's parts in order: text blocks (never empty) and image blocks."""
    if isinstance(content, str) or all(part["type"] == "text" for part in content):
        return _text_blocks(content)
    blocks: list[dict[str, Any]] = []
    for part in content:
        if part["type"] == "image_url":
            blocks.append(_image_block(part["image_url"]["url"]))
        elif part["text"]:
            blocks.append({"type": "text", "text": part["text"]})
    return blocks


def _text_blocks(content: Any) -> list[dict[str, Any]]:
    text = _text(content)
    # Anthropic refuses empty text blocks.
    return [{"type": "text", "text": text}] if text else []


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    try:
        arguments = orjson.loads(call["function"]["arguments"] or "{}")
    except orjson.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise InvalidRequest(
            "Tool call arguments must be a JSON object for this model", param="messages"
        )
    name = call["function"]["name"]
    return {"type": "tool_use", "id": call["id"], "name": name, "input": arguments}


def translate_messages(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """(top-level system, Anthropic messages) for validated OpenAI messages."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role == "system":
            system.append(_text(message["content"]))
            continue
        if role == "tool":
            role = "user"
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": message["tool_call_id"],
                    "content": _text(message["content"]),
                }
            ]
        elif role == "assistant":
            blocks = _text_blocks(message.get("content"))
            blocks += [_tool_use(call) for call in message.get("tool_calls") or ()]
        else:
            blocks = _user_blocks(message["content"])
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return ("\n\n".join(system) if system else None), turns


def translate_tools(request: ChatRequest) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` in Anthropic's shape (empty when there are none)."""
    if not request.tools:
        return {}
    tools = [
        {
            "name": tool["function"]["name"],
            "description": tool["function"].get("description", ""),
            "input_schema": tool["function"].get("parameters") or {"type": "object"},
        }
        for tool in request.tools
    ]
    choice: dict[str, Any] | None = None
    if request.tool_choice == "auto":
        choice = {"type": "auto"}
    elif request.tool_choice == "none":
        choice = {"type": "none"}
    elif request.tool_choice == "required":
        choice = {"type": "any"}
    elif isinstance(request.tool_choice, dict):
        choice = {"type": "tool", "name": request.tool_choice["function"]["name"]}
    if request.parallel_tool_calls is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    return {"tools": tools, **({"tool_choice": choice} if choice else {})}


class AnthropicAdapter:
    provider = "anthropic"

    def check_request(self, request: ChatRequest, route: Route) -> None:
        """What Anthropic has no equivalent for is refused, not silently dropped (the
        client would get another answer than it asked for); tool calls sent back
        must have JSON-object arguments (``tool_use.input``)."""
        model = route.public_name
        if request.n > 1:
            raise InvalidRequest(f"The model '{model}' gives one choice: 'n' must be 1", param="n")
        for name in ("logprobs", "top_logprobs", "logit_bias", "reasoning_effort"):
            if getattr(request, name) not in (None, False):
                raise InvalidRequest(f"The model '{model}' does not take '{name}'", param=name)
        format_type = (request.response_format or {}).get("type", "text")
        if format_type != "text":
            raise InvalidRequest(
                f"The model '{model}' does not take 'response_format' {format_type}: "
                "describe the JSON in a tool instead",
                param="response_format",
            )
        for message in request.messages:
            for call in message.get("tool_calls") or ():
                _tool_use(call)

    def build_body(
        self, route: Route, request: ChatRequest, *, max_tokens: int, end_user: str
    ) -> bytes:
        system, messages = translate_messages(request.messages)
        body: dict[str, Any] = {
            "model": route.provider_model,
            "max_tokens": max_tokens,
            "messages": messages,
            "metadata": {"user_id": end_user},
        }
        if system is not None:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, 1.0)
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop_sequences"] = request.stop
        body.update(translate_tools(request))
        if request.stream:
            body["stream"] = True
        return encode_body(body)

    def target(self, key: ProviderKey, *, stream: bool) -> tuple[httpx.URL, httpx.Headers]:
        base = settings.PROVIDER_BASE_URLS["anthropic"]
        accept = "text/event-stream" if stream else "application/json"
        return endpoint(f"{base}/v1/messages"), _headers(key, accept)

    def salvage(self, content: bytes) -> Usage | None:
        return salvage_usage(
            content,
            (b"input_tokens", b"cache_creation_input_tokens", b"cache_read_input_tokens"),
            b"output_tokens",
        )

    def parse_response(
        self, route: Route, request: ChatRequest, data: Any, meter: Meter
    ) -> Completion:
        usage = _reported_usage(data.get("usage") if isinstance(data, dict) else None)
        if usage is not None:
            meter.reported = usage
        content = data.get("content") if isinstance(data, dict) else None
        if not isinstance(content, list) or not all(_readable(block) for block in content):
            meter.is_output_unseen = True  # an answer we cannot read: it may hold anything
            raise UpstreamError()
        for block in content:
            for name in ("text", "thinking"):
                if isinstance(block.get(name), str):
                    meter.count(block[name])
        texts = [
            block["text"]
            for block in content
            if block.get("type") == "text" and isinstance(block.get("text"), str)
        ]
        calls: list[dict[str, Any]] = [
            {
                "id": str(block.get("id", "")),
                "type": "function",
                "function": {
                    "name": str(block.get("name", "")),
                    "arguments": orjson.dumps(block.get("input") or {}).decode(),
                },
            }
            for block in content
            if block.get("type") == "tool_use"
        ]
        for call in calls:
            meter.count(call["function"]["name"])
            meter.count(call["function"]["arguments"])
        text = "".join(texts) if texts else None
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        elif message["content"] is None:
            message["content"] = ""
        body = {
            "id": str(data.get("id") or "msg"),
            "object": "chat.completion",
            "created": int(clock.now()),
            "model": route.public_name,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": FINISH_REASONS.get(str(data.get("stop_reason")), "stop"),
                }
            ],
        }
        return Completion(body=body)

    def stream_translator(
        self, route: Route, request: ChatRequest, meter: Meter
    ) -> AnthropicStream:
        return AnthropicStream(route=route, meter=meter, created=int(clock.now()))


def _readable(block: Any) -> bool:
    """A content block in the shape Anthropic documents (unknown types are skipped)."""
    if not isinstance(block, dict):
        return False
    kind = block.get("type")
    if kind in ("text", "thinking"):
        return isinstance(block.get(kind), str)
    if kind == "tool_use":
        return isinstance(block.get("input", {}), dict) and isinstance(block.get("name", ""), str)
    return True


def _input_tokens(usage: dict[str, Any]) -> int | None:
    counts = [
        usage.get(name)
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    ]
    if type(counts[0]) is not int:
        return None
    return sum(count for count in counts if type(count) is int and count > 0)


def _reported_usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    tokens_in, tokens_out = _input_tokens(usage), usage.get("output_tokens")
    if tokens_in is None or type(tokens_out) is not int or tokens_out < 0:
        return None
    return Usage(tokens_in, tokens_out, True)


@dataclass(slots=True)
class AnthropicStream:
    """Anthropic stream events in, OpenAI chunks out; usage and output go to the meter."""

    route: Route
    meter: Meter
    created: int
    finished: bool = False
    id: str = ""
    finish_reason: str | None = None
    tokens_in: int | None = None
    _tool_index: dict[int, int] = field(default_factory=dict)

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.route.public_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        if self.finished:
            return []
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise self._unreadable() from None
        if not isinstance(data, dict):
            raise self._unreadable()
        kind = data.get("type")
        if kind == "message_start":
            return self._start(data.get("message"))
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "message_delta":
            return self._message_delta(data)
        if kind == "message_stop":
            self.finished = True
        elif kind == "error":
            error = data.get("error")
            error_type = error.get("type") if isinstance(error, dict) else None
            if error_type in OVERLOADED_ERRORS:
                raise UpstreamOverloaded(retry_after=5)
            raise UpstreamError()
        return []

    def _start(self, message: Any) -> list[dict[str, Any]]:
        if not isinstance(message, dict):
            raise self._unreadable()
        self.id = str(message.get("id") or "msg")
        usage = message.get("usage")
        if isinstance(usage, dict):
            self.tokens_in = _input_tokens(usage)
            self.meter.reported_input = self.tokens_in
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        block = data.get("content_block")
        if not isinstance(block, dict) or block.get("type") != "tool_use":
            return []
        index = len(self._tool_index)
        self._tool_index[data.get("index", -1)] = index
        name = str(block.get("name", ""))
        self.meter.count(name)
        call = {
            "index": index,
            "id": str(block.get("id", "")),
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            raise self._unreadable()
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(delta.get("text"), str):
            self.meter.count(delta["text"])
            return [self._chunk({"content": delta["text"]})]
        if kind == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            index = self._tool_index.get(data.get("index", -1))
            if index is None:
                raise self._unreadable()
            self.meter.count(delta["partial_json"])
            call = {"index": index, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        if kind == "thinking_delta" and isinstance(delta.get("thinking"), str):
            # Billed as output, not part of the OpenAI answer.
            self.meter.count(delta["thinking"])
        return []  # signature deltas carry no billed text

    def _message_delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        usage = data.get("usage")
        if isinstance(usage, dict):
            if type(usage.get("input_tokens")) is int:
                self.tokens_in = _input_tokens(usage)
            # Cumulative totals: the final count replaces, never adds.
            tokens_out = usage.get("output_tokens")
            if type(tokens_out) is int and tokens_out >= 0 and self.tokens_in is not None:
                self.meter.reported = Usage(self.tokens_in, tokens_out, True)
        delta = data.get("delta")
        reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if not reason:
            return []
        self.finish_reason = FINISH_REASONS.get(str(reason), "stop")
        return [self._chunk({}, self.finish_reason)]

    def _unreadable(self) -> UpstreamError:
        """An event we cannot read: it may hold output never seen."""
        self.meter.is_output_unseen = True
        return UpstreamError()

    def done(self) -> StreamDone:
        return StreamDone(
            id=self.id or "msg",
            created=self.created,
            model=self.route.public_name,
            finish_reason=self.finish_reason,
        )
