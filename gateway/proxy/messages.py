"""Anthropic's Messages API (``POST /v1/messages``) as a translation of the chat pipeline.

A Messages body becomes the equivalent OpenAI chat-completions body
(``to_chat_body``), which the chat pipeline parses, validates, routes, bounds,
admits, forwards and settles exactly as any chat request; its answer (the
OpenAI ``chat.completion`` with the settled usage) becomes an Anthropic
``message`` (``to_message``), its stream Anthropic's server-sent events
(``MessageEvents``), and its errors Anthropic's error object
(``error_payload``). The structure of the body is checked here (400 naming
the Anthropic field); the values (numbers, texts, URLs, schemas) by
``gateway.proxy.validation``, in one place for both APIs.

What has no equivalent: ``metadata`` (the provider gets the device's opaque
id), ``top_k``, ``thinking``, ``service_tier``, ``cache_control`` and a
``tool_result``'s ``is_error`` are dropped; server tools (a tool with a
``type`` other than ``custom``) and other block types are a 400. A stop
sequence that ended the answer is reported as ``end_turn`` (the chat
pipeline does not say which stop ended it), ``stop_sequence`` stays null.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.core.errors import GatewayError, InvalidRequest
from gateway.core.jsonbody import parse_json_body

MAX_STOP_SEQUENCES = 4  # the chat pipeline's limit (gateway.proxy.validation)

# Anthropic's error types by HTTP status (its "Errors" page); the status stays the
# gateway's. 503 is the provider being overloaded (overloaded_error) when the
# gateway says so (upstream_overloaded), else api_error (a paused service, a
# provider without a key).
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
}
OVERLOADED_CODES = frozenset({"upstream_overloaded"})

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


# --- errors ------------------------------------------------------------------------


def error_type(error: GatewayError) -> str:
    if error.code in OVERLOADED_CODES:
        return "overloaded_error"
    if error.status in ERROR_TYPES:
        return ERROR_TYPES[error.status]
    return "invalid_request_error" if error.status < 500 else "api_error"


def error_payload(error: GatewayError) -> dict[str, Any]:
    """Anthropic's error object; the gateway's ``code`` (and ``param``...) ride inside."""
    detail: dict[str, Any] = {"type": error_type(error), "message": error.detail}
    detail["code"] = error.code
    detail.update({key: value for key, value in error.extra.items() if value is not None})
    return {"type": "error", "error": detail}


# --- the request -------------------------------------------------------------------


def _invalid(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def to_chat_body(body: bytes) -> bytes:
    """The OpenAI chat-completions body equivalent to a Messages body (400 when its
    structure is not Anthropic's). Values are left to the chat validation."""
    data = parse_json_body(body)
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object")
    if data.get("max_tokens") is None:
        raise _invalid("'max_tokens' is required", "max_tokens")
    chat: dict[str, Any] = {
        "model": data.get("model"),
        "max_tokens": data["max_tokens"],
        "messages": [*_system(data.get("system")), *_messages(data.get("messages"))],
    }
    for name in ("temperature", "top_p", "stream"):
        if data.get(name) is not None:
            chat[name] = data[name]
    stops = _stop_sequences(data.get("stop_sequences"))
    if stops:
        chat["stop"] = stops
    if data.get("tools") is not None:
        chat["tools"] = _tools(data["tools"])
    if data.get("tool_choice") is not None:
        chat.update(_tool_choice(data["tool_choice"]))
    return orjson.dumps(chat)


def _system(value: Any) -> list[dict[str, Any]]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [{"role": "system", "content": value}]
    if not isinstance(value, list):
        raise _invalid("'system' must be a string or an array of text blocks", "system")
    parts = [_text_part(block, "system") for block in value]
    return [{"role": "system", "content": parts}] if parts else []


def _text_part(block: Any, where: str) -> dict[str, Any]:
    if not isinstance(block, dict) or block.get("type") != "text":
        raise _invalid(f"'{where}': only text blocks are supported here", where)
    return {"type": "text", "text": block.get("text")}


def _stop_sequences(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _invalid("'stop_sequences' must be an array of strings", "stop_sequences")
    if len(value) > MAX_STOP_SEQUENCES:
        raise _invalid(
            f"'stop_sequences' takes at most {MAX_STOP_SEQUENCES} sequences", "stop_sequences"
        )
    return value


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _invalid("'messages' must be a non-empty array", "messages")
    translated: list[dict[str, Any]] = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _invalid(f"'{where}.role' must be user or assistant", "messages")
        content = message.get("content")
        if isinstance(content, str):
            translated.append({"role": message["role"], "content": content})
        elif not isinstance(content, list):
            raise _invalid(f"'{where}.content' must be a string or an array of blocks", "messages")
        elif message["role"] == "user":
            translated += _user(content, where)
        else:
            translated.append(_assistant(content, where))
    return translated


def _blocks(content: list[Any], where: str) -> list[tuple[str, dict[str, Any]]]:
    blocks = []
    for index, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(kind, str):
            raise _invalid(f"'{where}.content[{index}]' must be a block with a type", "messages")
        blocks.append((f"{where}.content[{index}]", block))
    return blocks


def _user(content: list[Any], where: str) -> list[dict[str, Any]]:
    """Tool results become ``tool`` messages (first: they answer the previous turn's
    calls), the rest one user message."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for place, block in _blocks(content, where):
        kind = block["type"]
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text")})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, place)}})
        elif kind == "tool_result":
            results.append(_tool_result(block, place))
        else:
            raise _invalid(
                f"'{place}': a user message takes text, image and tool_result blocks", "messages"
            )
    if parts or not results:
        results.append({"role": "user", "content": parts})
    return results


def _image_url(block: Mapping[str, Any], place: str) -> Any:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict):
        media_type, data = source.get("media_type"), source.get("data")
        if isinstance(media_type, str) and isinstance(data, str):
            return f"data:{media_type};base64,{data}"
    elif kind == "url" and isinstance(source, dict):
        return source.get("url")
    raise _invalid(
        f"'{place}.source' must be a base64 source (media_type, data) or a url source",
        "messages",
    )


def _tool_result(block: Mapping[str, Any], place: str) -> dict[str, Any]:
    content = block.get("content")
    if content is None:
        content = ""
    elif isinstance(content, list):
        content = [_text_part(part, f"{place}.content") for part in content]
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": content}


def _assistant(content: list[Any], where: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for place, block in _blocks(content, where):
        kind = block["type"]
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text")})
        elif kind == "tool_use":
            calls.append(_tool_call(block, place))
        elif kind not in ("thinking", "redacted_thinking"):  # earlier turns' reasoning: dropped
            raise _invalid(
                f"'{place}': an assistant message takes text and tool_use blocks", "messages"
            )
    message: dict[str, Any] = {"role": "assistant", "content": parts or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_call(block: Mapping[str, Any], place: str) -> dict[str, Any]:
    arguments = block.get("input", {})
    if not isinstance(arguments, dict):
        raise _invalid(f"'{place}.input' must be an object", "messages")
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": orjson.dumps(arguments).decode()},
    }


def _tools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _invalid("'tools' must be an array", "tools")
    tools = []
    for index, tool in enumerate(value):
        if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
            raise _invalid(
                f"'tools[{index}]': only custom tools (name, description, input_schema) "
                "are supported",
                "tools",
            )
        function: dict[str, Any] = {"name": tool.get("name")}
        if tool.get("description") is not None:
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema")
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(value: Any) -> dict[str, Any]:
    kind = value.get("type") if isinstance(value, dict) else None
    choice: Any
    if kind in TOOL_CHOICES:
        choice = TOOL_CHOICES[kind]
    elif kind == "tool" and isinstance(value, dict):
        choice = {"type": "function", "function": {"name": value.get("name")}}
    else:
        raise _invalid("'tool_choice.type' must be one of auto, any, tool, none", "tool_choice")
    translated: dict[str, Any] = {"tool_choice": choice}
    if isinstance(value, dict) and value.get("disable_parallel_tool_use") is True:
        translated["parallel_tool_calls"] = False
    return translated


# --- the answer --------------------------------------------------------------------


def message_id(chat_id: Any) -> str:
    text = str(chat_id or "")
    return text if text.startswith("msg_") else f"msg_{text}"


def stop_reason(finish_reason: Any) -> str:
    return STOP_REASONS.get(str(finish_reason), "end_turn")


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic's ``input`` is (``{}`` when the
    model wrote something that is not a JSON object)."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def to_message(completion: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic's ``message`` for an OpenAI ``chat.completion`` (its usage settled)."""
    choice = (completion.get("choices") or [{}])[0]
    answer = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if answer.get("content"):
        content.append({"type": "text", "text": answer["content"]})
    for call in answer.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": tool_input(function.get("arguments")),
            }
        )
    usage = completion.get("usage") or {}
    return {
        "id": message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
        },
    }
