"""The one limit on request bodies, in front of every path (SPEC section 2, "Hardening").

Django's ASGI handler reads a whole body into a temporary file before its
first middleware runs, so a limit checked in a view comes too late: a
chunked gigabyte to ``/health`` is on disk before anything says no. So every
HTTP request, lean endpoints and Django's alike, reads its body through a
``BoundedBody`` (``bound_bodies`` in ``gateway.asgi``), the one place that
enforces:

- ``MAX_REQUEST_BYTES`` (or a larger limit the endpoint ``allow``s before
  reading, as the chat endpoint does for authenticated callers, whose images
  may take ``MAX_IMAGE_REQUEST_BYTES``): a declared ``Content-Length`` over it is refused on
  the first read, before the server is asked for a byte of the body (so it
  does not even send ``100 Continue``); a body without one (chunked) as soon
  as what arrived passes it: at most one more server buffer (64 KiB) is read;
- ``REQUEST_BODY_TIMEOUT_SECONDS``: a body that has not fully arrived that
  long after its request began gets 408, so a client trickling a byte at a
  time cannot hold a connection.

A refusal is raised from ``receive`` as the ``GatewayError`` it is, and again
by any later read. A lean endpoint answers it like any other error, in its
place in SPEC's check order (on the hot path the IP guard answers first).
Django reads the body before anything else, so a refusal leaves Django's
handler before it answered, and ``bound_bodies`` answers it. Either answer
closes the connection: the rest of the body is never read.

On the hot path this costs no task and no timer per request: the deadlines
of the bodies being read are checked by one periodic call per event loop
(``_Deadlines``), which runs only while there are such bodies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.conf import settings

from gateway.core.errors import GatewayError, RequestTimeout, RequestTooLarge
from gateway.proxy.lean import BODY_SCOPE_KEY, send_error

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Sent with a refusal: the server closes the connection instead of reading
# (and discarding) the rest of the body to reuse it.
_CLOSE = {"Connection": "close"}
# How often the bodies being read are checked: a 408 comes at most this late.
SWEEP_SECONDS = 0.5


class BoundedBody:
    """``receive`` for one request: a body too large or too slow is refused."""

    __slots__ = (
        "_allowed",
        "_is_complete",
        "_is_expired",
        "_limit",
        "_receive",
        "_scope",
        "_size",
        "_waiter",
        "_watch",
        "deadline",
        "refusal",
        "started",
    )

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self._scope = scope
        self._receive = receive
        self.started = time.monotonic()
        self.deadline = 0.0
        self.refusal: GatewayError | None = None
        self._watch: _Deadlines | None = None
        self._waiter: asyncio.Task[Any] | None = None
        self._is_complete = False
        self._is_expired = False
        self._size = 0
        self._limit = 0
        self._allowed = 0

    def allow(self, limit: int) -> None:
        """Raise this body's limit to ``limit``; only before its first read."""
        if self._watch is None and self.refusal is None:
            self._allowed = limit

    async def receive(self) -> Message:
        if self._is_complete:
            return await self._receive()  # after the body only http.disconnect comes
        if self.refusal is not None:
            raise self.refusal
        if self._watch is None:
            self._begin()
        elif self._is_expired:
            raise self._refuse(self._timeout())
        waiter = asyncio.current_task()
        assert waiter is not None
        self._waiter = waiter
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            # The deadline cancelled this wait (``expire``): the task goes on
            # to answer 408, unless something else cancelled it too.
            if not self._is_expired or waiter.uncancel() > 0:
                raise
            raise self._refuse(self._timeout()) from None
        finally:
            self._waiter = None
        if message["type"] != "http.request":  # http.disconnect: no more body
            self._finish()
            return message
        self._size += len(message.get("body", b""))
        if self._size > self._limit:
            raise self._refuse(self._too_large())
        if not message.get("more_body", False):
            self._finish()
        return message

    def _begin(self) -> None:
        self._limit = max(settings.MAX_REQUEST_BYTES, self._allowed)
        for name, value in self._scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self._limit:
                    raise self._refuse(self._too_large())
                break
        self.deadline = self.started + settings.REQUEST_BODY_TIMEOUT_SECONDS
        self._watch = _Deadlines.of(asyncio.get_running_loop())
        self._watch.add(self)

    def expire(self) -> None:
        """The deadline passed: the next read refuses, or the one under way is cancelled."""
        self._is_expired = True
        if self._waiter is not None:
            self._waiter.cancel()

    def _finish(self) -> None:
        self._is_complete = True
        if self._watch is not None:
            self._watch.discard(self)

    def _refuse(self, error: GatewayError) -> GatewayError:
        self.refusal = error
        if self._watch is not None:
            self._watch.discard(self)
        return error

    def _too_large(self) -> RequestTooLarge:
        return RequestTooLarge(f"Request body exceeds {self._limit} bytes", headers=_CLOSE)

    def _timeout(self) -> RequestTimeout:
        seconds = settings.REQUEST_BODY_TIMEOUT_SECONDS
        return RequestTimeout(f"Request body not received within {seconds:g} s", headers=_CLOSE)


class _Deadlines:
    """The bodies being read on one event loop, and the periodic call that expires them.

    Most bodies have fully arrived when first read and leave at once; the
    call runs only while some are left, every ``SWEEP_SECONDS``.
    """

    _current: _Deadlines | None = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reading: dict[BoundedBody, None] = {}
        self.sweep_handle: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Deadlines:
        # One loop per server process; tests start others, and a body keeps
        # the _Deadlines it joined, so replacing the current one loses none.
        current = cls._current
        if current is None or current.loop is not loop:
            current = cls._current = cls(loop)
        return current

    def add(self, body: BoundedBody) -> None:
        self.reading[body] = None
        if self.sweep_handle is None:
            self.sweep_handle = self.loop.call_later(SWEEP_SECONDS, self._sweep)

    def discard(self, body: BoundedBody) -> None:
        self.reading.pop(body, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        for body in [body for body in self.reading if body.deadline <= now]:
            del self.reading[body]
            body.expire()
        self.sweep_handle = None
        if self.reading:
            self.sweep_handle = self.loop.call_later(SWEEP_SECONDS, self._sweep)


def bound_bodies(app: ASGIApp) -> ASGIApp:
    """``app`` (HTTP only) reading every request body through a ``BoundedBody``."""

    async def bounded(scope: Scope, receive: Receive, send: Send) -> None:
        body = BoundedBody(scope, receive)
        scope[BODY_SCOPE_KEY] = body
        try:
            await app(scope, body.receive, send)
        except GatewayError as error:
            # Only Django lets a refusal out, from reading the body before it
            # answered anything; lean endpoints answer their own.
            if error is not body.refusal:
                raise
            await send_error(scope, body.receive, send, error, started=body.started)

    return bounded
