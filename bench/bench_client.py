"""A small, fast HTTP/1.1 load client that reads whole SSE streams.

wrk measures non-streamed requests; for streams the benchmark needs the time
to the first body byte as well as the time to the end of the stream, so this
client does both with raw asyncio + httptools under uvloop (no HTTP library
in the loop): C keep-alive connections, each sending the same POST back to
back for D seconds. A response counts as good when its status is 200 and, for
a stream, its body ends with ``data: [DONE]``; anything else is an error.

Prints one line: ``BENCH_JSON {"requests", "errors", "seconds", "rps",
"p50_us", "p99_us", "ttfb_p50_us", "ttfb_p99_us"}``. TTFB here is the time
from writing the request to the first byte of the response body (for a
stream, its first SSE event), which is what a chat client waits for.

Run: ``python -m bench.bench_client --url http://127.0.0.1:9100/openai/v1/chat/completions
--concurrency 16 --seconds 5 --stream [--authorization "Bearer ..."]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import cast
from urllib.parse import urlsplit

import httptools

_DONE = b"data: [DONE]"


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, float, bytes]] | None = None
        self.first_body_at = 0.0
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, request: bytes) -> asyncio.Future[tuple[int, float, bytes]]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.first_body_at = 0.0
        self.tail = b""
        self.transport.write(request)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_body(self, body: bytes) -> None:
        if not self.first_body_at:
            self.first_body_at = time.perf_counter()
        self.tail = (self.tail + body)[-64:]

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            status = self.parser.get_status_code()
            self.waiter.set_result((status, self.first_body_at, self.tail))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("connection closed"))

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.transport.close()


def build_request(url: str, body: bytes, authorization: str) -> bytes:
    parts = urlsplit(url)
    head = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if authorization:
        head.append(f"Authorization: {authorization}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _worker(
    host: str,
    port: int,
    request: bytes,
    deadline: float,
    stream: bool,
    results: dict[str, list[float]],
) -> None:
    loop = asyncio.get_running_loop()
    connection: _Connection | None = None
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            if connection is None or connection.transport.is_closing():
                _, connection = await loop.create_connection(_Connection, host, port)
            status, first_body_at, tail = await connection.send(request)
        except (OSError, httptools.HttpParserError):
            results["errors"].append(1)
            connection = None
            await asyncio.sleep(0.01)  # a refusing target must not turn this into a busy loop
            continue
        finished = time.perf_counter()
        if status != 200 or (stream and _DONE not in tail):
            results["errors"].append(1)
            continue
        results["latency"].append(finished - started)
        results["ttfb"].append((first_body_at or finished) - started)
    if connection is not None:
        connection.transport.close()


def _percentile(values: list[float], fraction: float) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
    return int(ordered[index] * 1e6)


async def run(
    url: str, body: bytes, authorization: str, concurrency: int, seconds: float, stream: bool
) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = build_request(url, body, authorization)
    results: dict[str, list[float]] = {"latency": [], "ttfb": [], "errors": []}
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(_worker(host, port, request, deadline, stream, results) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - started
    latency, ttfb = results["latency"], results["ttfb"]
    return {
        "requests": len(latency),
        "errors": len(results["errors"]),
        "seconds": round(elapsed, 3),
        "rps": round(len(latency) / elapsed, 1),
        "p50_us": _percentile(latency, 0.50),
        "p99_us": _percentile(latency, 0.99),
        "ttfb_p50_us": _percentile(ttfb, 0.50),
        "ttfb_p99_us": _percentile(ttfb, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("--authorization", default="")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--stream", action="store_true", help="expect SSE ending in [DONE]")
    args = parser.parse_args()
    import uvloop

    summary = uvloop.run(
        run(
            args.url,
            args.body.encode(),
            args.authorization,
            args.concurrency,
            args.seconds,
            args.stream,
        )
    )
    print("BENCH_JSON " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
