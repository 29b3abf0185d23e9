"""The chat pipeline's OpenAI chunks as Anthropic's Messages stream events.

``message_start`` before the first chunk's output, one content block per
text run or tool call (``content_block_start``, ``text_delta`` or
``input_json_delta`` deltas, ``content_block_stop``), then, once the
request is settled, ``message_delta`` (the stop reason and the usage billed)
and ``message_stop``. Reasoning deltas are dropped (a ``thinking`` block
needs the provider's signature). Every event is ``event: <type>`` and its
JSON ``data``, as Anthropic sends them.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.core.errors import GatewayError
from gateway.proxy.messages import error_payload, message_id, stop_reason
from gateway.proxy.providers.base import StreamDone, Usage


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_event(error: GatewayError) -> bytes:
    return sse("error", error_payload(error))


class MessageEvents:
    """Translates one stream; ``chunk`` for each OpenAI chunk, ``end`` once settled."""

    __slots__ = ("_blocks", "_finish_reason", "_open", "_started", "_tools")

    def __init__(self) -> None:
        self._started = False
        self._blocks = 0  # content blocks started
        self._open: int | None = None  # the block being written
        self._tools: dict[int, int] = {}  # OpenAI tool call index -> block index
        self._finish_reason: Any = None

    def chunk(self, chunk: dict[str, Any], *, input_tokens: int) -> bytes:
        out = b""
        if not self._started:
            self._started = True
            out += self._message_start(chunk, input_tokens)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                out += self._text(text)
            for call in delta.get("tool_calls") or ():
                out += self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return out

    def end(self, done: StreamDone, usage: Usage) -> bytes:
        """The last events, once the request is settled at ``usage``."""
        out = b""
        if not self._started:  # a stream without a chunk
            self._started = True
            out += self._message_start({"id": done.id, "model": done.model}, usage.tokens_in)
        self._finish_reason = self._finish_reason or done.finish_reason
        out += self._close()
        out += sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(self._finish_reason), "stop_sequence": None},
                "usage": {"input_tokens": usage.tokens_in, "output_tokens": usage.tokens_out},
            },
        )
        return out + sse("message_stop", {"type": "message_stop"})

    def _message_start(self, chunk: dict[str, Any], input_tokens: int) -> bytes:
        message: dict[str, Any] = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def _start(self, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._open = self._blocks
        self._blocks += 1
        return out + sse(
            "content_block_start",
            {"type": "content_block_start", "index": self._open, "content_block": block},
        )

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open = self._open, None
        return sse("content_block_stop", {"type": "content_block_stop", "index": index})

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return sse(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def _text(self, text: str) -> bytes:
        out = b""
        if self._open is None or self._open in self._tools.values():
            out = self._start({"type": "text", "text": ""})
        assert self._open is not None
        return out + self._delta(self._open, {"type": "text_delta", "text": text})

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        out = b""
        position = call.get("index", 0)
        function = call.get("function") or {}
        if position not in self._tools:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": {},
            }
            out = self._start(block)
            assert self._open is not None
            self._tools[position] = self._open
        arguments = function.get("arguments")
        if arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out += self._delta(self._tools[position], delta)
        return out
