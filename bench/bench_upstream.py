"""A minimal, fast fake OpenAI upstream for the benchmark.

``tests/fakes/provider.py`` is an aiohttp application that records every
request and speaks three wire formats; that costs more per request than the
proxies it would be measured through, so the benchmark uses this one instead:
raw asyncio + httptools under uvloop, canned answers, nothing recorded beyond
two counters. It answers ``POST <anything>/chat/completions`` with the
Bearer key ``sk-fake-openai-0123456789abcdef`` (the test fake's OpenAI key):

* a ``chat.completion`` with ``usage`` (Content-Length body), or, when the body
  has ``"stream": true``, an SSE stream of OpenAI chunks in chunked encoding:
  a role chunk, three content chunks, a finish chunk, a usage chunk (``choices:
  []``, as OpenAI sends for ``stream_options.include_usage``), ``[DONE]``;
* a ``[[fault:slow:seconds=N]]`` directive anywhere in the body delays the
  answer N seconds (as in the test fake), so a request can be held in flight;
* ``GET /_stats`` -> ``{"requests": n, "inflight": k}`` (chat completions
  received, and those not answered yet).

Run: ``python -m bench.bench_upstream --port 9100``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from typing import cast

import httptools

OPENAI_KEY = "sk-fake-openai-0123456789abcdef"
_AUTHORIZATION = b"Bearer " + OPENAI_KEY.encode()
_STREAM_FLAG = re.compile(rb'"stream"\s*:\s*true')
_SLOW = re.compile(rb"\[\[fault:slow(?::seconds=([0-9.]+))?\]\]")

USAGE = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}


def _http(status: bytes, content_type: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n"
    return head % (status, content_type, len(body)) + body


def _completion_response() -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
        "system_fingerprint": "fp_bench",
    }
    return _http(b"200 OK", b"application/json", json.dumps(body).encode())


def _stream_response() -> bytes:
    def chunk(choices: list[dict[str, object]], usage: object = None) -> dict[str, object]:
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "gpt-4o-2024-08-06",
            "choices": choices,
            "usage": usage,
        }

    def delta(content: dict[str, str], finish: str | None = None) -> list[dict[str, object]]:
        return [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}]

    events = [
        chunk(delta({"role": "assistant", "content": ""})),
        chunk(delta({"content": "Hello"})),
        chunk(delta({"content": " from the"})),
        chunk(delta({"content": " bench upstream."})),
        chunk(delta({}, "stop")),
        chunk([], USAGE),
    ]
    datas = [b"data: " + json.dumps(event).encode() + b"\n\n" for event in events]
    datas.append(b"data: [DONE]\n\n")
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    # One HTTP chunk per SSE event, as a real provider flushes them.
    return head + b"".join(b"%x\r\n%s\r\n" % (len(data), data) for data in datas) + b"0\r\n\r\n"


COMPLETION = _completion_response()
STREAM = _stream_response()
UNAUTHORIZED = _http(
    b"401 Unauthorized",
    b"application/json",
    b'{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error",'
    b'"param":null,"code":"invalid_api_key"}}',
)
NOT_FOUND = _http(b"404 Not Found", b"application/json", b'{"error":{"message":"not found"}}')


class Stats:
    requests = 0
    inflight = 0


class UpstreamProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast.
        self.transport = cast(asyncio.Transport, transport)
        self.parser = httptools.HttpRequestParser(self)
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.authorization = b""
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self.authorization = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, body, authorization = self.url, b"".join(self.body), self.authorization
        keep_alive = self.parser.should_keep_alive()
        self._reset()
        if url.endswith(b"/chat/completions"):
            answer = self._chat(body, authorization)
            Stats.requests += 1
        elif url == b"/_stats":
            stats = {"requests": Stats.requests, "inflight": Stats.inflight}
            answer = _http(b"200 OK", b"application/json", json.dumps(stats).encode())
        else:
            answer = NOT_FOUND
        slow = _SLOW.search(body) if answer is not UNAUTHORIZED else None
        if slow is None:
            self._answer(answer, keep_alive)
            return
        Stats.inflight += 1
        delay = float(slow.group(1) or 3)
        asyncio.get_running_loop().call_later(delay, self._answer_late, answer, keep_alive)

    def _chat(self, body: bytes, authorization: bytes) -> bytes:
        if authorization != _AUTHORIZATION:
            return UNAUTHORIZED
        return STREAM if _STREAM_FLAG.search(body) else COMPLETION

    def _answer_late(self, answer: bytes, keep_alive: bool) -> None:
        Stats.inflight -= 1
        if not self.transport.is_closing():
            self._answer(answer, keep_alive)

    def _answer(self, answer: bytes, keep_alive: bool) -> None:
        self.transport.write(answer)
        if not keep_alive:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
