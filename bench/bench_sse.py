"""Benchmark (not a test): the gateway's SSE decoder vs httpx-sse on a provider's stream.

    /tmp/libs-venv/bin/python bench/bench_sse.py [--rounds R]

The gateway reads a provider's stream as bytes (``response.aiter_bytes()``),
cuts it into events with ``gateway.proxy.providers.base.SSEDecoder`` and
hands each event to the provider's translator, which parses its JSON,
meters it and yields an OpenAI chunk that the endpoint serialises again.
httpx-sse would take the place of the decoder: ``EventSource(response)
.aiter_sse()`` decodes text (``aiter_text``), splits lines
(``SSELineDecoder``) and builds one ``ServerSentEvent`` per event
(``SSEDecoder``).

Measured on OpenAI-shaped chunks (about 230 bytes each), read from an
in-memory ``httpx.Response`` so no network time is counted:

* one event per read (a provider streaming token by token),
* sixteen events per read (a burst, or a provider that buffers),
* every event split in two reads;

for the decoders alone (synchronous) and through the async iterators each
would be used with. For scale, the JSON work the translator and the
endpoint do per event anyway (``orjson.loads`` + ``orjson.dumps``).
Figures: microseconds per event, median of ``--rounds`` runs.

Needs ``httpx-sse`` (not in requirements*.txt); without it the script says
so and exits with status 0 having measured nothing.
"""

from __future__ import annotations

import asyncio
import codecs
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import orjson

# Run as a script (``python bench/bench_sse.py``): the project's root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.libraries import embedded_django, medians, parser, per_item, skipped

try:
    import httpx_sse
    from httpx_sse._decoders import SSEDecoder as LibDecoder
    from httpx_sse._decoders import SSELineDecoder
except ImportError:
    httpx_sse = None

EVENTS = 20_000


def event_bytes(n: int) -> bytes:
    chunk = {
        "id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012",
        "object": "chat.completion.chunk",
        "created": 1_765_000_000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_abcdef0123",
        "choices": [
            {
                "index": 0,
                "delta": {"content": f" token{n % 97}"},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        "usage": None,
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def reads(shape: str) -> list[bytes]:
    events = [event_bytes(n) for n in range(EVENTS)]
    if shape == "1 event per read":
        return events
    if shape == "16 events per read":
        return [b"".join(events[i : i + 16]) for i in range(0, EVENTS, 16)]
    halves = []
    for event in events:
        middle = len(event) // 2
        halves += [event[:middle], event[middle:]]
    return halves


def ours_sync(chunks: list[bytes]) -> int:
    from gateway.proxy.providers.base import SSEDecoder

    decoder = SSEDecoder()
    count = 0
    for raw in chunks:
        count += len(decoder.feed(raw))
    return count


def lib_sync(chunks: list[bytes]) -> int:
    text = codecs.getincrementaldecoder("utf-8")("replace")
    lines = SSELineDecoder()
    decoder = LibDecoder()
    count = 0
    for raw in chunks:
        for line in lines.decode(text.decode(raw)):
            if decoder.decode(line.rstrip("\n")) is not None:
                count += 1
    return count


def response(chunks: list[bytes]) -> httpx.Response:
    async def body() -> AsyncIterator[bytes]:
        for raw in chunks:
            yield raw

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


async def ours_async(chunks: list[bytes]) -> int:
    from gateway.proxy.providers.base import SSEDecoder

    decoder = SSEDecoder()
    count = 0
    async for raw in response(chunks).aiter_bytes():  # as gateway/proxy/upstream.py: stream
        count += len(decoder.feed(raw))
    return count


async def lib_async(chunks: list[bytes]) -> int:
    count = 0
    async for _ in httpx_sse.EventSource(response(chunks)).aiter_sse():
        count += 1
    return count


def json_work(chunks: list[bytes]) -> int:
    payloads = [event[6:-2] for event in (event_bytes(n) for n in range(EVENTS))]
    for payload in payloads:
        chunk = orjson.loads(payload)
        orjson.dumps(chunk)
    return EVENTS


def timed(
    function: Callable[[list[bytes]], object], chunks: list[bytes], loop: asyncio.AbstractEventLoop
) -> Callable[[], float]:
    """A measure: ``function`` over ``chunks``, microseconds per event."""

    def run() -> None:
        result = function(chunks)
        if asyncio.iscoroutine(result):
            result = loop.run_until_complete(result)
        assert result == EVENTS, (function.__name__, result)

    return lambda: per_item(run, EVENTS)


# Each httpx-sse variant against the gateway's own code doing the same.
BASES = {
    "httpx-sse line + event decoders": "SSEDecoder.feed (ours)",
    "httpx-sse EventSource.aiter_sse": "aiter_bytes + SSEDecoder (ours)",
}


def main() -> int:
    arguments = parser(__doc__, rounds=9).parse_args()
    if httpx_sse is None:
        return skipped("bench_sse", "httpx-sse")
    embedded_django("bench-sse")
    from importlib.metadata import version

    print(
        f"httpx-sse {version('httpx-sse')}, httpx {httpx.__version__}, Python "
        f"{sys.version.split()[0]}; {EVENTS:,} events of ~{len(event_bytes(0))} bytes, "
        f"median of {arguments.rounds} runs, us per event"
    )
    variants = {
        "SSEDecoder.feed (ours)": ours_sync,
        "httpx-sse line + event decoders": lib_sync,
        "aiter_bytes + SSEDecoder (ours)": ours_async,
        "httpx-sse EventSource.aiter_sse": lib_async,
        "for scale: orjson loads + dumps": json_work,
    }
    loop = asyncio.new_event_loop()
    for shape in ("1 event per read", "16 events per read", "event split in 2 reads"):
        chunks = reads(shape)
        measures = {name: timed(function, chunks, loop) for name, function in variants.items()}
        results = medians(arguments.rounds, measures)
        print(f"{shape}:")
        for name, value in results.items():
            base = BASES.get(name)
            ratio = f"{value / results[base]:>7.2f} x {base}" if base else ""
            print(f"  {name:<34}{value:>7.2f} us {ratio}")
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
