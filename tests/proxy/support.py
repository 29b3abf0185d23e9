"""Helpers for the proxy's HTTP tests: raw requests, SPEC's error shape, a caller's limits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

import httpx
import orjson

from billing.pricing import cost_micro_usd, micro_to_usd
from gateway.models import ModelRoute
from tests.proxy.conftest import Gateway

# SPEC section 2: the error `type` follows the status.
TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "service_unavailable_error",
    504: "api_error",
}
HELLO = [{"role": "user", "content": "Hello there"}]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(
    gateway: Gateway,
    content: bytes | Iterable[bytes] | Mapping[str, Any],
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    server: int = 0,
) -> httpx.Response:
    """POST /v1/chat/completions with a raw body (bytes, a chunked iterator, or JSON)."""
    sent = dict(headers or {})
    if token is not None:
        sent.update(bearer(token))
    if isinstance(content, Mapping):
        content = orjson.dumps(dict(content))
        sent.setdefault("Content-Type", "application/json")
    return httpx.post(
        f"{gateway.servers[server].url}/v1/chat/completions",
        content=content,
        headers=sent,
        timeout=30,
    )


def open_stream(
    gateway: Gateway, body: Mapping[str, Any], token: str
) -> AbstractContextManager[httpx.Response]:
    """POST /v1/chat/completions, to be read as it arrives (``with open_stream(...) as r``)."""
    return httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=bearer(token), timeout=30
    )


def leave_after(url: str, token: str, body: Mapping[str, Any], lines: int) -> int:
    """Stream ``body`` from the gateway at ``url``, read ``lines`` data lines, hang up.

    Returns the response's status (a refusal is read whole).
    """
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=dict(body), headers=bearer(token), timeout=30
    ) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: ")
            if seen >= lines:
                break
        return response.status_code


def cost_usd(model: str, tokens_in: int, tokens_out: int) -> Decimal:
    """What ``tokens_in`` and ``tokens_out`` cost on ``model``, at its stored prices."""
    route = ModelRoute.objects.get(public_name=model)
    return micro_to_usd(
        cost_micro_usd(
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            input_price=route.input_price_usd,
            output_price=route.output_price_usd,
        )
    )


def chat_body(**fields: Any) -> dict[str, Any]:
    fields.setdefault("model", "llama3-8b-instruct")
    fields.setdefault("messages", HELLO)
    return fields


def assert_refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """SPEC's error: its status, the status's type, its code, and Retry-After on 429/503."""
    assert response.status_code == status, (response.status_code, response.text)
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == TYPES[status], error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    if status in (429, 503):
        assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-request-id"].startswith("req_")
    return error


def limits_of(gateway: Gateway, token: str, *, headers: Mapping[str, str] | None = None) -> Any:
    """The caller's ``limits`` from GET /v1/usage/stats (remaining counts per layer)."""
    response = httpx.get(
        f"{gateway.url}/v1/usage/stats", headers={**bearer(token), **(headers or {})}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()["limits"]


def remaining(gateway: Gateway, token: str, **kwargs: Any) -> dict[str, int]:
    return {
        name: layer["remaining"]
        for name, layer in limits_of(gateway, token, **kwargs).items()
        if layer is not None
    }


def sse_events(text: str) -> list[str]:
    """The ``data:`` payloads of a server-sent event stream, in order."""
    return [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
