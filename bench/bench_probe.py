"""The gateway, instrumented to count what one request costs in round trips.

Runs ``gateway.asgi:application`` under uvicorn (as the benchmark does) with
counting hooks at the lowest level the project's clients share, so the counts
do not depend on how the gateway's code is organised:

* Redis: every command the async client writes (``gateway.core.redis_pipe``,
  one command per write) is one round trip, and so is every
  ``send_packed_command`` of redis-py's sync connections (a single command,
  a pipeline or a MULTI/EXEC block all go out in one write and wait for
  their replies); the command names in it are recorded.
* PostgreSQL: every psycopg cursor ``execute``/``executemany``/``copy``/
  ``stream`` (Django's ORM and raw psycopg alike) and every connection-level
  command psycopg sends itself (``BEGIN``, ``COMMIT``, ``ROLLBACK``,
  savepoints) is one statement, recorded with its first words.
* Markers: when a ``POST /v1/chat/completions`` enters and leaves the app, and
  when the gateway starts its upstream call (``httpx.AsyncClient.send`` or
  aiohttp's ``ClientSession._request``, whichever comes first).

``GET /_bench/probe`` returns the events recorded since the last call (and
forgets them): ``{"events": [[monotonic_ns, kind, detail, request], ...]}``
with kind one of ``request``, ``request_end``, ``upstream``, ``redis``,
``db``, and ``request`` the number of the chat request whose context the
event ran in (0 for none: background work). The benchmark splits each
request's events at its first ``upstream`` marker (before / after).

This process is only used for counting; the timed runs use the plain gateway.
Run: ``python -m bench.bench_probe --port 8100`` with the gateway's env.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import json
import re
import time
from collections.abc import Callable
from typing import Any

EVENTS: list[tuple[int, str, str, int]] = []
# Which chat request the running code works for (0: none, e.g. a background
# writer started at boot). Context variables follow the request into the
# tasks it creates and into sync_to_async threads, so a round trip is tied to
# the request that caused it, not to whichever request happens to be running.
REQUEST: contextvars.ContextVar[int] = contextvars.ContextVar("bench_request", default=0)
_requests = itertools.count(1)
_COMMAND_NAME = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z|]+)\r\n")


def record(kind: str, detail: str) -> None:
    # list.append is atomic under the GIL: ORM calls record from worker threads.
    EVENTS.append((time.monotonic_ns(), kind, detail, REQUEST.get()))


def _redis_names(command: Any) -> str:
    if isinstance(command, str):
        command = command.encode()
    packed = command if isinstance(command, bytes) else b"".join(bytes(part) for part in command)
    names = [name.decode().upper() for name in _COMMAND_NAME.findall(packed)]
    return "+".join(names) or "?"


_TABLE = re.compile(r"\b(FROM|INTO|UPDATE)\s+(\S+)", re.IGNORECASE)


def _sql_summary(query: Any) -> str:
    """The statement's verb and first table: ``SELECT … FROM "devices_device"``."""
    if isinstance(query, bytes):
        query = query.decode(errors="replace")
    text = " ".join((query if isinstance(query, str) else type(query).__name__).split())
    verb = text.split(" ", 1)[0].upper()
    table = _TABLE.search(text)
    if table is None or verb not in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH"):
        return text[:60]
    return f"{verb} … {table.group(1).upper()} {table.group(2)}"


def _first(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # The described argument (query, command, request) may come by keyword:
    # httpx's ``stream()`` calls ``send(request=...)``.
    return args[0] if args else next(iter(kwargs.values()), None)


def _wrap_sync(function: Callable[..., Any], kind: str, describe: Callable[[Any], str]) -> Any:
    @functools.wraps(function)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        record(kind, describe(_first(args, kwargs)))
        return function(self, *args, **kwargs)

    return wrapper


def _wrap_async(function: Callable[..., Any], kind: str, describe: Callable[[Any], str]) -> Any:
    @functools.wraps(function)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        record(kind, describe(_first(args, kwargs)))
        return await function(self, *args, **kwargs)

    return wrapper


def _wrap_generator(function: Callable[..., Any], kind: str, describe: Callable[[Any], str]) -> Any:
    @functools.wraps(function)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        record(kind, describe(_first(args, kwargs)))
        return (yield from function(self, *args, **kwargs))

    return wrapper


def install() -> None:
    import aiohttp
    import httpx
    import psycopg
    import psycopg._connection_base
    import redis.connection

    from gateway.core import redis_pipe

    connection = redis.connection.AbstractConnection
    connection.send_packed_command = _wrap_sync(
        connection.send_packed_command, "redis", _redis_names
    )
    protocol = redis_pipe._Protocol
    protocol.send = _wrap_sync(protocol.send, "redis", _redis_names)

    for cls in (psycopg.Cursor, psycopg.ServerCursor):
        cls.execute = _wrap_sync(cls.execute, "db", _sql_summary)
        cls.executemany = _wrap_sync(cls.executemany, "db", _sql_summary)
    for async_cls in (psycopg.AsyncCursor, psycopg.AsyncServerCursor):
        async_cls.execute = _wrap_async(async_cls.execute, "db", _sql_summary)
        async_cls.executemany = _wrap_async(async_cls.executemany, "db", _sql_summary)
    for any_cls in (psycopg.Cursor, psycopg.AsyncCursor):
        # copy() and stream() are generators (or context managers): record at the call.
        any_cls.copy = _wrap_sync(any_cls.copy, "db", _sql_summary)
        any_cls.stream = _wrap_sync(any_cls.stream, "db", _sql_summary)
    base = psycopg._connection_base.BaseConnection
    base._exec_command = _wrap_generator(base._exec_command, "db", _sql_summary)

    httpx.AsyncClient.send = _wrap_async(
        httpx.AsyncClient.send, "upstream", lambda request: f"{request.method} {request.url}"
    )
    session = aiohttp.ClientSession
    session._request = _wrap_async(session._request, "upstream", lambda method: f"{method}")


def instrumented(application: Callable[..., Any]) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/_bench/probe":
            body = json.dumps({"events": EVENTS[:]}).encode()
            EVENTS.clear()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        is_chat = scope["type"] == "http" and scope["path"] == "/v1/chat/completions"
        if is_chat:
            REQUEST.set(next(_requests))
            record("request", scope["method"])
        try:
            await application(scope, receive, send)
        finally:
            if is_chat:
                record("request_end", "")

    return app


def main() -> None:
    from bench.bench_gateway import serve_wrapped_main

    serve_wrapped_main(__doc__ or "", instrumented, prepare=install)


if __name__ == "__main__":
    main()
