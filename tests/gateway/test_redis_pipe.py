"""The hot path's pipelined Redis client (gateway.core.redis_pipe).

Against the real Redis of the production profile, and against a small fake
RESP server for what a real one will not do on demand: stall, answer late,
ask for a password, send garbage.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import hiredis
import pytest
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.core.redis_pipe import LuaScript, PipelinedRedis


def _client(url: str, timeout: float = 2) -> PipelinedRedis:
    return PipelinedRedis(url, connect_timeout=1, timeout=timeout)


# --- the real server -----------------------------------------------------------

real = pytest.mark.production_only


@real
async def test_commands_from_many_tasks_share_one_connection_and_each_gets_its_own_reply() -> None:
    client = _client(str(settings.REDIS_URL))
    prefix = f"{{hz}}:test-pipe:{uuid.uuid4().hex}"
    try:
        await asyncio.gather(*(client.execute("SET", f"{prefix}:{n}", n) for n in range(200)))
        replies = await asyncio.gather(
            *(client.execute("GET", f"{prefix}:{n}") for n in range(200))
        )
        assert replies == [str(n).encode() for n in range(200)]
        assert await client.mget([f"{prefix}:7", f"{prefix}:missing"]) == [b"7", None]
        clients = await client.execute("CLIENT", "LIST")
        name = await client.execute("CLIENT", "ID")
        assert clients.count(f"id={name} ".encode()) == 1
    finally:
        await client.execute("DEL", *(f"{prefix}:{n}" for n in range(200)))
        await client.aclose()


@real
async def test_evalsha_loads_a_script_redis_does_not_know_and_then_runs_it_by_hash() -> None:
    client = _client(str(settings.REDIS_URL))
    # A comment no other test uses: Redis cannot have this script cached.
    script = LuaScript(f"-- {uuid.uuid4().hex}\nreturn {{KEYS[1], ARGV[1], 42}}".encode())
    try:
        assert await client.execute("SCRIPT", "EXISTS", script.sha) == [0]
        assert await client.evalsha(script, ["{hz}:k"], ["v"]) == [b"{hz}:k", b"v", 42]
        assert await client.execute("SCRIPT", "EXISTS", script.sha) == [1]
        assert await client.evalsha(script, ["{hz}:k2"], [7]) == [b"{hz}:k2", b"7", 42]
    finally:
        await client.aclose()


@real
async def test_an_error_reply_is_a_response_error_and_the_connection_stays_usable() -> None:
    client = _client(str(settings.REDIS_URL))
    script = LuaScript(b"return redis.error_reply('DUPLICATE request')")
    try:
        with pytest.raises(ResponseError, match=r"^DUPLICATE"):
            await client.evalsha(script, [], [])
        with pytest.raises(ResponseError):
            await client.execute("NOT-A-COMMAND")
        assert await client.execute("PING") == b"PONG"
    finally:
        await client.aclose()


@real
async def test_the_url_selects_the_database() -> None:
    from gateway.core.store import sync_redis

    key = f"{{hz}}:test-pipe-db:{uuid.uuid4().hex}"
    client = _client(str(settings.REDIS_URL))
    try:
        await client.execute("SET", key, "here", "EX", 60)
        assert sync_redis().get(key) == b"here"  # django-redis, same URL
    finally:
        sync_redis().delete(key)
        await client.aclose()


async def test_a_refused_connection_is_a_connection_error() -> None:
    client = _client(f"redis://127.0.0.1:{_unused_port()}/0")
    with pytest.raises(RedisConnectionError):
        await client.execute("PING")


# --- a fake server ---------------------------------------------------------------

Handler = Callable[[list[bytes]], Any]


class FakeRedis:
    """Parses RESP commands; ``handler(command)`` returns the raw reply bytes, or
    None to never answer. Records every command and counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.commands: list[list[bytes]] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        parser = hiredis.Reader()
        while data := await reader.read(65536):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                self.commands.append(command)
                reply = self.handler(command)
                if asyncio.iscoroutine(reply):
                    reply = await reply
                if reply is not None:
                    writer.write(reply)
        writer.close()


@asynccontextmanager
async def fake_redis(handler: Handler, db: int = 0, auth: str = "") -> AsyncIterator[Any]:
    fake = FakeRedis(handler)
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fake.url = f"redis://{auth}127.0.0.1:{port}/{db}"  # type: ignore[attr-defined]
    try:
        yield fake
    finally:
        for writer in fake.writers:
            writer.close()
        server.close()


def _unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ok(command: list[bytes]) -> bytes:
    return b"+OK\r\n"


async def test_the_connection_authenticates_and_selects_before_any_command() -> None:
    async with fake_redis(ok, db=3, auth="app:s3cret@") as fake:
        client = _client(fake.url)
        assert await client.execute("PING") == b"OK"
        assert fake.commands == [[b"AUTH", b"app", b"s3cret"], [b"SELECT", b"3"], [b"PING"]]
        await client.aclose()


async def test_a_refused_password_fails_the_command_and_no_command_runs_unauthenticated() -> None:
    def refuse_auth(command: list[bytes]) -> bytes:
        return b"-WRONGPASS invalid password\r\n" if command[0] == b"AUTH" else b"+OK\r\n"

    async with fake_redis(refuse_auth, auth=":wrong@") as fake:
        client = _client(fake.url)
        with pytest.raises(ResponseError, match="WRONGPASS"):
            await client.execute("GET", "k")
        assert [command[0] for command in fake.commands] == [b"AUTH"]
        await client.aclose()


async def test_a_server_that_stops_answering_times_out_and_the_next_command_reconnects() -> None:
    stalled = {"on": True}

    def maybe_stall(command: list[bytes]) -> bytes | None:
        return None if stalled["on"] else b"+PONG\r\n"

    async with fake_redis(maybe_stall) as fake:
        client = _client(fake.url, timeout=0.2)
        first: object
        second: object
        first, second = await asyncio.gather(
            client.execute("PING"), client.execute("PING"), return_exceptions=True
        )
        # Both were waiting on the dead connection: both fail, at the first timeout.
        assert isinstance(first, RedisTimeoutError)
        assert isinstance(second, RedisTimeoutError)
        stalled["on"] = False
        assert await client.execute("PING") == b"PONG"
        assert fake.connections == 2
        await client.aclose()


async def test_a_caller_that_gives_up_does_not_shift_the_replies_of_the_others() -> None:
    release = asyncio.Event()

    async def slow_first(command: list[bytes]) -> bytes:
        if command[1] == b"slow":
            await release.wait()
        return b"$%d\r\n%s\r\n" % (len(command[1]), command[1])

    async with fake_redis(slow_first) as fake:
        client = _client(fake.url)
        slow = asyncio.ensure_future(client.execute("ECHO", "slow"))
        await asyncio.sleep(0.05)
        slow.cancel()
        following = asyncio.ensure_future(client.execute("ECHO", "mine"))
        await asyncio.sleep(0.05)
        release.set()
        assert await following == b"mine"
        assert await client.execute("ECHO", "next") == b"next"
        assert fake.connections == 1
        with pytest.raises(asyncio.CancelledError):
            await slow
        await client.aclose()


async def test_a_server_that_closes_the_connection_fails_its_commands_and_the_next_connects_again() -> None:  # noqa: E501  # fmt: skip
    answered = {"count": 0}

    def close_on_first(command: list[bytes]) -> bytes | None:
        answered["count"] += 1
        if answered["count"] == 1:
            for writer in fake.writers:
                writer.close()
            return None
        return b"+PONG\r\n"

    async with fake_redis(close_on_first) as fake:
        client = _client(fake.url)
        with pytest.raises(RedisConnectionError):
            await client.execute("PING")
        assert await client.execute("PING") == b"PONG"
        assert fake.connections == 2
        await client.aclose()


async def test_a_malformed_reply_drops_the_connection_instead_of_misreading_it() -> None:
    async with fake_redis(lambda command: b"?garbage\r\n") as fake:
        client = _client(fake.url)
        with pytest.raises(RedisConnectionError, match="malformed"):
            await client.execute("PING")
        await client.aclose()


async def test_the_commands_of_one_loop_turn_go_out_in_one_write_and_are_answered_in_order() -> (
    None
):
    from gateway.core.redis_pipe import _Protocol

    class Transport:
        writes: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.writes.append(data)

    protocol = _Protocol()
    protocol.connection_made(Transport())  # type: ignore[arg-type]
    # hiredis's stub types pack_command's argument as a 1-tuple (as in gateway.core.redis_pipe).
    futures = [
        protocol.send(hiredis.pack_command(("ECHO", word)))  # type: ignore[arg-type]
        for word in ("a", "b", "c")
    ]
    await asyncio.sleep(0)
    sent = b"".join(hiredis.pack_command(("ECHO", w)) for w in "abc")  # type: ignore[arg-type]
    assert Transport.writes == [sent]
    protocol.data_received(b"$1\r\na\r\n$1\r\nb")
    assert futures[0].result() == b"a" and not futures[1].done()
    protocol.data_received(b"\r\n$1\r\nc\r\n")
    assert [future.result() for future in futures] == [b"a", b"b", b"c"]
    protocol.send(hiredis.pack_command(("PING",)))
    await asyncio.sleep(0)
    assert len(Transport.writes) == 2
