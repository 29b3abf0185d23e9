"""The asyncio Redis client: one connection per event loop, every command
pipelined on it.

Why not redis-py's asyncio client: per command it checks a connection out of
its pool and back, runs its retry wrapper and packs the command in Python.
On the hot path (two or three commands per request) that was the largest
single cost of the gateway (docs/benchmarks.md). Here a command is bytes
packed by hiredis and one future; the commands sent during one turn of the
event loop go out in one ``transport.write``, hiredis parses the replies in
C, and each reply answers the oldest command still waiting (Redis answers a
connection's commands in order). Concurrent requests share the connection,
so their commands go out together without waiting for each other's replies.

Plain commands only: no MULTI (other callers' commands would land inside
the transaction) and no blocking commands; what must be atomic is a Lua
script (``evalsha``, loading the script on ``NOSCRIPT``). Synchronous code
keeps django-redis. Errors are redis-py's classes, so callers handle both
alike: a reply error is ``ResponseError`` (``NoScriptError`` for
``NOSCRIPT``), a lost or unreachable server ``ConnectionError``, no answer
within the timeout ``TimeoutError``. After a timeout the connection is
dropped: its commands fail at once and the next command connects afresh,
so a server that stopped answering costs each request one timeout at most,
never a queue of them. A server that closes the connection (a restart) is
noticed by the event loop as it happens, not by the next command.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | bytes | int | float


class _Protocol(asyncio.Protocol):
    """One connection: commands written in order, replies matched in order."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        # Futures of the commands sent and not yet answered, oldest first. A
        # caller that gave up (timeout, cancellation) leaves its future here,
        # done: its reply still arrives and must be consumed in its turn.
        self.waiting: deque[asyncio.Future[Any]] = deque()
        # Commands packed since the last write: everything sent during one
        # turn of the event loop goes out in one write (one system call, one
        # TCP segment), however many requests sent it.
        self.unsent: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.is_closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError:
                self.abort(RedisConnectionError("Redis sent a malformed reply"))
                return
            if reply is False:  # hiredis: no whole reply buffered yet
                return
            future = self.waiting.popleft()
            if future.done():
                continue
            if isinstance(reply, ResponseError):
                if str(reply).startswith("NOSCRIPT"):
                    reply = NoScriptError(str(reply))
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError("Connection to Redis lost"))

    def abort(self, error: Exception) -> None:
        self._fail(error)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, error: Exception) -> None:
        self.is_closed = True
        self.unsent.clear()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append(future)
        if not self.unsent:
            loop.call_soon(self._write)
        self.unsent.append(packed)
        return future

    def _write(self) -> None:
        if self.is_closed or not self.unsent:
            return  # the connection went meanwhile; its commands have failed
        assert self.transport is not None
        self.transport.write(b"".join(self.unsent))
        self.unsent.clear()


def _ssl_context(options: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if str(options.get("ssl_cert_reqs", "required")).lower() in ("none", "0"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    return context


class PipelinedRedis:
    """Commands on one pipelined connection, (re)connected on demand."""

    def __init__(self, url: str, *, connect_timeout: float, timeout: float) -> None:
        options = parse_url(url)
        self._host: str = options.get("host", "localhost")
        self._port = int(options.get("port", 6379))
        self._path: str | None = options.get("path")
        self._db = int(options.get("db", 0) or 0)
        self._username: str | None = options.get("username")
        password = options.get("password")
        self._password = unquote(password) if password else None
        self._ssl = _ssl_context(options) if url.startswith("rediss://") else None
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._protocol: _Protocol | None = None
        self._connect_lock = asyncio.Lock()

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply (bytes, int, list, None)."""
        protocol = self._protocol
        if protocol is None or protocol.is_closed:
            protocol = await self._connected()
        return await self._command(protocol, args)

    async def mget(self, keys: Sequence[str]) -> list[Any]:
        return list(await self.execute("MGET", *keys))

    async def evalsha(self, script: LuaScript, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run ``script`` by its hash; load it first if Redis lost it (restart, flush)."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.execute("SCRIPT", "LOAD", script.source)
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    async def aclose(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    async def _command(self, protocol: _Protocol, args: tuple[Arg, ...]) -> Any:
        future = protocol.send(hiredis.pack_command(args))  # type: ignore[arg-type]  # stub: 1-tuple
        # A timer per command rather than asyncio.timeout(): cheaper, and on
        # expiry the whole connection goes (see the module docstring).
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self._timeout, self._expire, protocol, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, protocol: _Protocol, future: asyncio.Future[Any]) -> None:
        if not future.done():
            protocol.abort(RedisTimeoutError("Timeout reading from Redis"))

    async def _connected(self) -> _Protocol:
        async with self._connect_lock:
            protocol = self._protocol
            if protocol is None or protocol.is_closed:
                protocol = self._protocol = await self._open()
            return protocol

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._path is not None:
                    _, protocol = await loop.create_unix_connection(_Protocol, self._path)
                else:
                    _, protocol = await loop.create_connection(
                        _Protocol, self._host, self._port, ssl=self._ssl
                    )
        except TimeoutError:
            raise RedisTimeoutError("Timeout connecting to Redis") from None
        except OSError as exc:
            raise RedisConnectionError(f"Error connecting to Redis: {exc.strerror}") from None
        try:
            if self._password is not None:
                credentials = [self._password]
                if self._username:
                    credentials.insert(0, self._username)
                await self._command(protocol, ("AUTH", *credentials))
            if self._db:
                await self._command(protocol, ("SELECT", self._db))
        except BaseException:
            protocol.abort(RedisConnectionError("Redis refused the connection's setup"))
            raise
        return protocol


class LuaScript:
    """A script's source and SHA1, computed once (EVALSHA needs no client to know it)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: bytes) -> None:
        self.source = source
        self.sha = hashlib.sha1(source, usedforsecurity=False).hexdigest()
