"""Strict parsing of a chat-completions body into a ``ChatRequest``.

Everything a client can send is either understood and normalised here or
refused with 400 ``invalid_request``; nothing raises anything else (orjson
refuses NaN/Infinity, numbers that overflow a double, invalid UTF-8, lone
surrogates and nesting deeper than 1024). Only known parameters survive, so
only they can be forwarded upstream. ``parse_json_body`` is every JSON
request body's parser, the chat's and the Django views' alike.

SPEC's order of checks: ``parse_chat_request`` (400 invalid_request) before
``routes.resolve`` (404 model_not_found, 403 model_not_allowed) before
``check_tier_cap`` (400 max_tokens_exceeded); ``prepare_chat`` runs the three
in that order. Parsing does not depend on the route, so a malformed body is
refused before the model is looked up.

Content is text (a string or ``text`` parts) and, in user messages, images
(``image_url`` parts: a ``data:image/...;base64,`` URL or an ``https://``
one, which the provider fetches, never the gateway). An image's bytes are
not text, so the input bound counts each image at its route's maximum
instead (``ChatRequest.image_bytes``, ``gateway.proxy.upstream.outbound``);
a route that does not accept images refuses them. Audio and files are
refused. What a provider lacks is refused by its adapter
(``check_request``), still before admission.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from gateway.core.errors import InvalidRequest
from gateway.core.jsonbody import parse_json_body
from gateway.proxy.routes import EMBEDDING, Route, resolve
from usage.types import Tier

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
REASONING_EFFORTS = ("minimal", "low", "medium", "high")
MAX_CHOICES = 8  # n: each choice is priced at the whole output cap
MAX_TOP_LOGPROBS = 20
LOGIT_BIAS_LIMIT = 100
TOOL_CHOICES = ("none", "auto", "required")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
MAX_STOP_SEQUENCES = 4
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DATA_URL = re.compile(r"data:(image/[A-Za-z0-9.+-]+);base64,([A-Za-z0-9+/]*={0,2})", re.ASCII)
IMAGE_DETAILS = ("auto", "low", "high")
_INT64 = 2**63
# OpenAI's documented limit on the inputs of one embeddings request.
MAX_EMBEDDING_INPUTS = 2048
ENCODING_FORMATS = ("float", "base64")


class MaxTokensExceeded(InvalidRequest):
    code = "max_tokens_exceeded"
    message = "max_tokens exceeds the limit of your tier"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated OpenAI chat-completions request (only known fields)."""

    model: str
    messages: list[dict[str, Any]]  # OpenAI shape; roles system/user/assistant/tool
    max_tokens: int | None = None  # max_tokens or max_completion_tokens, as the client sent
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: the client wants the usage chunk
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    n: int = 1  # choices; the output bound is n times the output cap
    logit_bias: dict[str, float] | None = None  # token id -> bias in [-100, 100]
    logprobs: bool | None = None
    top_logprobs: int | None = None
    reasoning_effort: str | None = None  # one of REASONING_EFFORTS (reasoning routes only)
    images: int = 0  # image parts in the messages
    image_bytes: int = 0  # their data's bytes in any upstream body: not text (see _image_bytes)


@dataclass(frozen=True, slots=True)
class PreparedChat:
    """A request that passed every check before admission, with its route and token cap."""

    request: ChatRequest
    route: Route
    max_tokens: int  # what to send upstream and reserve for: the client's, or the tier cap


async def prepare_chat(body: bytes, tier: Tier, *, epoch: int | None = None) -> PreparedChat:
    """Parse, resolve the model for ``tier`` and apply its cap, in SPEC's order.

    No database query and no thread hop once the route table is loaded for ``epoch``.
    """
    request = parse_chat_request(body)
    route = await resolve(request.model, tier, epoch=epoch)
    if request.images and not route.accepts_images:
        raise _invalid(f"The model '{route.public_name}' does not accept images", "messages")
    return PreparedChat(request, route, check_tier_cap(request, tier, route))


def _invalid(message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _object_with_model(body: bytes) -> tuple[dict[str, Any], str]:
    """The body as a JSON object and its ``model`` (every /v1 body starts so)."""
    data = parse_json_body(body)
    if not isinstance(data, dict):
        raise _invalid("The request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("'model' must be a non-empty string", "model")
    return data, model


def parse_chat_request(body: bytes) -> ChatRequest:
    """Parse and validate the raw body; raises InvalidRequest (400) on anything wrong."""
    data, model = _object_with_model(body)
    stream = _optional_bool(data, "stream") or False
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid("'stream_options' must be an object", "stream_options")
    include_usage = bool(options and _optional_bool(options, "include_usage", "stream_options"))
    logprobs = _optional_bool(data, "logprobs")
    # Checked as OpenAI checks it, then dropped: providers get the device's
    # opaque id instead (devices.tokens.end_user_id), never the client's.
    _optional_string(data, "user")
    messages = _messages(data.get("messages"))
    images = [
        part["image_url"]["url"]
        for message in messages
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    ]
    return ChatRequest(
        model=model,
        messages=messages,
        images=len(images),
        image_bytes=sum(map(_image_bytes, images)),
        max_tokens=_max_tokens(data),
        stream=stream,
        include_usage=stream and include_usage,
        temperature=_optional_number(data, "temperature", 0, 2),
        top_p=_optional_number(data, "top_p", 0, 1),
        stop=_stop(data.get("stop")),
        tools=_tools(data.get("tools")),
        tool_choice=_tool_choice(data.get("tool_choice"), has_tools=bool(data.get("tools"))),
        parallel_tool_calls=_optional_bool(data, "parallel_tool_calls"),
        presence_penalty=_optional_number(data, "presence_penalty", -2, 2),
        frequency_penalty=_optional_number(data, "frequency_penalty", -2, 2),
        seed=_seed(data.get("seed")),
        response_format=_response_format(data.get("response_format")),
        n=_choices(data.get("n")),
        logit_bias=_logit_bias(data.get("logit_bias")),
        logprobs=logprobs,
        top_logprobs=_top_logprobs(data.get("top_logprobs"), logprobs=bool(logprobs)),
        reasoning_effort=_reasoning_effort(data.get("reasoning_effort")),
    )


# --- scalars -----------------------------------------------------------------


def _optional_bool(data: dict[str, Any], name: str, parent: str | None = None) -> bool | None:
    value = data.get(name)
    if value is None or isinstance(value, bool):
        return value
    label = f"{parent}.{name}" if parent else name
    raise _invalid(f"'{label}' must be a boolean", label)


def _optional_number(data: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    # bool is a subclass of int: True is not a temperature.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(f"'{name}' must be a number", name)
    if not low <= value <= high:
        raise _invalid(f"'{name}' must be between {low} and {high}", name)
    return float(value)


def _optional_string(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _invalid(f"'{name}' must be a string", name)


def _positive_int(value: Any, name: str) -> int:
    # type() rather than isinstance(): booleans are not integers, and orjson
    # turns integers beyond 64 bits into floats, which are refused too.
    if type(value) is not int or value < 1:
        raise _invalid(f"'{name}' must be a positive integer", name)
    return value


def _max_tokens(data: dict[str, Any]) -> int | None:
    values = {
        name: _positive_int(data[name], name)
        for name in ("max_tokens", "max_completion_tokens")
        if data.get(name) is not None
    }
    if len(set(values.values())) > 1:
        raise _invalid(
            "'max_tokens' and 'max_completion_tokens' must be equal when both are given",
            "max_tokens",
        )
    return next(iter(values.values()), None)


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not -_INT64 <= value < _INT64:
        raise _invalid("'seed' must be a 64-bit integer", "seed")
    return value


def _choices(value: Any) -> int:
    if value is None:
        return 1
    if type(value) is not int or not 1 <= value <= MAX_CHOICES:
        raise _invalid(f"'n' must be an integer from 1 to {MAX_CHOICES}", "n")
    return value


def _logit_bias(value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid("'logit_bias' must be an object of token ids to biases", "logit_bias")
    biases: dict[str, float] = {}
    for token, bias in value.items():
        if not token.isdigit() or not token.isascii():
            raise _invalid("'logit_bias' keys must be token ids (digits)", "logit_bias")
        if (
            isinstance(bias, bool)
            or not isinstance(bias, int | float)
            or not -LOGIT_BIAS_LIMIT <= bias <= LOGIT_BIAS_LIMIT
        ):
            raise _invalid(
                f"'logit_bias' values must be numbers from -{LOGIT_BIAS_LIMIT} to "
                f"{LOGIT_BIAS_LIMIT}",
                "logit_bias",
            )
        biases[token] = bias
    return biases or None


def _top_logprobs(value: Any, *, logprobs: bool) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_TOP_LOGPROBS:
        raise _invalid(
            f"'top_logprobs' must be an integer from 0 to {MAX_TOP_LOGPROBS}", "top_logprobs"
        )
    if not logprobs:
        raise _invalid("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    return value


def _reasoning_effort(value: Any) -> str | None:
    if value is None:
        return None
    if value not in REASONING_EFFORTS:
        raise _invalid(
            f"'reasoning_effort' must be one of {', '.join(REASONING_EFFORTS)}", "reasoning_effort"
        )
    return str(value)


def _stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops):
        raise _invalid("'stop' must be a string or a list of strings", "stop")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise _invalid(f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences", "stop")
    stops = [stop for stop in stops if stop]
    return stops or None


def _response_format(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in RESPONSE_FORMATS:
        raise _invalid(
            "'response_format.type' must be one of text, json_object, json_schema",
            "response_format",
        )
    if value["type"] == "json_schema":
        schema = value.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            raise _invalid("'response_format.json_schema' needs a name", "response_format")
        return {"type": "json_schema", "json_schema": schema}
    return {"type": value["type"]}


# --- messages ----------------------------------------------------------------


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _invalid("'messages' must be a non-empty array", "messages")
    return [_message(message, index) for index, message in enumerate(value)]


def _message(message: Any, index: int) -> dict[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _invalid(f"'{where}' must be an object", "messages")
    role = message.get("role")
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise _invalid(f"'{where}.tool_call_id' must be a non-empty string", "messages")
        return {
            "role": "tool",
            "tool_call_id": call_id,
            "content": _content(message.get("content"), where, images=False),
        }
    if not isinstance(role, str) or role not in ROLES:
        raise _invalid(
            f"'{where}.role' must be one of system, developer, user, assistant, tool", "messages"
        )
    normalised: dict[str, Any] = {"role": ROLES[role]}
    name = message.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise _invalid(f"'{where}.name' must be a string", "messages")
        normalised["name"] = name
    if role == "assistant":
        tool_calls = message.get("tool_calls")
        content = message.get("content")
        if content is not None or not tool_calls:
            normalised["content"] = _content(content, where, images=False)
        else:
            normalised["content"] = None
        if tool_calls:
            normalised["tool_calls"] = _tool_calls(tool_calls, where)
        return normalised
    normalised["content"] = _content(message.get("content"), where, images=role == "user")
    return normalised


def _content(content: Any, where: str, *, images: bool) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid(f"'{where}.content' must be a string or an array of parts", "messages")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image_url" and images:
            parts.append(_image_part(part, where))
            continue
        if kind != "text":
            allowed = "text and image_url parts" if images else "text parts"
            raise _invalid(f"'{where}.content': only {allowed} are supported", "messages")
        text = part.get("text")
        if not isinstance(text, str):
            raise _invalid(f"'{where}.content': a text part needs a string 'text'", "messages")
        parts.append({"type": "text", "text": text})
    return parts


def _image_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str) or not (
        url.startswith("https://") or _DATA_URL.fullmatch(url) is not None
    ):
        raise _invalid(
            f"'{where}.content': an image_url needs a 'url' that is https:// or "
            "data:image/<type>;base64,<data>",
            "messages",
        )
    assert isinstance(image, dict)
    detail = image.get("detail")
    if detail is not None and detail not in IMAGE_DETAILS:
        raise _invalid(
            f"'{where}.content': image_url.detail must be one of {', '.join(IMAGE_DETAILS)}",
            "messages",
        )
    cleaned: dict[str, Any] = {"url": url}
    if detail is not None:
        cleaned["detail"] = detail
    return {"type": "image_url", "image_url": cleaned}


def _image_bytes(url: str) -> int:
    """What of the image's URL every provider's body carries as it is: a data URL's
    base64 payload (Anthropic gets it without the prefix), or the whole https URL."""
    data = image_media_type(url)
    return len(url) if data is None else len(data[1])


def image_media_type(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a data URL that validation accepted; None for https."""
    match = _DATA_URL.fullmatch(url)
    return None if match is None else (match.group(1), match.group(2))


def _tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _invalid(f"'{where}.tool_calls' must be an array", "messages")
    calls = []
    for call in value:
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(function, dict)
            or not isinstance(call.get("id"), str)
            or call.get("type", "function") != "function"
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments"), str)
        ):
            raise _invalid(
                f"'{where}.tool_calls' entries need id, type 'function', "
                "function.name and function.arguments (a string)",
                "messages",
            )
        calls.append(
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": function["name"], "arguments": function["arguments"]},
            }
        )
    return calls


# --- tools -------------------------------------------------------------------


def _tools(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _invalid("'tools' must be an array", "tools")
    tools = []
    for tool in value:
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(function, dict)
            or tool.get("type") != "function"
            or not isinstance(function.get("name"), str)
            or not _TOOL_NAME.match(function["name"])
        ):
            raise _invalid(
                "'tools' entries need type 'function' and a function.name of 1-64 "
                "letters, digits, '_' or '-'",
                "tools",
            )
        cleaned: dict[str, Any] = {"name": function["name"]}
        for key, kind in (("description", str), ("parameters", dict), ("strict", bool)):
            if function.get(key) is not None:
                if not isinstance(function[key], kind):
                    raise _invalid(f"'tools[].function.{key}' has the wrong type", "tools")
                cleaned[key] = function[key]
        tools.append({"type": "function", "function": cleaned})
    return tools or None


def _tool_choice(value: Any, *, has_tools: bool) -> str | dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str) and value in TOOL_CHOICES:
        choice: str | dict[str, Any] = value
    elif (
        isinstance(value, dict)
        and value.get("type") == "function"
        and isinstance(value.get("function"), dict)
        and isinstance(value["function"].get("name"), str)
    ):
        choice = {"type": "function", "function": {"name": value["function"]["name"]}}
    else:
        raise _invalid(
            "'tool_choice' must be none, auto, required or "
            '{"type": "function", "function": {"name": ...}}',
            "tool_choice",
        )
    if choice != "none" and choice != "auto" and not has_tools:
        raise _invalid("'tool_choice' needs 'tools'", "tool_choice")
    return choice


# --- tier cap and estimates ----------------------------------------------------


def check_tier_cap(request: ChatRequest, tier: Tier, route: object = None) -> int:
    """The completion-token cap to send upstream; 400 max_tokens_exceeded above the tier's.

    ``route`` is accepted for per-route caps later; today the cap is per tier.
    """
    cap = int(settings.MAX_TOKENS[tier])
    if request.max_tokens is None:
        return cap
    if request.max_tokens > cap:
        raise MaxTokensExceeded(
            f"max_tokens {request.max_tokens} exceeds the {tier} tier's limit of {cap}",
            param="max_tokens",
            limit=cap,
        )
    return request.max_tokens


def effective_max_tokens(request: ChatRequest, tier: Tier) -> int:
    """The request's ``max_tokens``, or the tier cap when it sent none (no check)."""
    return request.max_tokens if request.max_tokens is not None else settings.MAX_TOKENS[tier]


# --- embeddings --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    """A validated OpenAI embeddings request (only known fields).

    ``input`` is kept as the client sent it (one string or a list of strings),
    so the provider answers in the same shape; ``texts`` is it as a list.
    Token-id arrays are refused: their tokens cannot be bounded by bytes.
    """

    model: str
    input: str | list[str]
    dimensions: int | None = None
    encoding_format: str | None = None

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


@dataclass(frozen=True, slots=True)
class PreparedEmbeddings:
    request: EmbeddingsRequest
    route: Route


async def prepare_embeddings(
    body: bytes, tier: Tier, *, epoch: int | None = None
) -> PreparedEmbeddings:
    """Parse, then resolve the model for ``tier`` among the embedding routes (SPEC's order)."""
    request = parse_embeddings_request(body)
    return PreparedEmbeddings(
        request, await resolve(request.model, tier, epoch=epoch, kind=EMBEDDING)
    )


def parse_embeddings_request(body: bytes) -> EmbeddingsRequest:
    """Parse and validate the raw body; raises InvalidRequest (400) on anything wrong."""
    data, model = _object_with_model(body)
    encoding_format = data.get("encoding_format")
    if encoding_format is not None and encoding_format not in ENCODING_FORMATS:
        raise _invalid("'encoding_format' must be float or base64", "encoding_format")
    dimensions = data.get("dimensions")
    # As for chat: checked, then dropped (the provider gets the device's opaque id).
    _optional_string(data, "user")
    return EmbeddingsRequest(
        model=model,
        input=_embedding_input(data.get("input")),
        dimensions=None if dimensions is None else _positive_int(dimensions, "dimensions"),
        encoding_format=encoding_format,
    )


def _embedding_input(value: Any) -> str | list[str]:
    if isinstance(value, str):
        if not value:
            raise _invalid("'input' must not be empty", "input")
        return value
    if not isinstance(value, list) or not value:
        raise _invalid(
            "'input' must be a non-empty string or a non-empty array of strings", "input"
        )
    if len(value) > MAX_EMBEDDING_INPUTS:
        raise _invalid(f"'input' takes at most {MAX_EMBEDDING_INPUTS} items", "input")
    for item in value:
        if isinstance(item, str):
            if not item:
                raise _invalid("'input' must not hold empty strings", "input")
            continue
        if isinstance(item, int | list):
            raise _invalid(
                "'input' must be text: token-id arrays are not accepted (the gateway bounds "
                "a request's cost by its UTF-8 bytes)",
                "input",
            )
        raise _invalid("'input' items must be strings", "input")
    return value
