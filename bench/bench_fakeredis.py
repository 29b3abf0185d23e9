"""Benchmark (not a test): one admission on the in-process backend vs the Lua scripts on fakeredis.

    /tmp/libs-venv/bin/python bench/bench_fakeredis.py [--admissions N] [--rounds R]

The question (README, *Libraries considered*): could the embedded profile run
the production Lua scripts (``usage/backends/lua``) on fakeredis instead of
its Python twin (``usage/backends/memory.py``)? Each variant admits and then
settles the same plans (every layer of a device with an owner, a budget
reservation), one request at a time, timing every call; a round measures
every variant, rounds repeat, and the report gives each variant's median
call over the rounds and its ratio to the in-process backend in the same
round (medians of those ratios), because this machine is shared and noisy.

Variants:

* ``memory``: ``MemoryBackend`` as the embedded profile runs it today.
* ``fakeredis sync``: ``RedisBackend`` unchanged, its commands sent to a
  ``fakeredis.FakeRedis`` of this process (the cheapest way to run the Lua:
  no socket, no event-loop round trip).
* ``fakeredis async``: the same through ``fakeredis.FakeAsyncRedis``, as an
  asyncio gateway would hold it.
* ``fakeredis tcp``: the gateway's own pipelined client against fakeredis's
  ``TcpFakeServer`` in a thread of this process (how several processes
  could share one fakeredis).
* ``redis-server``: the same client against a private redis-server, for
  scale (skipped when none is installed).

Needs ``fakeredis[lua]`` (it is not in requirements*.txt); without it the
script says so and exits with status 0 having measured nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Run as a script (``python bench/bench_fakeredis.py``): the project's root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.libraries import embedded_django, parser, skipped

try:
    import fakeredis
    import lupa  # noqa: F401  (fakeredis runs Lua only with it)
except ImportError:
    fakeredis = None


def configure() -> None:
    """The embedded profile, with limits nobody reaches and a private VAR_DIR."""
    limits = {
        f"RATE_LIMIT_PAID_{name}": str(10**9)
        for name in ("DEVICE_PER_DAY", "IP_PER_DAY", "USER_PER_DAY", "DEVICE_PER_MINUTE")
    }
    embedded_django(
        "bench-fakeredis",
        {
            **limits,
            "RATE_LIMIT_GLOBAL_PER_DAY": str(10**9),
            "DAILY_BUDGET_USD": "1000000",
            "DEVICE_DAILY_BUDGET_USD_PAID": "1000",
            "MAX_CONCURRENT_REQUESTS_PAID": "100",
        },
    )


class SyncClient:
    """``PipelinedRedis``'s three calls over a synchronous in-process fakeredis."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def execute(self, *args: Any) -> Any:
        return self.client.execute_command(*args)

    async def mget(self, keys: Sequence[str]) -> list[Any]:
        return list(self.client.mget(keys))

    async def evalsha(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return self.client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.client.script_load(script.source)
            return self.client.evalsha(script.sha, len(keys), *keys, *args)


class AsyncClient(SyncClient):
    """The same over ``fakeredis.FakeAsyncRedis``."""

    async def execute(self, *args: Any) -> Any:
        return await self.client.execute_command(*args)

    async def mget(self, keys: Sequence[str]) -> list[Any]:
        return list(await self.client.mget(keys))

    async def evalsha(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return await self.client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.client.script_load(script.source)
            return await self.client.evalsha(script.sha, len(keys), *keys, *args)


class Variant:
    """One backend and the client its Redis commands go to (None: in-process backend)."""

    def __init__(self, name: str, backend: Any, client: Any = None) -> None:
        self.name = name
        self.backend = backend
        self.client = client
        self.admit_ns: list[float] = []  # median admission per round
        self.settle_ns: list[float] = []

    def activate(self) -> None:
        import usage.backends.redis as redis_backend

        if self.client is not None:
            redis_backend.async_redis = lambda: self.client  # type: ignore[attr-defined]


async def make_live(variant: Variant) -> None:
    from usage.backends.base import Snapshot
    from usage.windows import DAY

    variant.activate()
    empty = Snapshot(DAY, {}, {}, "1970-01-01", 0, {}, None)
    assert await variant.backend.take_rebuild_lock("bench", 10)
    assert await variant.backend.load(empty, "bench", "bench")


async def measure(variant: Variant, admissions: int, round_number: int) -> None:
    """Admit then settle ``admissions`` requests one by one, timing each call."""
    from gateway.core import clock
    from usage import limits

    variant.activate()
    backend = variant.backend
    admit_times: list[int] = []
    settle_times: list[int] = []
    for n in range(admissions):
        request = limits.AdmissionRequest(
            request_id=f"req_{variant.name}_{round_number}_{n}",
            device_id=f"dev_{n % 50}",
            ip="203.0.113.7",
            user_id=f"owner_{n % 10}",
            tier="paid",
            reserve_micro_usd=2_000,
        )
        plan = limits._plan(request, now=clock.now())
        started = time.perf_counter_ns()
        outcome = await backend.admit(plan)
        admitted = time.perf_counter_ns()
        assert outcome.status == "admitted", (variant.name, outcome)
        reservation = limits._admission(plan, outcome).reservation
        assert reservation is not None
        terms = limits._settle_terms(reservation)
        settling = time.perf_counter_ns()
        settled = await backend.settle(reservation, 1_000, terms)
        done = time.perf_counter_ns()
        assert settled is not None and settled.is_first, (variant.name, settled)
        admit_times.append(admitted - started)
        settle_times.append(done - settling)
    variant.admit_ns.append(statistics.median(admit_times))
    variant.settle_ns.append(statistics.median(settle_times))


def start_redis_server() -> tuple[Any, str] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.kill()
    return None


async def main(admissions: int, rounds: int) -> None:
    from gateway.core.redis_pipe import PipelinedRedis
    from usage.backends.memory import MemoryBackend
    from usage.backends.redis import RedisBackend

    tcp_server = fakeredis.TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    threading.Thread(target=tcp_server.serve_forever, daemon=True).start()
    tcp_port = tcp_server.server_address[1]
    variants = [
        Variant("memory", MemoryBackend()),
        Variant("fakeredis sync", RedisBackend(), SyncClient(fakeredis.FakeRedis())),
        Variant("fakeredis async", RedisBackend(), AsyncClient(fakeredis.FakeAsyncRedis())),
        Variant(
            "fakeredis tcp",
            RedisBackend(),
            PipelinedRedis(f"redis://127.0.0.1:{tcp_port}/0", connect_timeout=1, timeout=5),
        ),
    ]
    server = start_redis_server()
    if server is not None:
        client = PipelinedRedis(server[1], connect_timeout=1, timeout=5)
        variants.append(Variant("redis-server", RedisBackend(), client))
    try:
        for variant in variants:
            await make_live(variant)
            await measure(variant, min(admissions, 200), -1)  # warm-up: scripts, caches
            variant.admit_ns.clear()
            variant.settle_ns.clear()
        for round_number in range(rounds):
            order = (
                variants[round_number % len(variants) :] + variants[: round_number % len(variants)]
            )
            for variant in order:
                await measure(variant, admissions, round_number)
    finally:
        tcp_server.shutdown()
        tcp_server.server_close()
        if server is not None:
            server[0].kill()
    report(variants, admissions, rounds)


def report(variants: list[Variant], admissions: int, rounds: int) -> None:
    base = variants[0]
    print(
        f"fakeredis {fakeredis.__version__ if hasattr(fakeredis, '__version__') else '?'}, "
        f"Python {sys.version.split()[0]}; {rounds} rounds x {admissions} admissions + settles, "
        "one at a time; figures: median over rounds of each round's median call"
    )
    print(f"{'variant':<18}{'admit us':>10}{'x memory':>10}{'settle us':>11}{'x memory':>10}")
    for variant in variants:
        admit = statistics.median(variant.admit_ns) / 1000
        settle = statistics.median(variant.settle_ns) / 1000
        admit_ratio = statistics.median(
            a / b for a, b in zip(variant.admit_ns, base.admit_ns, strict=True)
        )
        settle_ratio = statistics.median(
            a / b for a, b in zip(variant.settle_ns, base.settle_ns, strict=True)
        )
        print(
            f"{variant.name:<18}{admit:>10.1f}{admit_ratio:>10.1f}{settle:>11.1f}{settle_ratio:>10.1f}"
        )
    print("per-round admit medians (us):")
    for variant in variants:
        print(f"  {variant.name:<18}" + " ".join(f"{v / 1000:7.1f}" for v in variant.admit_ns))


def run(arguments: argparse.Namespace) -> int:
    if fakeredis is None:
        status = skipped("bench_fakeredis", "fakeredis with Lua")
        print("  pip install 'fakeredis[lua]' into an experiment venv (see docs/benchmarks.md)")
        return status
    configure()
    asyncio.run(main(arguments.admissions, arguments.rounds))
    return 0


if __name__ == "__main__":
    command_line = parser(__doc__, rounds=5)
    command_line.add_argument("--admissions", type=int, default=2000)
    sys.exit(run(command_line.parse_args()))
