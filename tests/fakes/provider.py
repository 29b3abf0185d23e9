"""A fake LLM provider: a real aiohttp HTTP server on 127.0.0.1 that speaks the
OpenAI Chat Completions and Anthropic Messages wire formats.

Routes (``url`` is ``http://127.0.0.1:<port>``):

* ``POST /openai/v1/chat/completions``  OpenAI      ``Authorization: Bearer <keys["openai"]>``
* ``POST /do/v1/chat/completions``      DigitalOcean (OpenAI format)
  ``Authorization: Bearer <keys["digitalocean"]>``
* ``POST /anthropic/v1/messages``       Anthropic   ``x-api-key: <keys["anthropic"]>`` (or, while
  ``anthropic_accepts_bearer``, ``Authorization: Bearer <key>``) + an ``anthropic-version`` header
* ``POST /openai/v1/embeddings``, ``POST /do/v1/embeddings``  OpenAI's embeddings (same keys):
  one deterministic vector per input of ``dimensions`` floats (default 8), base64 when
  ``encoding_format`` asks, ``usage.prompt_tokens`` counted as the chat input is (words,
  or with ``input_billing = "bytes"`` the UTF-8 bytes of the input texts, never the JSON
  around them). ``embeddings_report_usage = False`` leaves ``usage`` out (``reset()``
  restores it). Faults apply as for a non-streamed chat; ``malformed`` answers without
  ``data``; the stream faults and ``broken_json`` answer normally.

What the fake model answers is described in ``provider_formats``. Faults come
from ``fail_next()`` or from a ``[[fault:NAME]]`` / ``[[fault:NAME:k=v,k=v]]``
directive in any message text (a directive wins and leaves the queue alone):

==================  ============================================================
``http_500``        500, provider-shaped server error            (``message``)
``http_502``        502 with a Cloudflare-style HTML body (as the real edges send)
``http_429``        429 rate-limit error + ``Retry-After``       (``retry_after``, default 1)
``http_529``        529; Anthropic ``overloaded_error``, OpenAI-shaped on OpenAI routes
``http_503``        503 provider-shaped "overloaded" error + ``Retry-After`` (``retry_after``,
                    default 1)
``http_400``        400 invalid request: context length exceeded (``message``)
``http_401``        401, the same body as a wrong key
``non_json``        200 ``text/plain`` garbage
``malformed``       200 JSON without ``choices`` / ``content`` (also for stream requests)
``slow``            sleep ``seconds`` (default 3) then answer normally
``hold``            wait until ``release_held()`` (at most ``seconds``, default 30), then answer
                    normally: requests that must overlap, without guessing how long they take;
                    ``hold()`` holds again the ones that come after
``drop``            close the TCP connection without any response
``drop_mid_stream`` stream: abort the connection after ``after`` content chunks (default 2);
                    non-stream: send half of the JSON body, then abort
``slow_chunks``     stream: sleep ``delay`` seconds (default 0.1) before each content chunk
``error_mid_stream`` stream: after ``after`` content chunks (default 2) send the provider's
                    in-stream error event and end the stream
``broken_json``     200 ``application/json`` (also for stream requests) whose body holds
                    the provider's ``usage`` near its start - OpenAI
                    ``"usage":{"prompt_tokens":P,"completion_tokens":C,"total_tokens":P+C}``,
                    Anthropic ``"usage":{"input_tokens":P,"output_tokens":C}`` - then breaks
                    by ``kind``: ``deep`` (default) a value nested 1100 arrays deep (orjson
                    stops at 1024), ``surrogate`` a lone ``\\ud800`` escape in the text
                    (strict parsers refuse it, Python's json does not), ``truncated`` the body
                    cut halfway after the usage, Content-Length matching. ``prompt_tokens`` /
                    ``completion_tokens`` set P / C (default: the answer's own counts)
==================  ============================================================

Content chunks are the ones carrying an output token: reasoning pieces count, so
``after=`` can cut a stream in the middle of its reasoning.

Faults apply after authentication: a request with a wrong key gets its 401 and
consumes nothing from the queue. Every request, refused or not, is recorded in
``requests`` before it is answered. How each streamed answer ended on the fake's
side is appended to ``stream_endings``: ``"completed"``, or the exception that
stopped it (``"CancelledError"`` when the client hung up). ``drop_mid_stream`` and
``error_mid_stream`` end their streams on purpose: ``"completed"``.

Keys
----
``keys[provider]`` is each provider's key; ``extra_keys[provider]`` (a list, empty by
default) holds more keys it accepts, as a provider accepts every key of an account.
``fail_key(key, fault, **params)`` gives every request authenticated with that key the
fault (any of the table's, e.g. ``http_429`` with ``retry_after``, or ``http_401`` for a
revoked key) until ``reset()``: a key fault comes before a directive and the queue, and
consumes nothing from the queue. Requests record their headers, so a test sees which key
each request used. ``reset()`` restores ``keys`` and clears ``extra_keys`` and key faults.

Bills
-----
``bills`` (a ``Bill`` per request, kept while ``record`` is on, cleared by ``reset()``;
``wait_for_bills(n)`` waits for streams whose handler is still ending) says what the
provider would charge. A request is billed when it passed authentication, its body is
valid, and its fault (if any) is one after which a provider has done the work: none,
``slow``, ``hold``, ``slow_chunks``, ``drop_mid_stream``, ``error_mid_stream``,
``malformed`` (the provider's own 200, even without usage) and ``broken_json``. Not billed:
``http_*`` (refused before any model ran), ``drop`` and ``non_json`` (an edge or network
failure that says nothing of the model), refused or invalid requests, unknown directives.

* ``input_tokens``: what the fake reports: words, or the raw body's length in bytes while
  ``input_billing = "bytes"`` (``reset()`` restores ``"words"``) or for a request with
  ``[[bill:bytes]]``; for ``broken_json`` the P it sent.
* ``output_tokens``: non-streamed, the whole answer (for ``broken_json`` the C it sent),
  even when the client left while it was ``slow`` or held. Streamed: the hidden reasoning
  plus the content chunks (reasoning, text or tool-argument pieces) handed to the open
  connection before the stream ended however it ended - the one in flight when the client
  hung up included, so it can exceed what the client read; once every content chunk went
  out, the reported usage (which holds the tokens of a stop sequence never shown). A
  stream request cancelled before its stream began (during ``slow`` / ``hold``) bills its
  hidden reasoning only.
* ``ending``: ``"answered"`` for one JSON body, the exception name if the handler was
  stopped before it answered; for streams the same value as ``stream_endings``.
* ``label``: the first ``[[id:LABEL]]`` in any text of the request, else None.
* ``body_bytes``: the raw request body's length (also ``RecordedRequest.size``).

Standalone: ``python -m tests.fakes.provider --port 9100 [--host 127.0.0.1] [--record]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import provider_formats as fmt

DEFAULT_KEYS: dict[str, str] = {
    "openai": "sk-fake-openai-0123456789abcdef",
    "digitalocean": "dop_v1_fake0123456789abcdef",
    "anthropic": "sk-ant-fake-0123456789abcdef",
}

FAULTS: frozenset[str] = frozenset(
    {
        "http_500",
        "http_502",
        "http_429",
        "http_529",
        "http_503",
        "http_400",
        "http_401",
        "non_json",
        "malformed",
        "slow",
        "hold",
        "drop",
        "drop_mid_stream",
        "slow_chunks",
        "error_mid_stream",
        "broken_json",
    }
)
# Faults after which the provider has done the work and bills it. The others refuse the
# request before any model ran (http_*), or look like an edge or network failure that
# tells nothing of the model (drop, non_json).
BILLED_FAULTS: frozenset[str] = frozenset(
    {
        "slow",
        "hold",
        "drop_mid_stream",
        "slow_chunks",
        "error_mid_stream",
        "broken_json",
        "malformed",
    }
)
# Faults answered with one JSON body even when the request asked for a stream.
_JSON_FAULTS: frozenset[str] = frozenset({"broken_json", "malformed"})
PROVIDERS: tuple[str, ...] = ("openai", "digitalocean", "anthropic")
_EMBEDDINGS_PATHS: frozenset[str] = frozenset({"/openai/v1/embeddings", "/do/v1/embeddings"})
_PREFIXES: dict[str, str] = {
    "/openai/": "openai",
    "/do/": "digitalocean",
    "/anthropic/": "anthropic",
}


@dataclass(frozen=True)
class RecordedRequest:
    provider: str  # "openai" | "digitalocean" | "anthropic" | "unknown"
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None when absent / not JSON
    received_at: float  # time.time()
    size: int  # bytes of the raw body


@dataclass(frozen=True)
class Bill:
    """What the provider would bill for one request it answered (see ``bills``)."""

    provider: str
    label: str | None  # the first [[id:LABEL]] in any text of the request
    input_tokens: int
    output_tokens: int
    ending: str  # "answered" (one JSON body), or as in stream_endings
    body_bytes: int


@dataclass
class _Meter:
    """The bill of a request being answered; streams update it as pieces go out."""

    input_tokens: int
    output_tokens: int
    ending: str = "answered"
    pieces_out: int = 0  # content events handed to the open connection


@dataclass
class _QueuedFault:
    name: str
    provider: str | None
    params: dict[str, Any]
    remaining: int


@dataclass
class _Fault:
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def number(self, key: str, default: float) -> float:
        value = fmt.coerce(self.params.get(key, default))
        return float(value) if isinstance(value, int | float) else default


class FakeProvider:
    """Fake OpenAI / DigitalOcean / Anthropic endpoint for tests and benchmarks."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, record: bool = True) -> None:
        self.host = host
        self.port = port
        self.record = record
        self.keys: dict[str, str] = dict(DEFAULT_KEYS)
        self.extra_keys: dict[str, list[str]] = {}
        # The published docs say ``x-api-key``; anthropic-sdk-python 2.x sends its api_key as
        # ``Authorization: Bearer``. Accept both unless a test wants x-api-key strictly.
        self.anthropic_accepts_bearer = True
        self.requests: list[RecordedRequest] = []
        self.stream_endings: list[str] = []
        self.bills: list[Bill] = []
        self._input_billing = "words"
        self.embeddings_report_usage = True
        self._lock = threading.Lock()
        self._faults: list[_QueuedFault] = []
        self._key_faults: dict[str, _Fault] = {}
        self._released = threading.Event()
        self._held = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/openai/v1"

    @property
    def digitalocean_base_url(self) -> str:
        return self.url + "/do/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url + "/anthropic"

    # ------------------------------------------------------------------ control

    @property
    def input_billing(self) -> str:
        """``"words"`` (the default) or ``"bytes"``: report the raw body's length in bytes as
        the input tokens of every request (a ``[[bill:words|bytes]]`` directive wins)."""
        return self._input_billing

    @input_billing.setter
    def input_billing(self, value: str) -> None:
        if value not in fmt.BILLINGS:
            raise ValueError(f"unknown input billing {value!r}; known: {fmt.BILLINGS}")
        self._input_billing = value

    def fail_next(
        self, fault: str, *, count: int = 1, provider: str | None = None, **params: Any
    ) -> None:
        """Queue ``fault`` for the next ``count`` authenticated requests (of ``provider``)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {sorted(FAULTS)}")
        if provider is not None and provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; known: {PROVIDERS}")
        if count < 1:
            raise ValueError("count must be >= 1")
        problem = _directive_problem({}, _Fault(fault, params))
        if problem is not None:
            raise ValueError(problem)
        with self._lock:
            self._faults.append(_QueuedFault(fault, provider, dict(params), count))

    def fail_key(self, key: str, fault: str, **params: Any) -> None:
        """Answer every request authenticated with ``key`` with ``fault`` until ``reset()``."""
        if not key:
            raise ValueError("fail_key needs a key")
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {sorted(FAULTS)}")
        problem = _directive_problem({}, _Fault(fault, params))
        if problem is not None:
            raise ValueError(problem)
        with self._lock:
            self._key_faults[key] = _Fault(fault, dict(params))

    @property
    def queued_faults(self) -> int:
        """Faults ``fail_next`` queued that no request has taken yet."""
        with self._lock:
            return sum(max(queued.remaining, 0) for queued in self._faults)

    def hold(self) -> None:
        """From now on ``hold`` faults wait again (the state after ``reset``)."""
        self._released.clear()

    def release_held(self) -> None:
        """Let every request waiting on a ``hold`` fault (and any later one) answer."""
        self._released.set()

    @property
    def held(self) -> int:
        """Requests waiting on a ``hold`` fault right now."""
        with self._lock:
            return self._held

    def wait_for_held(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.held < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.held} requests held, expected {count}")
            time.sleep(0.01)

    def wait_for_bills(self, count: int, timeout: float = 10) -> list[Bill]:
        """The bills once there are ``count`` of them: a stream is billed when its handler
        ends, which may be just after the client has read its last byte or hung up."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self.bills) >= count:
                    return list(self.bills)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.bills)} bills, expected {count}")
            time.sleep(0.01)

    def reset(self) -> None:
        """Forget recorded requests, endings, bills, queued and key faults; restore the
        default keys (no extra ones) and word-counted input billing."""
        self.hold()
        with self._lock:
            self.requests.clear()
            self.stream_endings.clear()
            self.bills.clear()
            self._input_billing = "words"
            self.embeddings_report_usage = True
            self._faults.clear()
            self.keys.clear()
            self.keys.update(DEFAULT_KEYS)
            self.extra_keys.clear()
            self._key_faults.clear()
            self.anthropic_accepts_bearer = True

    def requests_for(self, provider: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.provider == provider]

    def _key_fault(self, provider: str, request: web.Request) -> _Fault | None:
        """The fault ``fail_key`` gave the key of this (authenticated) request, if any."""
        key = self._presented_key(provider, request)
        with self._lock:
            return self._key_faults.get(key) if key is not None else None

    def _take_fault(self, provider: str) -> _Fault | None:
        with self._lock:
            for queued in self._faults:
                if queued.provider in (None, provider):
                    queued.remaining -= 1
                    if queued.remaining == 0:
                        self._faults.remove(queued)
                    return _Fault(queued.name, queued.params)
        return None

    # ------------------------------------------------------------------ lifecycle

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _start_site(self) -> None:
        self._runner = web.AppRunner(
            self.make_app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.25
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def start(self) -> FakeProvider:
        """Serve from a background thread with its own event loop; return once listening."""
        if self._thread is not None:
            raise RuntimeError("FakeProvider already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-provider-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(timeout=10)
        if failure:
            self._thread = None
            raise RuntimeError(
                f"fake provider could not listen on {self.host}:{self.port}"
            ) from failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        path = request.path
        provider = next(
            (p for prefix, p in _PREFIXES.items() if path.startswith(prefix)), "unknown"
        )
        if self.record:
            headers: dict[str, str] = {}
            for name, value in request.headers.items():
                key = name.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            entry = RecordedRequest(
                provider, request.method, path, headers, body, time.time(), len(raw)
            )
            with self._lock:
                self.requests.append(entry)

        dialect: fmt.Dialect = "anthropic" if provider == "anthropic" else "openai"
        if path in _EMBEDDINGS_PATHS and provider in ("openai", "digitalocean"):
            if request.method != "POST":
                return self._not_found(dialect, request)
            refused = self._authenticate(provider, request)
            if refused is not None:
                return refused
            return await self._embeddings(request, provider, body, len(raw))
        route = {
            "openai": "/openai/v1/chat/completions",
            "digitalocean": "/do/v1/chat/completions",
        }.get(provider, "/anthropic/v1/messages")
        if path != route or request.method != "POST":
            return self._not_found(dialect, request)

        refused = self._authenticate(provider, request)
        if refused is not None:
            return refused
        return await self._answer(request, provider, dialect, body, len(raw))

    async def _embeddings(
        self, request: web.Request, provider: str, body: Any, size: int
    ) -> web.StreamResponse:
        """Answer an authenticated embeddings request; bill it when answered."""
        fault = self._key_fault(provider, request)
        directive = fmt.fault_directive(body) if isinstance(body, dict) else None
        if fault is None and directive is not None and directive[0] not in FAULTS:
            return self._invalid(
                "openai", f"fake provider: unknown fault directive {directive[0]!r}"
            )
        if fault is None:
            fault = _Fault(*directive) if directive is not None else self._take_fault(provider)
        problem = fmt.embedding_problem(body) or (
            _directive_problem(body, fault) if isinstance(body, dict) else None
        )
        model = str(body.get("model", "")) if isinstance(body, dict) else ""
        tokens = 0
        if problem is None and isinstance(body, dict):
            billing = fmt.billing_directive(body) or self.input_billing
            tokens = fmt.count_embedding_tokens(body, billing=billing)
            if self.record and (fault is None or fault.name in BILLED_FAULTS):
                bill = Bill(provider, fmt.label_directive(body), tokens, 0, "answered", size)
                with self._lock:
                    self.bills.append(bill)
        if fault is not None:
            if fault.name == "malformed":
                return _json({"object": "list", "model": model}, 200, "openai")
            if fault.name == "drop_mid_stream" and problem is None:
                return await self._send_half(request, {"object": "list", "data": []})
            answered = await self._apply_fault(fault, "openai", request, model)
            if answered is not None:
                return answered
        if problem is not None:
            return self._invalid("openai", problem)
        assert isinstance(body, dict)
        payload = fmt.openai_embeddings(body, tokens if self.embeddings_report_usage else None)
        return _json(payload, 200, "openai")

    async def _answer(
        self,
        request: web.Request,
        provider: str,
        dialect: fmt.Dialect,
        body: Any,
        size: int,
    ) -> web.StreamResponse:
        """Answer an authenticated request; bill it, however the answer ends, when the
        provider would."""
        fault = self._key_fault(provider, request)
        directive = fmt.fault_directive(body) if isinstance(body, dict) else None
        if fault is None and directive is not None:
            if directive[0] not in FAULTS:
                return self._invalid(
                    dialect, f"fake provider: unknown fault directive {directive[0]!r}"
                )
            fault = _Fault(*directive)
        elif fault is None:
            fault = self._take_fault(provider)

        problem = _validate(body, dialect) or _directive_problem(body, fault)
        if problem is not None or (fault is not None and fault.name not in BILLED_FAULTS):
            return await self._respond(request, dialect, body, None, fault, None, problem)
        assert isinstance(body, dict)
        billing = fmt.billing_directive(body) or self.input_billing
        plan = fmt.plan_answer(body, dialect, billed_bytes=size if billing == "bytes" else None)
        streams = body.get("stream") is True and (fault is None or fault.name not in _JSON_FAULTS)
        # A stream stops where the client left; a non-streamed answer is generated whole.
        meter = _Meter(
            plan.input_tokens, plan.hidden_reasoning_tokens if streams else plan.output_tokens
        )
        try:
            return await self._respond(request, dialect, body, plan, fault, meter, None)
        except BaseException as exc:
            if meter.ending == "answered":
                meter.ending = type(exc).__name__
            raise
        finally:
            if self.record:
                bill = Bill(
                    provider,
                    fmt.label_directive(body),
                    meter.input_tokens,
                    meter.output_tokens,
                    meter.ending,
                    size,
                )
                with self._lock:
                    self.bills.append(bill)

    async def _respond(
        self,
        request: web.Request,
        dialect: fmt.Dialect,
        body: Any,
        plan: fmt.AnswerPlan | None,
        fault: _Fault | None,
        meter: _Meter | None,
        problem: str | None,
    ) -> web.StreamResponse:
        model = str(body.get("model", "")) if isinstance(body, dict) else ""
        if fault is not None:
            answered = await self._apply_fault(fault, dialect, request, model)
            if answered is not None:
                return answered
        if problem is not None:
            return self._invalid(dialect, problem)
        assert plan is not None and meter is not None and isinstance(body, dict)
        if fault is not None and fault.name == "broken_json":
            return self._broken_json(fault, dialect, plan, meter)
        if body.get("stream") is True:
            return await self._stream(request, dialect, plan, body, fault, meter)
        if dialect == "anthropic":
            payload = fmt.anthropic_message(plan, fmt.new_id("msg_01"))
        else:
            payload = fmt.openai_completion(plan, fmt.new_id("chatcmpl-"), int(time.time()))
        if fault is not None and fault.name == "drop_mid_stream":
            return await self._send_half(request, payload)
        return _json(payload, 200, dialect)

    def _broken_json(
        self, fault: _Fault, dialect: fmt.Dialect, plan: fmt.AnswerPlan, meter: _Meter
    ) -> web.StreamResponse:
        meter.input_tokens = int(fault.number("prompt_tokens", plan.input_tokens))
        meter.output_tokens = int(fault.number("completion_tokens", plan.output_tokens))
        kind = str(fault.params.get("kind", "deep"))
        data = fmt.broken_json(plan, dialect, kind, meter.input_tokens, meter.output_tokens)
        headers = {("request-id" if dialect == "anthropic" else "x-request-id"): fmt.new_id("req_")}
        return web.Response(status=200, body=data, content_type="application/json", headers=headers)

    def _accepts(self, provider: str, key: str | None) -> bool:
        with self._lock:
            return bool(key) and (
                key == self.keys.get(provider) or key in self.extra_keys.get(provider, ())
            )

    def _presented_key(self, provider: str, request: web.Request) -> str | None:
        """The key a request authenticates with: ``x-api-key`` for Anthropic while it is
        one the fake accepts or bearer is off, else the ``Authorization: Bearer`` one."""
        if provider == "anthropic":
            key = request.headers.get("x-api-key")
            if not self.anthropic_accepts_bearer or self._accepts(provider, key):
                return key
        authorization = request.headers.get("authorization", "")
        return authorization[len("Bearer ") :] if authorization.startswith("Bearer ") else None

    def _authenticate(self, provider: str, request: web.Request) -> web.StreamResponse | None:
        if provider == "anthropic":
            if not self._accepts(provider, self._presented_key(provider, request)):
                return _json(
                    fmt.anthropic_error("authentication_error", "invalid x-api-key"),
                    401,
                    "anthropic",
                )
            if not request.headers.get("anthropic-version"):
                error = fmt.anthropic_error(
                    "invalid_request_error", "anthropic-version: header is required"
                )
                return _json(error, 400, "anthropic")
            return None
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return _json(
                fmt.openai_error(message, "invalid_request_error", "invalid_api_key"), 401, "openai"
            )
        if not self._accepts(provider, self._presented_key(provider, request)):
            return _openai_bad_key()
        return None

    def _not_found(self, dialect: fmt.Dialect, request: web.Request) -> web.StreamResponse:
        if dialect == "anthropic":
            return _json(fmt.anthropic_error("not_found_error", "Not found"), 404, dialect)
        message = f"Invalid URL ({request.method} {request.path})"
        return _json(fmt.openai_error(message, "invalid_request_error"), 404, dialect)

    def _invalid(self, dialect: fmt.Dialect, message: str) -> web.StreamResponse:
        if dialect == "anthropic":
            return _json(fmt.anthropic_error("invalid_request_error", message), 400, dialect)
        return _json(fmt.openai_error(message, "invalid_request_error"), 400, dialect)

    async def _hold(self, seconds: float) -> None:
        with self._lock:
            self._held += 1
        try:
            deadline = time.monotonic() + seconds
            while not self._released.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        finally:
            with self._lock:
                self._held -= 1

    async def _apply_fault(
        self, fault: _Fault, dialect: fmt.Dialect, request: web.Request, model: str
    ) -> web.StreamResponse | None:
        """Answer a fault, or return None to let the normal answer go out (possibly altered)."""
        name, anthropic = fault.name, dialect == "anthropic"
        message = fault.params.get("message")
        if name == "slow":
            await asyncio.sleep(fault.number("seconds", 3.0))
            return None
        if name == "hold":
            await self._hold(fault.number("seconds", 30.0))
            return None
        if name in ("drop_mid_stream", "slow_chunks", "error_mid_stream", "broken_json"):
            return None
        if name == "drop":
            _close(request)
            return web.Response(status=204)  # never sent: the transport is gone
        if name == "non_json":
            return web.Response(
                status=200, text="<<garbage>> this is not JSON {", content_type="text/plain"
            )
        if name == "malformed":
            body = fmt.anthropic_malformed(model) if anthropic else fmt.openai_malformed(model)
            return _json(body, 200, dialect)
        if name == "http_401":
            if anthropic:
                return _json(
                    fmt.anthropic_error("authentication_error", "invalid x-api-key"), 401, dialect
                )
            return _openai_bad_key()
        if name == "http_429":
            retry_after = str(fault.params.get("retry_after", 1))
            if anthropic:
                text = message or "Number of request tokens has exceeded your per-minute rate limit"
                error = fmt.anthropic_error("rate_limit_error", text)
            else:
                text = message or (
                    f"Rate limit reached for {model or 'model'} on requests per min (RPM): "
                    f"Limit 3, Used 3, Requested 1. Please try again in {retry_after}s."
                )
                error = fmt.openai_error(text, "requests", "rate_limit_exceeded")
            return _json(error, 429, dialect, {"Retry-After": retry_after})
        if name == "http_400":
            if anthropic:
                error = fmt.anthropic_error(
                    "invalid_request_error",
                    message or "prompt is too long: 210000 tokens > 200000 maximum",
                )
            else:
                text = message or (
                    "This model's maximum context length is 128000 tokens. However, your messages "
                    "resulted in 210000 tokens. Please reduce the length of the messages."
                )
                error = fmt.openai_error(
                    text, "invalid_request_error", "context_length_exceeded", "messages"
                )
            return _json(error, 400, dialect)
        if name == "http_500":
            if anthropic:
                return _json(
                    fmt.anthropic_error("api_error", message or "Internal server error"),
                    500,
                    dialect,
                )
            text = (
                message
                or "The server had an error while processing your request. Sorry about that!"
            )
            return _json(fmt.openai_error(text, "server_error"), 500, dialect)
        if name == "http_502":
            return web.Response(status=502, text=fmt.CLOUDFLARE_502_HTML, content_type="text/html")
        if name == "http_529":
            if anthropic:
                return _json(
                    fmt.anthropic_error("overloaded_error", message or "Overloaded"), 529, dialect
                )
            text = message or "The engine is currently overloaded, please try again later."
            return _json(fmt.openai_error(text, "server_error"), 529, dialect)
        if name == "http_503":
            retry_after = str(fault.params.get("retry_after", 1))
            text = message or "The server is overloaded or not ready yet."
            if anthropic:
                error = fmt.anthropic_error("overloaded_error", text)
            else:
                error = fmt.openai_error(text, "server_error")
            return _json(error, 503, dialect, {"Retry-After": retry_after})
        raise AssertionError(f"unhandled fault {name}")  # FAULTS and this method disagree

    async def _stream(
        self,
        request: web.Request,
        dialect: fmt.Dialect,
        plan: fmt.AnswerPlan,
        body: dict[str, Any],
        fault: _Fault | None,
        meter: _Meter,
    ) -> web.StreamResponse:
        ending = "completed"
        try:
            return await self._send_stream(request, dialect, plan, body, fault, meter)
        except BaseException as exc:
            ending = type(exc).__name__
            raise
        finally:
            with self._lock:
                self.stream_endings.append(ending)
            meter.ending = ending
            # Every piece out: the plan's count, which holds the tokens of a stop sequence
            # that were generated but never shown.
            if meter.pieces_out == plan.content_events:
                meter.output_tokens = plan.output_tokens
            else:
                meter.output_tokens = plan.hidden_reasoning_tokens + meter.pieces_out

    async def _send_stream(
        self,
        request: web.Request,
        dialect: fmt.Dialect,
        plan: fmt.AnswerPlan,
        body: dict[str, Any],
        fault: _Fault | None,
        meter: _Meter,
    ) -> web.StreamResponse:
        """Write the stream; ``meter.pieces_out`` counts the content events handed to the
        open connection, the one in flight when the client hung up included."""
        if dialect == "anthropic":
            events = fmt.anthropic_stream(plan, fmt.new_id("msg_01"))
        else:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            events = fmt.openai_stream(
                plan, fmt.new_id("chatcmpl-"), int(time.time()), include_usage
            )

        response = web.StreamResponse(status=200, headers=_stream_headers(dialect))
        await response.prepare(request)
        name = fault.name if fault else None
        after = int(fault.number("after", 2)) if fault else 0
        delay = fault.number("delay", 0.1) if fault else 0.0
        sent = 0
        for event in events:
            if name in ("drop_mid_stream", "error_mid_stream") and (
                event.phase == "post" or (event.phase == "content" and sent >= after)
            ):
                if name == "drop_mid_stream":
                    _close(request)
                    return response
                if dialect == "anthropic":
                    await response.write(
                        fmt.anthropic_stream_error("overloaded_error", "Overloaded")
                    )
                else:
                    await response.write(
                        fmt.openai_stream_error(
                            "The server had an error while processing your request."
                        )
                    )
                break
            if event.phase == "content":
                if name == "slow_chunks":
                    await asyncio.sleep(delay)
                sent += 1
                # aiohttp hands the bytes to the transport before it waits for the buffer
                # to drain, unless the transport is already closing (then it raises).
                if _is_open(request):
                    meter.pieces_out += 1
            await response.write(event.data)
        await response.write_eof()
        return response

    async def _send_half(self, request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        data = json.dumps(payload).encode()
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        _close(request)
        return response


# ---------------------------------------------------------------------- helpers


def _directive_problem(body: dict[str, Any], fault: _Fault | None) -> str | None:
    """Why the fake cannot do what the request's directives or its fault ask, if it cannot."""
    billing = fmt.billing_directive(body)
    if billing is not None and billing not in fmt.BILLINGS:
        return f"fake provider: unknown billing {billing!r}; known: {fmt.BILLINGS}"
    kind = fault.params.get("kind", "deep") if fault and fault.name == "broken_json" else "deep"
    if kind not in fmt.BROKEN_JSON_KINDS:
        return f"fake provider: unknown broken_json kind {kind!r}; known: {fmt.BROKEN_JSON_KINDS}"
    return None


def _validate(body: Any, dialect: fmt.Dialect) -> str | None:
    if not isinstance(body, dict):
        return (
            "The request body is not valid JSON."
            if dialect == "openai"
            else "Request body is not valid JSON"
        )
    messages = body.get("messages")
    if dialect == "openai":
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "you must provide a model parameter"
        if not isinstance(messages, list) or not messages:
            return (
                "[] is too short - 'messages'"
                if isinstance(messages, list)
                else "Missing required parameter: 'messages'."
            )
        return None
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        return "max_tokens: Field required"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    if not isinstance(messages, list) or not messages:
        return (
            "messages: Field required"
            if not isinstance(messages, list)
            else "messages: at least one message is required"
        )
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "system":
            return (
                f'messages.{index}.role: Unexpected role "system". The Messages API accepts a '
                'top-level `system` parameter, not "system" as an input message role.'
            )
        if role not in ("user", "assistant"):
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system: Input should be a valid string or a list of text blocks"
    return None


def _json(
    payload: Any, status: int, dialect: fmt.Dialect, extra: dict[str, str] | None = None
) -> web.Response:
    headers = {("request-id" if dialect == "anthropic" else "x-request-id"): fmt.new_id("req_")}
    if extra:
        headers.update(extra)
    return web.Response(
        status=status,
        body=json.dumps(payload, separators=(",", ":")).encode(),
        content_type="application/json",
        headers=headers,
    )


def _openai_bad_key() -> web.Response:
    # The real API echoes a masked key here; the fake deliberately echoes nothing.
    message = "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
    return _json(
        fmt.openai_error(message, "invalid_request_error", "invalid_api_key"), 401, "openai"
    )


def _stream_headers(dialect: fmt.Dialect) -> dict[str, str]:
    return {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        ("request-id" if dialect == "anthropic" else "x-request-id"): fmt.new_id("req_"),
    }


def _is_open(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()


def _close(request: web.Request) -> None:
    """Close the TCP connection now; later writes fail quietly inside aiohttp."""
    transport = request.transport
    if transport is not None:
        transport.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI / DigitalOcean / Anthropic provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument(
        "--record", action="store_true", help="keep every request in memory (off by default)"
    )
    args = parser.parse_args(argv)
    fake = FakeProvider(args.host, args.port, record=args.record)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(
            fake.make_app(),
            host=args.host,
            port=args.port,
            access_log=None,
            print=lambda _: print(
                f"fake provider listening on http://{args.host}:{args.port}", flush=True
            ),
        )


if __name__ == "__main__":
    main()
