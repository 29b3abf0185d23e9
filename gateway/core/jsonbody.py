"""Every JSON request body is read here: the chat's, registration's and the admin API's
(``gateway.core.parsers``), with one rule for what is too deep."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.core.errors import InvalidRequest

# SPEC: JSON nested deeper than this anywhere in the body is a 400 (the
# upstream body must stay encodable, and a provider refuses far less).
MAX_NESTING = 64


def parse_json_body(body: bytes) -> Any:
    """A request body's JSON; InvalidRequest (400) when it is not JSON or nests
    deeper than ``MAX_NESTING``."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON") from None
    # Brackets inside strings count too: an upper bound that skips the walk
    # for every body that cannot be that deep.
    if body.count(b"{") + body.count(b"[") > MAX_NESTING and nested_deeper(data, MAX_NESTING):
        raise InvalidRequest(f"The request body is nested deeper than {MAX_NESTING} levels")
    return data


def nested_deeper(value: Any, limit: int) -> bool:
    """Is any object or array more than ``limit`` levels deep (the top level is 1)?

    Iterative, so a deep body cannot exhaust the interpreter's stack; only
    bodies with more than ``limit`` brackets get here.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
