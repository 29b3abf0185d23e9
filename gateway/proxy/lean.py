"""The lean ASGI layer for the hot path (DESIGN.md, "The hot path").

Django's request machinery costs about a millisecond per request, so
``/v1/chat/completions`` and ``/v1/models`` are plain ASGI endpoints. This
module takes over what Django's handler and middleware did for them: request
ids and the access line, the ``Host`` check against ``ALLOWED_HOSTS``, CORS
exactly as django-cors-headers answers it, OpenAI-shaped errors for every
failure (Anthropic's on ``/v1/messages``: the endpoint's ``errors``
renderer; a bug is a JSON 500 with the request id, never a traceback),
streaming with client-disconnect and stalled-reader detection, and background
work held by reference. What an endpoint must finish whatever happens (a
request's settlement) it hands to ``LeanRequest.defer``: run once the
exchange is over, however it ended. The body's size and time limits are
``gateway.proxy.bodies``', in front of every path.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.core.signals import setting_changed
from django.http.request import split_domain_port, validate_host

from gateway.core import lifecycle
from gateway.core.errors import GatewayError, InternalError, InvalidRequest, MethodNotAllowed
from gateway.core.logs import REQUEST_FIELDS, log_request, new_request_id, request_id_var

logger = logging.getLogger("gateway.core.errors")

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
Header = tuple[bytes, bytes]
Deferred = Callable[[str], Awaitable[object]]

_BASE_HEADERS: list[Header] = [(b"x-content-type-options", b"nosniff")]
_LOG_FIELDS = frozenset(REQUEST_FIELDS)  # a set: tested for every log field of every request


@dataclass
class Response:
    status: int
    body: bytes
    headers: list[Header] = field(default_factory=list)
    content_type: bytes = b"application/json"


@dataclass
class StreamResponse:
    """Server-sent events from ``events``; closing it early must be safe (see stream_body)."""

    events: AsyncIterator[bytes]
    headers: list[Header] = field(default_factory=list)
    status: int = 200


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(status, orjson.dumps(data), encode_headers(headers or {}))


def error_response(error: GatewayError) -> Response:
    return Response(error.status, orjson.dumps(error.payload()), encode_headers(error.headers()))


ErrorRenderer = Callable[[GatewayError], Response]


def encode_headers(headers: Mapping[str, str]) -> list[Header]:
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]


# Where ``gateway.proxy.bodies`` leaves the request's BoundedBody in the scope.
BODY_SCOPE_KEY = "hanzo.body"


class LeanRequest:
    """What a lean endpoint needs of the ASGI scope, decoded once."""

    __slots__ = (
        "deferred",
        "headers",
        "log",
        "method",
        "path",
        "receive",
        "request_id",
        "scope",
        "started",
    )

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            # Repeated headers are one comma-separated list (RFC 9110 5.3).
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers = headers
        self.request_id = new_request_id()
        self.started = time.monotonic()
        # Fields for the one access line (device, model, tokens, cost...).
        self.log: dict[str, Any] = {}
        self.deferred: list[Deferred] = []

    def defer(self, callback: Deferred) -> None:
        """Run ``callback(end)`` once the exchange is over, however it ended; the last
        deferred runs first. ``end`` is ``"completed"`` (a response was sent),
        ``"client_disconnected"`` (the client left or stopped reading) or
        ``"interrupted"`` (cancelled: the server is shutting down)."""
        self.deferred.append(callback)

    async def run_deferred(self, end: str) -> None:
        while self.deferred:
            callback = self.deferred.pop()
            try:
                await callback(end)
            except Exception:
                logger.exception("deferred work of %s failed", self.request_id)

    def allow_body(self, limit: int) -> None:
        """Let this request's body grow to ``limit`` bytes (before it is read)."""
        bounded = self.scope.get(BODY_SCOPE_KEY)
        if bounded is not None:
            bounded.allow(limit)

    async def body(self) -> bytes:
        """The whole body. ``receive`` is ``gateway.proxy.bodies``': a body too large
        or too slow raises its 413 or 408 here."""
        chunks: list[bytes] = []
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)


class ClientDisconnected(Exception):
    """The client went away, or read nothing for ``STREAM_IDLE_TIMEOUT_SECONDS``."""


Endpoint = Callable[[LeanRequest], Awaitable[Response | StreamResponse]]


# --- CORS (as django-cors-headers answers it) ---------------------------------


def _origin_allowed(origin: str) -> bool:
    if origin == "null":
        return "null" in settings.CORS_ALLOWED_ORIGINS
    try:
        url = urlsplit(origin)
    except ValueError:
        return False
    for allowed in settings.CORS_ALLOWED_ORIGINS:
        allowed_url = urlsplit(allowed)
        if allowed_url.scheme == url.scheme and allowed_url.netloc == url.netloc:
            return True
    return False


def cors_headers(request: LeanRequest) -> list[Header]:
    headers: list[Header] = [(b"vary", b"origin")]
    origin = request.headers.get("origin")
    if not origin or not _origin_allowed(origin):
        return headers
    headers.append((b"access-control-allow-origin", origin.encode("latin-1")))
    headers.append(
        (b"access-control-expose-headers", ", ".join(settings.CORS_EXPOSE_HEADERS).encode())
    )
    if request.method == "OPTIONS":
        headers.append(
            (b"access-control-allow-headers", ", ".join(settings.CORS_ALLOW_HEADERS).encode())
        )
        headers.append(
            (b"access-control-allow-methods", ", ".join(settings.CORS_ALLOW_METHODS).encode())
        )
        if settings.CORS_PREFLIGHT_MAX_AGE:
            headers.append(
                (b"access-control-max-age", str(settings.CORS_PREFLIGHT_MAX_AGE).encode())
            )
    return headers


def _is_preflight(request: LeanRequest) -> bool:
    return request.method == "OPTIONS" and "access-control-request-method" in request.headers


# --- Host (judged as Django's HttpRequest.get_host judges it) -----------------


def _raw_host(request: LeanRequest) -> str:
    headers = request.headers
    if settings.USE_X_FORWARDED_HOST and "x-forwarded-host" in headers:
        return headers["x-forwarded-host"]
    if "host" in headers:
        return headers["host"]
    server = request.scope.get("server")
    return str(server[0]) if server else ""


@functools.lru_cache(maxsize=256)
def _is_allowed_host(host: str) -> bool:
    """Whether ``host`` (port included) passes ``ALLOWED_HOSTS``; remembered per value,
    a bounded number of them, as a client may send any."""
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed_hosts)


def _forget_hosts(*, setting: str, **kwargs: Any) -> None:
    if setting in ("ALLOWED_HOSTS", "DEBUG", "USE_X_FORWARDED_HOST"):
        _is_allowed_host.cache_clear()


setting_changed.connect(_forget_hosts)


# --- The endpoint wrapper ----------------------------------------------------


def lean_endpoint(
    *methods: str, errors: ErrorRenderer = error_response
) -> Callable[[Endpoint], Callable[[Scope, Receive, Send], Awaitable[None]]]:
    """Turn ``async def endpoint(request) -> Response | StreamResponse`` into an ASGI app;
    ``errors`` renders every error it answers (OpenAI's error object unless told)."""
    allowed = ", ".join(methods)

    def decorate(endpoint: Endpoint) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            request = LeanRequest(scope, receive)
            token = request_id_var.set(request.request_id)
            after = lifecycle.hold_after_response()
            status = 500
            end = "interrupted"
            try:
                response = await _respond(endpoint, request, methods, allowed, errors)
                status = response.status
                if isinstance(response, StreamResponse):
                    await _send_stream(request, response, send)
                else:
                    await _send(request, response, send)
                end = "completed"
            except ClientDisconnected:
                status = 499  # nginx's code for "client closed request", for the log only
                end = "client_disconnected"
            finally:
                try:
                    await request.run_deferred(end)
                finally:
                    lifecycle.release_after_response(after)
                    duration = time.monotonic() - request.started
                    _observe(request, status, duration)
                    request_id_var.reset(token)

        app.__name__ = getattr(endpoint, "__name__", "lean_app")
        return app

    return decorate


async def send_error(
    scope: Scope, receive: Receive, send: Send, error: GatewayError, *, started: float
) -> None:
    """Answer ``error`` as a lean endpoint would (request id, CORS, the access line)
    for a request that began at ``started`` and that no endpoint took:
    ``gateway.proxy.bodies``' refusals on Django's paths."""
    request = LeanRequest(scope, receive)
    request.started = started
    request.log["code"] = error.code
    status = error.status
    try:
        await _send(request, error_response(error), send)
    except ClientDisconnected:
        status = 499
    finally:
        _observe(request, status, time.monotonic() - started)


def _observe(request: LeanRequest, status: int, duration: float) -> None:
    from gateway.core import metrics  # metrics serves its endpoint through this module

    request.log.setdefault("code", None)
    metrics.observe_request(request.path, status, request.log, duration)
    fields = {key: value for key, value in request.log.items() if key in _LOG_FIELDS}
    log_request(
        request_id=request.request_id,
        method=request.method,
        path=request.path,
        status=status,
        duration_ms=round(duration * 1000, 1),
        **fields,
    )


async def _respond(
    endpoint: Endpoint,
    request: LeanRequest,
    methods: tuple[str, ...],
    allowed: str,
    errors: ErrorRenderer,
) -> Response | StreamResponse:
    try:
        # Before anything else: a request for another site (DNS rebinding) gets nothing.
        if not _is_allowed_host(_raw_host(request)):
            raise InvalidRequest("Invalid Host header")
        if _is_preflight(request):
            return Response(200, b"", [(b"content-length", b"0")], content_type=b"text/plain")
        if request.method not in methods:
            raise MethodNotAllowed(headers={"Allow": allowed})
        return await endpoint(request)
    except GatewayError as error:
        request.log["code"] = error.code
        return errors(error)
    except ClientDisconnected:
        raise
    except Exception:
        logger.exception("Unhandled exception on %s", request.path)
        internal = InternalError(
            f"Internal server error (request id {request.request_id})", requestId=request.request_id
        )
        request.log["code"] = internal.code
        return errors(internal)


def _start_message(
    request: LeanRequest, status: int, headers: list[Header], content_type: bytes
) -> dict[str, Any]:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", content_type),
            (b"x-request-id", request.request_id.encode()),
            *_BASE_HEADERS,
            *cors_headers(request),
            *headers,
        ],
    }


class _IdleGuard:
    """Ends a response whose client reads nothing for ``STREAM_IDLE_TIMEOUT_SECONDS``.

    A server's ``send`` waits while the socket's buffer is full: a client
    that stops reading (or pipelines requests and reads no answer) would hold
    the request, its provider stream and its concurrency slot for ever. One
    timer per response, not one per send (a stream sends thousands): it
    cancels the sending task when a send has been pending that long. The
    sender marks each send with ``since = loop.time()`` and clears it after.
    """

    __slots__ = ("_handle", "_idle", "_task", "is_stalled", "loop", "since")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._idle = float(settings.STREAM_IDLE_TIMEOUT_SECONDS)
        self.since: float | None = None
        self.is_stalled = False
        self._handle = self.loop.call_later(self._idle, self._check)

    def _check(self) -> None:
        since = self.since
        if since is not None and self.loop.time() - since >= self._idle:
            self.is_stalled = True
            self._task.cancel()
            return
        wake = self.loop.time() + self._idle if since is None else since + self._idle
        self._handle = self.loop.call_at(wake, self._check)

    def stalled(self) -> ClientDisconnected:
        """The cancellation was this guard's: the task goes on, the client is gone."""
        self._task.uncancel()
        _abandoned.set(True)
        return ClientDisconnected()

    def close(self) -> None:
        self._handle.cancel()


async def _send(request: LeanRequest, response: Response, send: Send) -> None:
    headers = response.headers
    if not any(name == b"content-length" for name, _ in headers):
        headers = [*headers, (b"content-length", str(len(response.body)).encode())]
    guard = _IdleGuard()
    try:
        guard.since = guard.loop.time()
        await send(_start_message(request, response.status, headers, response.content_type))
        await send({"type": "http.response.body", "body": response.body})
    except asyncio.CancelledError:
        if not guard.is_stalled:
            raise
        raise guard.stalled() from None
    finally:
        guard.close()


async def _send_stream(request: LeanRequest, response: StreamResponse, send: Send) -> None:
    """Send server-sent events; a client disconnect cancels the sending task.

    The body has been read, so the next ASGI message is ``http.disconnect``
    and arrives only if the client goes away. A watcher waits for it and
    cancels the send loop. A client that reads nothing for
    ``STREAM_IDLE_TIMEOUT_SECONDS`` is treated as gone (``_IdleGuard``).
    Either way the producer is closed here; what it must finish (closing
    the upstream request, settling) the endpoint deferred.
    """
    loop_task = asyncio.current_task()
    assert loop_task is not None

    async def watch_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        loop_task.cancel()

    headers = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"), *response.headers]
    watcher = asyncio.get_running_loop().create_task(watch_disconnect())
    guard = _IdleGuard()
    clock = guard.loop.time
    events = response.events
    try:
        guard.since = clock()
        await send(_start_message(request, response.status, headers, b"text/event-stream"))
        guard.since = None
        async for event in events:
            guard.since = clock()
            await send({"type": "http.response.body", "body": event, "more_body": True})
            guard.since = None
        guard.since = clock()
        await send({"type": "http.response.body", "body": b""})
    except asyncio.CancelledError:
        if guard.is_stalled:
            raise guard.stalled() from None
        if not watcher.done() or watcher.cancelled():
            raise  # cancelled by the server (shutdown), not by the client
        loop_task.uncancel()
        raise ClientDisconnected() from None
    finally:
        guard.close()
        watcher.cancel()
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


# --- Abandoned responses -------------------------------------------------------

# Set (and never reset) in a request's task when it gave up on a client that
# stopped reading: the server then says "ASGI callable returned without
# completing response" as it closes the connection, which is expected here.
_abandoned: contextvars.ContextVar[bool] = contextvars.ContextVar("abandoned", default=False)
_INCOMPLETE_RESPONSE = "ASGI callable returned without completing response."


class _QuietAbandoned(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == _INCOMPLETE_RESPONSE and _abandoned.get())


def quiet_abandoned_responses() -> None:
    """Drop the server's error line for a response this layer abandoned on purpose."""
    server_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietAbandoned) for f in server_logger.filters):
        server_logger.addFilter(_QuietAbandoned())


quiet_abandoned_responses()
