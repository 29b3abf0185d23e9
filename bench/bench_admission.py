"""Benchmark (not a test): admissions per second of the Redis backend.

    .venv/bin/python bench/bench_admission.py [--redis-url URL] [--requests N]

Measures, in the same run and with the same concurrency, plain Redis round
trips (PING, GET) and admissions (one EVALSHA each, every layer and the
budget reservation), then admit + settle; and the Redis memory an active
device costs (MEMORY USAGE of its keys), for a device seen once and for one
busy all day long (every 12-minute bucket used). Starts a private
redis-server unless --redis-url is given (whose current database is flushed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def configure(redis_url: str) -> None:
    os.environ.pop("DATABASE_URL", None)
    os.environ["REDIS_URL"] = redis_url
    os.environ["SECRET_KEY"] = "bench-only"
    for name in ("DEVICE_PER_DAY", "IP_PER_DAY", "USER_PER_DAY", "DEVICE_PER_MINUTE"):
        os.environ[f"RATE_LIMIT_PAID_{name}"] = str(10**9)
    os.environ["RATE_LIMIT_GLOBAL_PER_DAY"] = str(10**9)
    os.environ["DAILY_BUDGET_USD"] = "1000000"
    os.environ["DEVICE_DAILY_BUDGET_USD_PAID"] = "0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    import django

    django.setup()


async def rate(
    label: str, total: int, concurrency: int, operation: Callable[[int], Awaitable[object]]
) -> float:
    counter = iter(range(total))

    async def worker() -> None:
        for n in counter:
            await operation(n)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    per_second = total / (time.perf_counter() - started)
    print(f"  {label:<34} {per_second:>9,.0f} /s")
    return per_second


async def mark_live() -> None:
    from usage.backends import get_backend
    from usage.backends.base import Snapshot
    from usage.windows import DAY

    backend = get_backend()
    empty = Snapshot(DAY, {}, {}, "1970-01-01", 0, {}, None)
    await backend.take_rebuild_lock("bench", 10)
    await backend.load(empty, "bench", "bench")


def device_memory(redis: Any, device_id: str) -> int:
    from gateway.core import clock
    from usage.backends.base import device_budget_key, layer_keys
    from usage.days import budget_day

    keys = layer_keys(device_id, "unused", None)
    names = [keys["device"], keys["burst"]]
    names.append(device_budget_key(budget_day(clock.now()).isoformat(), device_id))
    return sum(redis.memory_usage(name) or 0 for name in names)


async def main(total: int, concurrencies: list[int]) -> None:
    from gateway.core import clock
    from gateway.core.store import async_redis, sync_redis
    from usage import limits

    redis = async_redis()
    await redis.execute("SET", "bench:key", "x")
    await mark_live()
    info = sync_redis().info("server")
    print(f"Redis {info['redis_version']}, Python {sys.version.split()[0]}, {total:,} each\n")

    def request(n: int) -> limits.AdmissionRequest:
        device = f"bench-{n % 1000}"
        return limits.AdmissionRequest(
            f"b{n}-{time.time_ns()}", device, "203.0.113.7", None, "paid", 1000
        )

    async def admit(n: int) -> None:
        assert (await limits.admit(request(n))).admitted

    async def admit_settle(n: int) -> None:
        admission = await limits.admit(request(n))
        assert admission.reservation is not None
        await limits.settle(admission.reservation, actual_micro_usd=500)

    await redis.execute("CONFIG", "RESETSTAT")
    for concurrency in concurrencies:
        print(f"concurrency {concurrency}:")
        ping = await rate("PING round trips", total, concurrency, lambda n: redis.execute("PING"))
        get = lambda n: redis.execute("GET", "bench:key")  # noqa: E731
        await rate("GET round trips", total, concurrency, get)
        admits = await rate("admissions (1 EVALSHA)", total, concurrency, admit)
        await rate("admission + settle (2 EVALSHA)", total // 2, concurrency, admit_settle)
        print(f"  admissions / PING round trips      {admits / ping:>9.2f}\n")

    stats = sync_redis().info("commandstats")
    print("Redis server time per call (INFO commandstats, independent of client load):")
    for command in ("ping", "get", "evalsha"):
        print(f"  {command:<10} {stats[f'cmdstat_{command}']['usec_per_call']:>8.1f} us")
    print("  (evalsha: admissions and settles together)\n")

    def busy_request(device: str) -> limits.AdmissionRequest:
        # Request ids shaped like the gateway's (they are the burst log's members).
        return limits.AdmissionRequest(
            f"req_{uuid.uuid4().hex[:24]}", device, "203.0.113.7", None, "paid", 1000
        )

    await limits.admit(busy_request("fresh"))
    once = device_memory(sync_redis(), "fresh")
    for step in range(121):  # one request in every 12-minute bucket of a day...
        clock.set_offset(step * 720)
        await limits.admit(busy_request("busy"))
    for _ in range(99):  # ...and a full paid-tier burst log (100 in the last minute)
        await limits.admit(busy_request("busy"))
    busy = device_memory(sync_redis(), "busy")
    clock.set_offset(0)
    print("Redis memory per active device (day window + burst log + budget of the day):")
    print(f"  after one request                           {once:>6,} bytes")
    print(f"  all 121 buckets used, 100 in the last minute {busy:>6,} bytes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    arguments = parser.parse_args()
    server = None
    url = arguments.redis_url
    if url is None:
        from tests.support.processes import PrivateRedis

        server = PrivateRedis().start()
        url = server.url
    try:
        configure(url)
        from gateway.core.store import sync_redis

        sync_redis().flushdb()
        asyncio.run(main(arguments.requests, arguments.concurrency))
    finally:
        if server is not None:
            server.stop()
