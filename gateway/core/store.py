"""The shared store: Redis on the production profile, this process otherwise.

Two things live here because every app needs them:

* the Redis clients (``gateway.core.redis_pipe`` for async code, one per event
  loop; the synchronous one django-redis holds for Django code), with
  every key of the gateway under the ``{hz}`` hash tag so one Lua script may
  touch any of them on any Redis deployment;
* *versions*: small counters that say "what you cached is stale". A device
  change bumps that device's version, an operator change (key rotation,
  pause, routes) bumps the global epoch. The hot path reads both in one
  round trip and drops its cached copy when either moved, so a revoke is
  honoured on the very next request by every process, without a timeout.

On the embedded profile there is no Redis: versions are kept in a small file
(``var/store-epoch``) whose replacement every process notices with one
``stat``, so a ``manage.py`` command is seen by the serving process at once.
"""

from __future__ import annotations

import contextvars
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from gateway.core.errors import ServiceUnavailable
from gateway.core.files import WatchedFile, private_directory, write_private
from gateway.core.loops import PerLoop
from gateway.core.redis_pipe import PipelinedRedis

PREFIX = "{hz}"
EPOCH_KEY = f"{PREFIX}:epoch"


def key(*parts: object) -> str:
    """A namespaced key: ``key("rl", "device", id)`` -> ``{hz}:rl:device:<id>``."""
    return ":".join((PREFIX, *(str(part) for part in parts)))


def device_version_key(device_id: str) -> str:
    return key("dev", device_id, "v")


class StoreUnavailable(ServiceUnavailable):
    """Redis did not answer: fail closed (cost protection is the point)."""

    def __init__(self) -> None:
        super().__init__("Service temporarily unavailable, retry later", retry_after=5)


# --- Redis clients -----------------------------------------------------------


def _new_client() -> PipelinedRedis:
    return PipelinedRedis(str(settings.REDIS_URL), connect_timeout=1, timeout=2)


_async_clients: PerLoop[PipelinedRedis] = PerLoop(_new_client)


def async_redis() -> PipelinedRedis:
    """The running loop's Redis client (every command of async code goes through it)."""
    return _async_clients.get()


def sync_redis() -> Any:
    from django_redis import get_redis_connection

    return get_redis_connection("default")


async def close_async_clients() -> None:
    """Close the running loop's client (clients of other loops cannot be closed from here)."""
    client = _async_clients.pop()
    if client is not None:
        await client.aclose()


# --- Prefetch: one round trip for a request's reads ---------------------------

# The hot path needs a handful of small keys before it admits (the epoch, the
# device's version, the IP's block): it reads them all with one MGET and the
# guard and authentication take their values from here instead of asking
# Redis again. Each request runs in its own task, so the values never leak
# into another request.
_prefetched: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "prefetched", default=None
)


async def prefetch(keys: list[str]) -> None:
    """Read ``keys`` in one round trip for this request (no-op without Redis)."""
    if not settings.REDIS_URL or not keys:
        return
    from redis.exceptions import RedisError

    try:
        values = await async_redis().mget(keys)
    except RedisError:
        raise StoreUnavailable() from None
    _prefetched.set(dict(zip(keys, values, strict=True)))


def forget_prefetched() -> None:
    _prefetched.set(None)


async def mget(*keys: str) -> list[Any]:
    """MGET, answered from this request's prefetch when it holds every key."""
    cached = _prefetched.get()
    if cached is not None and all(name in cached for name in keys):
        return [cached[name] for name in keys]
    return await async_redis().mget(keys)


# --- Versions ----------------------------------------------------------------


def _epoch_file() -> Path:
    return Path(settings.VAR_DIR) / "store-epoch"


_epoch_watch: WatchedFile[int] | None = None


def _read_file_epoch() -> int:
    global _epoch_watch
    path = _epoch_file()
    if _epoch_watch is None or _epoch_watch.path != path:
        _epoch_watch = WatchedFile(path, int, 0)
    return _epoch_watch.value()


_file_lock = threading.Lock()


def _bump_file_epoch() -> None:
    path = _epoch_file()
    private_directory(path.parent)
    with _file_lock:
        write_private(path, str(_read_file_epoch() + 1))


_last_epoch = 0


def last_read_epoch() -> int:
    """The global epoch this process read last (each authenticated request reads it).

    The hot path passes it to the route table and the key cache so they need
    no round trip of their own; it is at most one request old.
    """
    return _last_epoch if settings.REDIS_URL else _read_file_epoch()


def stored_version(version: int) -> str:
    """What the store holds for a version read as ``version`` (0: no key at all)."""
    return str(version) if version else ""


async def read_versions(device_id: str) -> tuple[int, int]:
    """(device version, global epoch) in one round trip; raises StoreUnavailable."""
    global _last_epoch
    if not settings.REDIS_URL:
        return (0, _read_file_epoch())
    from redis.exceptions import RedisError

    try:
        device, epoch = await mget(device_version_key(device_id), EPOCH_KEY)
    except RedisError:
        raise StoreUnavailable() from None
    _last_epoch = int(epoch or 0)
    return (int(device or 0), _last_epoch)


def bump_device_version(device_id: str) -> None:
    """Make every process drop what it cached about this device (sync, for services)."""
    if not settings.REDIS_URL:
        _bump_file_epoch()
        return
    # No TTL would leak a key per device forever; a month outlives any cache.
    # (If Redis loses these keys, versions fall back to 0 and caches refresh.)
    pipe = sync_redis().pipeline()
    pipe.incr(device_version_key(device_id))
    pipe.expire(device_version_key(device_id), 30 * 86400)
    pipe.execute()


def bump_epoch() -> None:
    """Make every process drop every cached device, key and setting (sync)."""
    if not settings.REDIS_URL:
        _bump_file_epoch()
        return
    # Never a value a process may have cached before: after Redis lost the key
    # (a restart, a flush), INCR would count 1, 2, ... again, and a process that
    # cached something at epoch 2 would take a new 2 for its own. So the epoch
    # jumps to at least the wall clock in milliseconds, above every earlier one.
    sync_redis().eval(_BUMP_EPOCH, 1, EPOCH_KEY, int(time.time() * 1000), 30 * 86400)


_BUMP_EPOCH = """
local epoch = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if epoch < floor then
    epoch = floor
    redis.call('SET', KEYS[1], epoch)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return epoch
"""
