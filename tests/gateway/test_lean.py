"""The lean ASGI layer: what Django's handler did for the hot path, done by hand."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
import pytest
import uvicorn
from pytest_django import Settings

from gateway.asgi import Receive, Scope, Send
from gateway.core import lifecycle
from gateway.core.errors import RateLimited
from gateway.core.lifecycle import finish
from gateway.proxy.bodies import bound_bodies
from gateway.proxy.lean import (
    LeanRequest,
    Response,
    StreamResponse,
    json_response,
    lean_endpoint,
)
from tests.support.processes import free_port, wait_for

closed_streams: list[str] = []
settled: list[str] = []


@lean_endpoint("POST")
async def echo(request: LeanRequest) -> Response:
    body = await request.body()
    if body == b"limited":
        raise RateLimited("slow down", retry_after=7, limit=5)
    if body == b"bug":
        raise RuntimeError("secret sk-live-abcdefghijklmnopqrstuvwx")
    return json_response({"size": len(body)}, headers={"X-Extra": "1"})


events_seen: list[str] = []


@lean_endpoint("POST")
async def defers(request: LeanRequest) -> Response:
    async def later() -> None:
        events_seen.append("after-response work ran")

    async def in_a_task() -> None:
        lifecycle.after_response(later())

    await finish(in_a_task())  # a task copies the request's context: still held
    events_seen.append("endpoint returned")
    return json_response({})


@lean_endpoint("POST")
async def ticker(request: LeanRequest) -> StreamResponse:
    await request.body()

    async def events() -> AsyncIterator[bytes]:
        try:
            for number in range(1000):
                yield f"data: {number}\n\n".encode()
                await asyncio.sleep(0.01)
        finally:
            closed_streams.append(request.request_id)
            await finish(record_settlement(request.request_id))

    return StreamResponse(events())


async def record_settlement(request_id: str) -> None:
    await asyncio.sleep(0.05)  # a settlement that takes a while must still complete
    settled.append(request_id)


@pytest.fixture
def client(settings: Settings) -> httpx.AsyncClient:
    settings.MAX_REQUEST_BYTES = 64
    # httpx types the ASGI send()'s message as a dict; the gateway's apps take a Mapping.
    transport = httpx.ASGITransport(app=bound_bodies(echo))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://localhost")


async def test_it_answers_json_with_a_request_id(client: httpx.AsyncClient) -> None:
    response = await client.post("/x", content=b"hello")
    assert response.status_code == 200
    assert response.json() == {"size": 5}
    assert response.headers["x-request-id"].startswith("req_")
    assert response.headers["x-extra"] == "1"
    assert response.headers["content-length"] == str(len(response.content))


async def test_a_gateway_error_is_rendered_as_openai_error_with_its_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/x", content=b"limited")
    assert response.status_code == 429
    assert response.json()["error"] == {
        "message": "slow down",
        "type": "rate_limit_error",
        "code": "rate_limit_exceeded",
        "limit": 5,
    }
    assert response.headers["retry-after"] == "7"


async def test_a_bug_is_a_json_500_with_the_request_id_and_no_details(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = await client.post("/x", content=b"bug")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "api_error" and error["code"] == "internal_error"
    assert error["requestId"] == response.headers["x-request-id"]
    assert "sk-live" not in response.text and "RuntimeError" not in response.text
    assert any("RuntimeError" in str(record.exc_info) for record in caplog.records)


async def test_a_body_over_the_cap_is_413_whether_declared_or_not(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post("/x", content=b"x" * 64)).json() == {"size": 64}
    declared = await client.post("/x", content=b"x" * 65)
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "request_too_large"
    assert declared.headers["connection"] == "close"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 10

    undeclared = await client.post("/x", content=chunks())
    assert undeclared.status_code == 413


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "localhost.evil.example", ""])
async def test_a_host_outside_allowed_hosts_is_400_before_anything_else(
    client: httpx.AsyncClient, host: str
) -> None:
    response = await client.get("/x", headers={"Host": host})  # a wrong method too
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "Invalid Host header",
        "type": "invalid_request_error",
        "code": "invalid_request",
    }
    assert response.headers["x-request-id"].startswith("req_")


async def test_an_allowed_host_passes_with_or_without_a_port(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    for host in ["localhost", "LOCALHOST:8000", "127.0.0.1:1234"]:
        response = await client.post("/x", content=b"a", headers={"Host": host})
        assert response.status_code == 200, host
    settings.ALLOWED_HOSTS = [".example.com"]
    assert (await client.post("/x", content=b"a", headers={"Host": "localhost"})).status_code == 400
    response = await client.post("/x", content=b"a", headers={"Host": "api.example.com:443"})
    assert response.status_code == 200


async def test_a_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.get("/x")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"


async def test_cors_preflight_and_headers_match_django_cors_headers(
    client: httpx.AsyncClient,
) -> None:
    preflight = await client.options(
        "/x",
        headers={"Origin": "https://app.hanzo.ai", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.hanzo.ai"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "x-session-token" in preflight.headers["access-control-allow-headers"]
    actual = await client.post("/x", content=b"a", headers={"Origin": "https://app.hanzo.ai"})
    assert actual.headers["access-control-allow-origin"] == "https://app.hanzo.ai"
    assert "x-ratelimit-remaining-device" in actual.headers["access-control-expose-headers"]
    foreign = await client.post("/x", content=b"a", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in foreign.headers


def test_the_access_line_has_the_request_id_and_status(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def call() -> httpx.Response:
        return await client.post("/x", content=b"limited")

    with caplog.at_level(logging.INFO, logger="gateway.access"):
        response = asyncio.run(call())
    (line,) = [r for r in caplog.records if r.name == "gateway.access"]
    assert getattr(line, "request_id") == response.headers["x-request-id"]
    assert "POST /x 429" in line.getMessage()
    assert getattr(line, "code") == "rate_limit_exceeded"


@pytest.fixture
def ticker_server() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(ticker, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10, what="ticker server")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_a_client_disconnect_closes_the_stream_and_settlement_still_completes(
    ticker_server: str,
) -> None:
    closed_streams.clear()
    settled.clear()
    with httpx.stream("POST", ticker_server, content=b"{}", timeout=10) as response:
        request_id = response.headers["x-request-id"]
        lines = response.iter_lines()
        assert next(lines) == "data: 0"
    # The client has gone; the producer is closed and its settlement finishes.
    wait_for(lambda: request_id in settled, timeout=5, what="settlement after disconnect")
    assert closed_streams == [request_id]


async def test_after_response_work_starts_once_the_response_is_sent() -> None:
    events_seen.clear()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Mapping[str, Any]) -> None:
            if message["type"] == "http.response.body":
                events_seen.append("response sent")
            await send(message)

        await defers(scope, receive, sending)

    # httpx types the ASGI send()'s message as a dict; the gateway's apps take a Mapping.
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        assert (await client.post("/", content=b"")).status_code == 200
    await lifecycle._drain_background()
    assert events_seen == ["endpoint returned", "response sent", "after-response work ran"]


async def test_after_response_outside_a_request_or_after_its_response_spawns_at_once() -> None:
    ran: list[int] = []

    async def work(number: int) -> None:
        ran.append(number)

    lifecycle.after_response(work(1))
    token = lifecycle.hold_after_response()
    lifecycle.after_response(work(2))
    await asyncio.sleep(0)
    assert ran == [1]
    lifecycle.release_after_response(token)
    lifecycle.after_response(work(3))
    await lifecycle._drain_background()
    assert sorted(ran) == [1, 2, 3]


async def test_start_up_freezes_what_it_built_out_of_the_collectors_sight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lifecycle, "_startup", [])  # no flusher or housekeeping in this process
    gc.unfreeze()
    try:
        await lifecycle.run_startup()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
