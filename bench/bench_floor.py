"""The floor: a bare async pass-through proxy, the fastest thing a gateway on
this stack could be.

A raw ASGI callable (no framework) that reads the request body, forwards it
to ``BENCH_UPSTREAM_URL`` + ``/chat/completions`` with the upstream key, and
relays the status, the content type and the body (chunk by chunk for
streams), through one long-lived ``httpx.AsyncClient`` on the aiohttp
transport (``httpx_aiohttp.AiohttpTransport``). No auth, no limits, no JSON
parsing: whatever the gateway does on top costs the difference.
``BENCH_FLOOR_TRANSPORT=httpx`` swaps in httpx's default transport instead
(the ``floor_httpx`` target), to show what the transport alone is worth.

Run: ``BENCH_UPSTREAM_URL=http://127.0.0.1:9100/openai/v1 python -m uvicorn
bench.bench_floor:app --loop uvloop --http httptools --no-access-log``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

from bench.bench_upstream import OPENAI_KEY

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

UPSTREAM_URL = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:9100/openai/v1")
_HEADERS = {"authorization": f"Bearer {OPENAI_KEY}", "content-type": "application/json"}
_client: httpx.AsyncClient | None = None


def _new_client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    timeout = httpx.Timeout(30.0, connect=5.0)
    if os.environ.get("BENCH_FLOOR_TRANSPORT") == "httpx":
        return httpx.AsyncClient(limits=limits, timeout=timeout)
    return httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=timeout)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    global _client
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _client = _new_client()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _client is not None:
                await _client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    assert _client is not None, "the floor needs the lifespan protocol (uvicorn --lifespan on)"
    body = await _read_body(receive)
    request = _client.build_request(
        "POST", UPSTREAM_URL + "/chat/completions", content=body, headers=_HEADERS
    )
    response = await _client.send(request, stream=True)
    try:
        content_type = response.headers.get("content-type", "application/json").encode()
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(b"content-type", content_type)],
            }
        )
        if content_type.startswith(b"text/event-stream"):
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body", "body": await response.aread()})
    finally:
        await response.aclose()
