"""Benchmark (not a test): CPU per upstream call, the gateway's client against a bare one.

    .venv/bin/python bench/bench_upstream_client.py [--upstream-url URL] [--calls N]

Times ``gateway.proxy.upstream.complete`` and ``gateway.proxy.upstream.stream`` (OpenAI
route, key given: no key store, no proxy) under uvloop, at concurrency 1 and
16, against the fast fake upstream (``bench/bench_upstream.py``, started
here on a free port unless --upstream-url names a running one). In the same
run, the same requests through a bare ``httpx.AsyncClient`` on the aiohttp
transport, as the floor (``bench_floor``) sends them: the difference is what
the gateway's upstream layer costs (adapters, SSE decoding, error mapping).
CPU is this process's (the fake upstream runs in its own); run it on a quiet
machine and compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPENAI_KEY = "sk-fake-openai-0123456789abcdef"  # bench_upstream's
PROMPT = {"role": "user", "content": "Say hello to the benchmark"}
# The provider's end-user id the proxy would send (devices.tokens.end_user_id's shape).
END_USER = "0123456789abcdef0123456789abcdef"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_upstream() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "bench.bench_upstream", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the fake upstream did not start")


def configure(upstream_url: str) -> None:
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    os.environ["OPENAI_BASE_URL"] = f"{upstream_url}/openai/v1"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    import django

    django.setup()


async def cpu_per_call(
    operation: Callable[[], Awaitable[None]], calls: int, concurrency: int
) -> str:
    async def worker(count: int) -> None:
        for _ in range(count):
            await operation()

    await asyncio.gather(*(worker(20) for _ in range(concurrency)))  # warm: connections, caches
    each = calls // concurrency
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(each) for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = each * concurrency
    return f"{cpu / done * 1e6:7.0f} us CPU  {done / wall:7,.0f} calls/s"


async def main(upstream_url: str, calls: int) -> None:
    import httpx
    from httpx_aiohttp import AiohttpTransport

    from gateway.proxy import upstream
    from gateway.proxy.keys import ProviderKey
    from gateway.proxy.providers.base import Meter, StreamDone
    from gateway.proxy.routes import Route
    from gateway.proxy.validation import parse_chat_request

    key = ProviderKey("openai", OPENAI_KEY)
    route = Route("bench", "openai", "gpt-4o", Decimal(1), Decimal(1), frozenset({"paid"}), 0)
    body = {"model": "bench", "messages": [PROMPT], "max_tokens": 50}
    plain = parse_chat_request(json.dumps(body).encode())
    streamed = parse_chat_request(json.dumps({**body, "stream": True}).encode())

    async def gateway_complete() -> None:
        meter = Meter()
        outbound = upstream.outbound(route, plain, max_tokens=50, end_user=END_USER)
        await upstream.complete(outbound, key=key, meter=meter)
        assert meter.reported is not None and meter.reported.is_reported

    async def gateway_stream() -> None:
        meter = Meter()
        outbound = upstream.outbound(route, streamed, max_tokens=50, end_user=END_USER)
        events = [event async for event in upstream.stream(outbound, key=key, meter=meter)]
        assert isinstance(events[-1], StreamDone)
        assert meter.reported is not None and meter.reported.is_reported

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    bare = httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=30.0)
    url = f"{upstream_url}/openai/v1/chat/completions"
    headers = {"authorization": f"Bearer {OPENAI_KEY}", "content-type": "application/json"}
    plain_bytes = json.dumps(body).encode()
    stream_bytes = json.dumps({**body, "stream": True}).encode()

    async def bare_complete() -> None:
        response = await bare.post(url, content=plain_bytes, headers=headers)
        assert response.status_code == 200

    async def bare_stream() -> None:
        async with bare.stream("POST", url, content=stream_bytes, headers=headers) as response:
            async for _ in response.aiter_raw():
                pass

    cases = [
        ("complete: gateway", gateway_complete),
        ("complete: bare httpx", bare_complete),
        ("stream:   gateway", gateway_stream),
        ("stream:   bare httpx", bare_stream),
    ]
    print(f"Python {sys.version.split()[0]}, uvloop, {calls:,} calls each\n")
    for concurrency in (1, 16):
        print(f"concurrency {concurrency}:")
        for label, operation in cases:
            print(f"  {label:<22} {await cpu_per_call(operation, calls, concurrency)}")
        print()
    await bare.aclose()
    await upstream.close_clients()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-url", help="a running bench_upstream (default: start one)")
    parser.add_argument("--calls", type=int, default=4000)
    args = parser.parse_args()
    process = None
    upstream_url = args.upstream_url
    if upstream_url is None:
        process, upstream_url = start_upstream()
    try:
        configure(upstream_url)
        import uvloop

        uvloop.run(main(upstream_url, args.calls))
    finally:
        if process is not None:
            process.terminate()
            process.wait()
