"""Running the Lua scripts of ``lua/``: one source per operation, EVALSHA, errors.

Each script is the shared helpers (``lua/common.lua``) plus the operation.
Async code runs them on the pipelined client
(``gateway.core.store.async_redis``), which falls back to loading a script
on ``NOSCRIPT`` (a restarted or flushed Redis): nothing to re-register by
hand. Synchronous callers (commands, the admin, the dashboard) use
django-redis's connection through redis-py's ``Script``. Any Redis failure
is ``StoreUnavailable``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, cast

from redis.commands.core import Script
from redis.exceptions import RedisError, ResponseError

from gateway.core.redis_pipe import LuaScript
from gateway.core.store import StoreUnavailable, async_redis, sync_redis
from usage.windows import WindowSpec

LUA_DIR = Path(__file__).with_name("lua")
DAY_MS = 86400 * 1000


def milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def window_ttl_ms(spec: WindowSpec) -> int:
    return (spec.seconds + 2 * spec.bucket_seconds) * 1000


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@cache
def _source(name: str) -> bytes:
    common = (LUA_DIR / "common.lua").read_text()
    return (common + "\n" + (LUA_DIR / f"{name}.lua").read_text()).encode()


@cache
def _async_script(name: str) -> LuaScript:
    return LuaScript(_source(name))


@cache
def _sync_script(name: str) -> Script:
    return Script(cast(Any, None), _source(name))


@contextmanager
def unavailable_on_error() -> Iterator[None]:
    try:
        yield
    except ResponseError as exc:
        if str(exc).startswith("DUPLICATE"):
            raise ValueError("request id already holds a reservation") from None
        raise StoreUnavailable() from None
    except RedisError:
        raise StoreUnavailable() from None


async def run(script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    with unavailable_on_error():
        return await async_redis().evalsha(_async_script(script), keys, args)


def run_sync(script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    with unavailable_on_error():
        return _sync_script(script)(keys, args, client=sync_redis())
