"""Wire formats spoken by the fake LLM provider (see ``provider.py``).

Pure functions only: no I/O, no aiohttp. Everything here turns a parsed request
body into an *answer plan* and renders that plan as OpenAI Chat Completions or
Anthropic Messages JSON / server-sent events.

Deterministic model
-------------------
* input tokens  = whitespace-separated words in every text content (string
  content or ``{"type": "text"}`` parts) + the words of the system prompt
  + 3 per message.  Never more than the UTF-8 byte length + 3 per message.
  Billed by bytes (``FakeProvider.input_billing = "bytes"`` or ``[[bill:bytes]]``):
  the exact length of the raw request body, which no real tokenizer exceeds.
* output tokens = one per piece: ``tok0 ``, ``tok1 ``, ... (10 by default), after
  the reasoning pieces ``think0 ``, ``think1 ``, ... and any hidden reasoning.
  ``max_tokens`` / ``max_completion_tokens`` caps them all together, spent on
  hidden reasoning, then reasoning, then the answer (finish ``length`` when
  anything was cut); the answer is cut at the first stop sequence.

Directives, ``[[kind:arg]]`` in message texts (``arg`` cannot hold ``]``):

=========================  =====================================================
In the last user message
``[[tokens:N]]``           N answer pieces
``[[tool:NAME]]``          with ``tools`` in the request: call NAME with sample
                           arguments built from its JSON schema (one token per
                           8-character argument fragment); the cap never cuts
                           the arguments
``[[piece:TEXT]]``         every answer piece is TEXT (e.g. ``漢``, 3 bytes), still
                           one token each; TEXT is taken as is, spaces included
``[[piece_bytes:K]]``      every answer piece is ``"x" * K`` (K >= 1), one token
                           each; e.g. 8000 pieces of 4096 bytes make a fast 33 MB
                           stream
``[[reasoning:N]]``        N reasoning pieces before the answer, counted in the
                           output tokens and in ``reasoning_tokens``: OpenAI
                           ``reasoning_content`` (as DeepSeek), Anthropic a signed
                           ``thinking`` block before the text block
``[[hidden_reasoning:N]]`` N reasoning tokens counted (``completion_tokens``,
                           ``reasoning_tokens``, ``output_tokens``), never sent
In any text of the request (the first one counts)
``[[fault:NAME:k=v]]``     a fault (see ``provider.py``)
``[[bill:bytes]]``         input tokens = raw body bytes for this request;
                           ``[[bill:words]]`` counts words even when the fake
                           bills by bytes; any other value is a 400
``[[id:LABEL]]``           names the request in ``FakeProvider.bills``
=========================  =====================================================

Later ``tokens`` / ``piece`` / ``piece_bytes`` / ``reasoning`` directives override
earlier ones (``piece`` and ``piece_bytes`` are one setting).  A non-numeric N or K
is ignored.  Stop sequences search the answer pieces only, never the reasoning.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

Dialect = Literal["openai", "anthropic"]
Finish = Literal["end", "length", "tool", "stop_sequence"]

DEFAULT_OUTPUT_TOKENS = 10
PER_MESSAGE_OVERHEAD = 3
ARGUMENT_FRAGMENT_CHARS = 8

_DIRECTIVE = re.compile(
    r"\[\[(fault|tokens|tool|piece_bytes|piece|hidden_reasoning|reasoning|bill|id):([^\]]*)\]\]"
)
BILLINGS: tuple[str, ...] = ("words", "bytes")
BROKEN_JSON_KINDS: tuple[str, ...] = ("deep", "surrogate", "truncated")
# orjson refuses documents nested deeper than 1024.
BROKEN_JSON_DEPTH = 1100

OPENAI_FINISH: dict[Finish, str] = {
    "end": "stop",
    "length": "length",
    "tool": "tool_calls",
    "stop_sequence": "stop",
}
ANTHROPIC_STOP: dict[Finish, str] = {
    "end": "end_turn",
    "length": "max_tokens",
    "tool": "tool_use",
    "stop_sequence": "stop_sequence",
}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# --------------------------------------------------------------------------- input


def content_texts(content: Any) -> list[str]:
    """Text of one message content: a string, or the ``text`` parts of a list."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        ]
    return []


def request_texts(body: dict[str, Any]) -> list[str]:
    """Every text of the request: the Anthropic ``system``, all message contents and an
    embeddings request's ``input`` strings."""
    texts = embedding_texts(body) + content_texts(body.get("system"))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            texts.extend(content_texts(message.get("content")))
    return texts


# What the fake bills for each image (OpenAI image_url parts, Anthropic image blocks).
IMAGE_TOKENS = 50


def count_images(body: dict[str, Any]) -> int:
    return sum(
        1
        for message in body.get("messages") or []
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") in ("image_url", "image")
    )


def count_input_tokens(body: dict[str, Any]) -> int:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    words = sum(len(text.split()) for text in request_texts(body))
    return words + PER_MESSAGE_OVERHEAD * len(messages) + IMAGE_TOKENS * count_images(body)


def _parse_params(raw: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in filter(None, (piece.strip() for piece in raw.split(","))):
        key, _, value = item.partition("=")
        params[key.strip()] = coerce(value.strip())
    return params


def coerce(value: Any) -> Any:
    """Directive parameters arrive as strings: turn numbers into numbers."""
    if not isinstance(value, str):
        return value
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def first_directive(body: dict[str, Any], kind: str) -> str | None:
    """The argument of the first ``[[kind:ARG]]`` in any text of the request."""
    for text in request_texts(body):
        for found, arg in _DIRECTIVE.findall(text):
            if found == kind:
                return str(arg)
    return None


def fault_directive(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The first ``[[fault:NAME]]`` / ``[[fault:NAME:k=v,k=v]]`` in any text of the request."""
    arg = first_directive(body, "fault")
    if arg is None:
        return None
    name, _, raw = arg.partition(":")
    return name.strip(), _parse_params(raw)


def billing_directive(body: dict[str, Any]) -> str | None:
    """The first ``[[bill:words]]`` / ``[[bill:bytes]]`` in any text of the request."""
    arg = first_directive(body, "bill")
    return None if arg is None else arg.strip()


def label_directive(body: dict[str, Any]) -> str | None:
    """The first ``[[id:LABEL]]`` in any text of the request: names the request in bills."""
    arg = first_directive(body, "id")
    return None if arg is None else arg.strip()


def _count(arg: str) -> int | None:
    arg = arg.strip()
    return int(arg) if arg.isascii() and arg.isdigit() else None


def _last_user_message(body: dict[str, Any]) -> dict[str, Any] | None:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return message
    return None


def _is_tool_result_turn(body: dict[str, Any]) -> bool:
    """True when the conversation ends with a tool result (the model must answer in text)."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else None
    if not isinstance(last, dict):
        return False
    if last.get("role") == "tool":
        return True
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") == "tool_result" for p in content
    )


# --------------------------------------------------------------------------- plan


@dataclass
class ToolCallPlan:
    id: str
    name: str
    arguments: dict[str, Any]
    fragments: list[str]

    @property
    def arguments_json(self) -> str:
        return "".join(self.fragments)


@dataclass
class AnswerPlan:
    model: str
    input_tokens: int
    output_tokens: int
    pieces: list[str] = field(default_factory=list)
    finish: Finish = "end"
    stop_sequence: str | None = None
    tool: ToolCallPlan | None = None
    reasoning: list[str] = field(default_factory=list)
    hidden_reasoning_tokens: int = 0
    choices: int = 1  # OpenAI's n: every choice is the same answer, billed once each

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)

    @property
    def reasoning_tokens(self) -> int:
        return len(self.reasoning) + self.hidden_reasoning_tokens

    @property
    def content_events(self) -> int:
        """Stream events that carry output: reasoning pieces, then text pieces or tool
        argument fragments."""
        answer = len(self.tool.fragments) if self.tool else len(self.pieces)
        return len(self.reasoning) + answer


@dataclass
class _Wanted:
    """What the directives of the last user message ask the model to produce."""

    tokens: int = DEFAULT_OUTPUT_TOKENS
    tool: str | None = None
    piece: str | None = None
    reasoning: int = 0
    hidden_reasoning: int = 0


def _wanted(body: dict[str, Any]) -> _Wanted:
    wanted = _Wanted()
    last_user = _last_user_message(body)
    for text in content_texts(last_user.get("content")) if last_user else []:
        for kind, arg in _DIRECTIVE.findall(text):
            number = _count(arg)
            if kind == "tokens" and number is not None:
                wanted.tokens = number
            elif kind == "tool":
                wanted.tool = arg.strip()
            elif kind == "piece" and arg:
                wanted.piece = arg
            elif kind == "piece_bytes" and number:
                wanted.piece = "x" * number
            elif kind == "reasoning" and number is not None:
                wanted.reasoning = number
            elif kind == "hidden_reasoning" and number is not None:
                wanted.hidden_reasoning = number
    return wanted


def _sample_value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "tok"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    samples: dict[str, Any] = {
        "integer": 1,
        "number": 1.5,
        "boolean": True,
        "array": [],
        "null": None,
    }
    if kind == "object":
        return {name: _sample_value(sub) for name, sub in (schema.get("properties") or {}).items()}
    return samples.get(str(kind), "tok")


def _tool_schemas(body: dict[str, Any], dialect: Dialect) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        if dialect == "openai":
            function = tool.get("function") or {}
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                schemas[function["name"]] = function.get("parameters") or {}
        elif isinstance(tool.get("name"), str):
            schemas[tool["name"]] = tool.get("input_schema") or {}
    return schemas


def _stop_sequences(body: dict[str, Any], dialect: Dialect) -> list[str]:
    raw = body.get("stop") if dialect == "openai" else body.get("stop_sequences")
    if isinstance(raw, str):
        return [raw] if raw else []
    if isinstance(raw, list):
        return [s for s in raw if isinstance(s, str) and s]
    return []


def _token_cap(body: dict[str, Any], dialect: Dialect) -> int | None:
    keys = ("max_completion_tokens", "max_tokens") if dialect == "openai" else ("max_tokens",)
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return max(value, 0)
    return None


def _fit(wanted: list[int], cap: int | None) -> list[int]:
    """Spend ``cap`` on the wanted counts in order: reasoning first, as real models do."""
    if cap is None:
        return list(wanted)
    fitted: list[int] = []
    for count in wanted:
        fitted.append(min(count, cap))
        cap -= fitted[-1]
    return fitted


def _cut_at_stop(pieces: list[str], stops: list[str]) -> tuple[list[str], int, str] | None:
    """The pieces kept before the first stop sequence, the tokens generated up to and
    including the one that completes it, and the sequence; None when none occurs."""
    if not stops:
        return None
    full = "".join(pieces)
    hits = [(at, stop) for stop in stops if (at := full.find(stop)) >= 0]
    if not hits:
        return None
    at, stop = min(hits)
    end = at + len(stop)
    kept: list[str] = []
    used = offset = 0
    for piece in pieces:
        if offset >= end:
            break
        if offset < at:
            kept.append(piece[: at - offset])
        offset += len(piece)
        used += 1
    return kept, used, stop


def plan_answer(
    body: dict[str, Any], dialect: Dialect, *, billed_bytes: int | None = None
) -> AnswerPlan:
    """Decide what the fake model answers to a (validated) request body.

    ``billed_bytes``: report that many input tokens instead of counting words."""
    plan = AnswerPlan(
        model=str(body.get("model", "")),
        input_tokens=count_input_tokens(body) if billed_bytes is None else billed_bytes,
        output_tokens=0,
    )
    if dialect == "openai" and isinstance(body.get("n"), int) and body["n"] > 1:
        plan.choices = body["n"]
    wanted = _wanted(body)
    cap = _token_cap(body, dialect)
    hidden, reasoning, count = _fit([wanted.hidden_reasoning, wanted.reasoning, wanted.tokens], cap)
    plan.hidden_reasoning_tokens = hidden
    plan.reasoning = [f"think{i} " for i in range(reasoning)]

    schemas = _tool_schemas(body, dialect)
    if wanted.tool and schemas and not _is_tool_result_turn(body):
        arguments = _sample_value({"type": "object", **schemas.get(wanted.tool, {})})
        encoded = _dumps(arguments)
        fragments = [
            encoded[i : i + ARGUMENT_FRAGMENT_CHARS]
            for i in range(0, len(encoded), ARGUMENT_FRAGMENT_CHARS)
        ]
        call_id = new_id("call_" if dialect == "openai" else "toolu_01")
        plan.tool = ToolCallPlan(
            id=call_id, name=wanted.tool, arguments=arguments, fragments=fragments
        )
        plan.finish = "tool"
        plan.output_tokens = plan.reasoning_tokens + len(fragments)
        return plan

    pieces = [wanted.piece] * count if wanted.piece else [f"tok{i} " for i in range(count)]
    asked = wanted.hidden_reasoning + wanted.reasoning + wanted.tokens
    plan.finish = "length" if cap is not None and asked > cap else "end"
    plan.output_tokens = plan.reasoning_tokens + count
    cut = _cut_at_stop(pieces, _stop_sequences(body, dialect))
    if cut is not None:
        pieces, used, stop = cut
        plan.output_tokens = plan.reasoning_tokens + used
        plan.finish, plan.stop_sequence = "stop_sequence", stop
    plan.pieces = pieces
    return plan


# --------------------------------------------------------------------------- OpenAI


def openai_error(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _openai_usage(plan: AnswerPlan) -> dict[str, Any]:
    output = plan.output_tokens * plan.choices
    return {
        "prompt_tokens": plan.input_tokens,
        "completion_tokens": output,
        "total_tokens": plan.input_tokens + output,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": plan.reasoning_tokens * plan.choices,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def openai_completion(plan: AnswerPlan, completion_id: str, created: int) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": plan.text,
        "refusal": None,
        "annotations": [],
    }
    if plan.reasoning:
        message["reasoning_content"] = plan.reasoning_text
    if plan.tool:
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": plan.tool.id,
                "type": "function",
                "function": {"name": plan.tool.name, "arguments": plan.tool.arguments_json},
            }
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": plan.model,
        "choices": [
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": OPENAI_FINISH[plan.finish],
            }
            for index in range(plan.choices)
        ],
        "usage": _openai_usage(plan),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


Phase = Literal["pre", "content", "between", "post"]


@dataclass(frozen=True)
class StreamEvent:
    """One SSE event; ``phase`` tells stream faults where content starts and ends.

    ``content`` events each carry one output token (a reasoning piece, a text piece or a
    tool argument fragment); ``between`` events separate the reasoning from the answer
    and, like ``pre``, are neither counted nor a place where a fault cuts the stream."""

    data: bytes
    phase: Phase


def openai_stream(
    plan: AnswerPlan, completion_id: str, created: int, include_usage: bool
) -> list[StreamEvent]:
    """``data: {chunk}`` events (each choice's in turn, as OpenAI interleaves them for
    ``n`` > 1), then the optional usage chunk, then ``data: [DONE]``."""
    per_choice = [
        _openai_choice_events(plan, completion_id, created, include_usage, index)
        for index in range(plan.choices)
    ]
    events = [event for position in zip(*per_choice, strict=True) for event in position]
    if include_usage:
        final = {**_openai_chunk(plan, completion_id, created, []), "usage": _openai_usage(plan)}
        events.append(StreamEvent(f"data: {_dumps(final)}\n\n".encode(), "post"))
    events.append(StreamEvent(b"data: [DONE]\n\n", "post"))
    return events


def _openai_chunk(
    plan: AnswerPlan, completion_id: str, created: int, choices: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": plan.model,
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
        "choices": choices,
    }


def _openai_choice_events(
    plan: AnswerPlan, completion_id: str, created: int, include_usage: bool, index: int
) -> list[StreamEvent]:
    """One choice's chunks, from the role to its finish reason."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        body = _openai_chunk(plan, completion_id, created, [choice])
        if include_usage:
            body["usage"] = None
        return body

    def sse(obj: dict[str, Any], phase: Phase) -> StreamEvent:
        return StreamEvent(f"data: {_dumps(obj)}\n\n".encode(), phase)

    events = [
        sse(
            chunk({"role": "assistant", "content": "" if not plan.tool else None, "refusal": None}),
            "pre",
        )
    ]
    events.extend(sse(chunk({"reasoning_content": piece}), "content") for piece in plan.reasoning)
    if plan.tool:
        head = {
            "index": 0,
            "id": plan.tool.id,
            "type": "function",
            "function": {"name": plan.tool.name, "arguments": ""},
        }
        events.append(sse(chunk({"tool_calls": [head]}), "pre"))
        for fragment in plan.tool.fragments:
            events.append(
                sse(
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}),
                    "content",
                )
            )
    else:
        events.extend(sse(chunk({"content": piece}), "content") for piece in plan.pieces)
    events.append(sse(chunk({}, OPENAI_FINISH[plan.finish]), "post"))
    return events


def openai_stream_error(message: str) -> bytes:
    return f"data: {_dumps(openai_error(message, 'server_error'))}\n\n".encode()


def openai_malformed(model: str) -> dict[str, Any]:
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
    }


# --------------------------------------------------------------------------- embeddings

DEFAULT_EMBEDDING_DIMENSIONS = 8


def embedding_texts(body: dict[str, Any]) -> list[str]:
    """The strings of an embeddings request's ``input`` (one string or a list)."""
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def embedding_problem(body: Any) -> str | None:
    """Why OpenAI's /embeddings would refuse ``body`` (as far as the fake checks), if it would."""
    if not isinstance(body, dict):
        return "The request body is not valid JSON."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        return "'input' is a required property"
    if not all(isinstance(text, str) and text for text in texts):
        return "'$.input' is invalid. Please check the API reference."
    dimensions = body.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        return "Invalid value for 'dimensions'"
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return "Invalid value for 'encoding_format'"
    return None


def count_embedding_tokens(body: dict[str, Any], *, billing: str) -> int:
    """Words in every input (as the chat handler counts input words), or with
    ``billing="bytes"`` their UTF-8 bytes (what no real tokenizer exceeds)."""
    texts = embedding_texts(body)
    if billing == "bytes":
        return sum(len(text.encode()) for text in texts)
    return sum(len(text.split()) for text in texts)


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic vector for ``text``: multiples of 1/128 in [-1, 1), exact in float32."""
    digest = hashlib.sha256(text.encode()).digest()
    return [((digest[j % len(digest)] + j) % 256) / 128 - 1 for j in range(dimensions)]


def encode_vector(vector: list[float]) -> str:
    """OpenAI's ``encoding_format="base64"``: little-endian float32s, base64."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def openai_embeddings(body: dict[str, Any], prompt_tokens: int | None) -> dict[str, Any]:
    """OpenAI's embeddings list for ``body``; no ``usage`` when ``prompt_tokens`` is None."""
    dimensions = body.get("dimensions") or DEFAULT_EMBEDDING_DIMENSIONS
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(embedding_texts(body)):
        vector = embedding_vector(text, dimensions)
        data.append(
            {
                "object": "embedding",
                "index": index,
                "embedding": encode_vector(vector) if as_base64 else vector,
            }
        )
    payload: dict[str, Any] = {"object": "list", "data": data, "model": body.get("model")}
    if prompt_tokens is not None:
        payload["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return payload


# --------------------------------------------------------------------------- Anthropic


def anthropic_error(type_: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": type_, "message": message},
        "request_id": new_id("req_011"),
    }


def thinking_signature(message_id: str) -> str:
    """The opaque signature of a thinking block (real ones are base64 too)."""
    return base64.b64encode(f"fake-thinking:{message_id}".encode()).decode()


def _anthropic_usage(plan: AnswerPlan) -> dict[str, Any]:
    return {
        "input_tokens": plan.input_tokens,
        "output_tokens": plan.output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _anthropic_envelope(
    plan: AnswerPlan, message_id: str, content: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": content,
        "stop_reason": ANTHROPIC_STOP[plan.finish],
        "stop_sequence": plan.stop_sequence,
        "usage": _anthropic_usage(plan),
    }


def anthropic_message(plan: AnswerPlan, message_id: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if plan.reasoning:
        content.append(
            {
                "type": "thinking",
                "thinking": plan.reasoning_text,
                "signature": thinking_signature(message_id),
            }
        )
    if plan.tool:
        content.append(
            {
                "type": "tool_use",
                "id": plan.tool.id,
                "name": plan.tool.name,
                "input": plan.tool.arguments,
            }
        )
    else:
        content.append({"type": "text", "text": plan.text})
    return _anthropic_envelope(plan, message_id, content)


def _anthropic_event(name: str, data: dict[str, Any], phase: Phase) -> StreamEvent:
    return StreamEvent(f"event: {name}\ndata: {_dumps(data)}\n\n".encode(), phase)


def _block_events(
    index: int, block: dict[str, Any], deltas: list[dict[str, Any]], first: bool
) -> list[StreamEvent]:
    """content_block_start (+ ping for the first block), a delta per output token,
    and, after a thinking block, its signature and content_block_stop."""
    opening: Phase = "pre" if first else "between"
    start = {"type": "content_block_start", "index": index, "content_block": block}
    events = [_anthropic_event("content_block_start", start, opening)]
    if first:
        events.append(_anthropic_event("ping", {"type": "ping"}, "pre"))
    events.extend(
        _anthropic_event(
            "content_block_delta",
            {"type": "content_block_delta", "index": index, "delta": delta},
            "content",
        )
        for delta in deltas
    )
    return events


def anthropic_stream(plan: AnswerPlan, message_id: str) -> list[StreamEvent]:
    """message_start, [thinking block: content_block_start, ping, thinking_delta*,
    signature_delta, content_block_stop], content_block_start, (ping,) content_block_delta*,
    content_block_stop, message_delta (cumulative usage.output_tokens), message_stop."""
    start = _anthropic_envelope(plan, message_id, [])
    start.update(stop_reason=None, stop_sequence=None)
    start["usage"] = {**start["usage"], "output_tokens": 1}
    events = [_anthropic_event("message_start", {"type": "message_start", "message": start}, "pre")]
    index = 0
    if plan.reasoning:
        thinking = [{"type": "thinking_delta", "thinking": piece} for piece in plan.reasoning]
        events += _block_events(0, {"type": "thinking", "thinking": ""}, thinking, first=True)
        signature = {"type": "signature_delta", "signature": thinking_signature(message_id)}
        delta = {"type": "content_block_delta", "index": 0, "delta": signature}
        events.append(_anthropic_event("content_block_delta", delta, "between"))
        stop = {"type": "content_block_stop", "index": 0}
        events.append(_anthropic_event("content_block_stop", stop, "between"))
        index = 1
    if plan.tool:
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": plan.tool.id,
            "name": plan.tool.name,
            "input": {},
        }
        deltas = [{"type": "input_json_delta", "partial_json": f} for f in plan.tool.fragments]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in plan.pieces]
    events += _block_events(index, block, deltas, first=index == 0)
    stop = {"type": "content_block_stop", "index": index}
    events.append(_anthropic_event("content_block_stop", stop, "post"))
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": ANTHROPIC_STOP[plan.finish], "stop_sequence": plan.stop_sequence},
        "usage": {"output_tokens": plan.output_tokens},
    }
    events.append(_anthropic_event("message_delta", message_delta, "post"))
    events.append(_anthropic_event("message_stop", {"type": "message_stop"}, "post"))
    return events


def anthropic_stream_error(type_: str, message: str) -> bytes:
    return _anthropic_event(
        "error", {"type": "error", "error": {"type": type_, "message": message}}, "post"
    ).data


def anthropic_malformed(model: str) -> dict[str, Any]:
    return {"id": new_id("msg_01"), "type": "message", "role": "assistant", "model": model}


# --------------------------------------------------------------------------- broken 200s


def _broken_head(
    plan: AnswerPlan, dialect: Dialect, input_tokens: int, output_tokens: int
) -> dict[str, Any]:
    if dialect == "openai":
        usage = {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }
        return {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": plan.model,
            "usage": usage,
        }
    return {
        "id": new_id("msg_01"),
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def _broken_tail(plan: AnswerPlan, dialect: Dialect, text: str) -> tuple[str, Any]:
    if dialect == "openai":
        message = {"role": "assistant", "content": text}
        finish = OPENAI_FINISH[plan.finish]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        return "choices", [choice]
    return "content", [{"type": "text", "text": text}]


def broken_json(
    plan: AnswerPlan, dialect: Dialect, kind: str, input_tokens: int, output_tokens: int
) -> bytes:
    """A 200 body whose provider-shaped ``usage`` comes near the start, then breaks:
    ``deep`` nests a value ``BROKEN_JSON_DEPTH`` arrays deep, ``surrogate`` puts a lone
    ``\\ud800`` escape in the text, ``truncated`` cuts the body halfway through what
    follows the usage."""
    head = _dumps(_broken_head(plan, dialect, input_tokens, output_tokens))
    if kind == "surrogate":
        # ensure_ascii writes the lone surrogate as the escape \ud800, which strict parsers
        # (orjson) refuse and Python's json accepts.
        key, value = _broken_tail(plan, dialect, plan.text + "\ud800")
        tail = json.dumps(value, separators=(",", ":"))
    else:
        key, value = _broken_tail(plan, dialect, plan.text)
        tail = _dumps(value)
    opening = f'{head[:-1]},"{key}":'
    if kind == "deep":
        tail = "[" * BROKEN_JSON_DEPTH + "]" * BROKEN_JSON_DEPTH
    whole = f"{opening}{tail}}}".encode()
    if kind == "truncated":
        start = len(opening.encode())
        return whole[: start + (len(whole) - start) // 2]
    return whole


CLOUDFLARE_502_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)
