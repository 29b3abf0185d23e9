"""Talking to providers: one pooled HTTP client per provider per process, and
every outcome mapped to SPEC's table.

* ``complete`` / ``stream`` / ``embed`` send one request with the key given;
  which routes and keys a request tries, and when it tries again, is
  ``gateway.proxy.attempts``.

Outcomes: connect or read timeout -> 504 ``upstream_timeout``; refused or
reset connection, 5xx, malformed answer -> 502 ``upstream_error`` (401/403:
``UpstreamAuthRejected``, a 502 unless another key succeeds);
429 (``UpstreamRateLimited``: the key's limit), 529, and a 503 with
Retry-After -> 503 ``upstream_overloaded`` with Retry-After; any other
4xx -> 400 ``upstream_rejected`` with the provider's message text only. What each
outcome may cost is written into the request's
``Meter`` as it happens (``providers.base``): nothing sent, refused, output
seen so far, or output the gateway could not see (a read timeout, a reset
answer, an answer it cannot parse, whose usage is salvaged when it can be).

Transport: httpx's requests and responses on httpx-aiohttp's
``AiohttpTransport``, chosen by measurement against the fake provider
(docs/benchmarks.md): its pool holds up under concurrency where httpx's
default transport degrades. Requests go to the pooled transport directly, with a URL
and headers built once (``providers.base.endpoint``, the adapters' header
caches): an ``httpx.AsyncClient`` on top re-parses the URL and re-builds the
headers on every request and runs cookie, auth and redirect machinery we
never use, which cost about as much CPU as the transport itself
(``bench/bench_upstream_client.py`` compares the two). The aiohttp
session keeps no cookies either, so a provider's cookies are never sent back.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

import aiohttp
import httpx
import orjson
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

from billing.pricing import embedding_input_bound, input_token_bound
from gateway.core import lifecycle
from gateway.core.errors import InvalidRequest
from gateway.core.loops import PerLoop
from gateway.proxy.keys import ProviderKey
from gateway.proxy.providers import adapter_for, embeddings_adapter_for
from gateway.proxy.providers.base import (
    Completion,
    EmbeddingsAdapter,
    EmbeddingsOutbound,
    Meter,
    Outbound,
    SSEDecoder,
    StreamDone,
    StreamEvent,
    UpstreamAuthRejected,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    Usage,
    provider_message,
)
from gateway.proxy.routes import Route
from gateway.proxy.validation import ChatRequest, EmbeddingsRequest

__all__ = [
    "Completion",
    "Meter",
    "Outbound",
    "StreamDone",
    "StreamEvent",
    "UpstreamAuthRejected",
    "UpstreamError",
    "UpstreamOverloaded",
    "UpstreamRejected",
    "UpstreamTimeout",
    "Usage",
    "close_clients",
    "complete",
    "embed",
    "embeddings_outbound",
    "outbound",
    "stream",
]

# Streams hold a connection for their whole life: the pool must be larger
# than the number of concurrent streams one process serves. (aiohttp's pool
# takes max_connections and keepalive_expiry.)
T = TypeVar("T")
LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30)
# Offered explicitly, as what httpx decodes without optional packages:
# aiohttp's own default could name an encoding httpx cannot decode.
ACCEPT_ENCODING = "gzip, deflate"
DEFAULT_RETRY_AFTER = 5
MAX_RETRY_AFTER = 300
TRANSPORT_ERRORS = (httpx.HTTPError, aiohttp.ClientError, TimeoutError, OSError)
# What reading an unexpected shape out of a provider's JSON can raise; the
# adapters check the shapes they rely on, this is the net under them.
SHAPE_ERRORS = (TypeError, KeyError, ValueError, AttributeError, IndexError)

_transports: PerLoop[dict[str, httpx.AsyncBaseTransport]] = PerLoop(dict)


def _session(ssl_context: ssl.SSLContext) -> aiohttp.ClientSession:
    # What AiohttpTransport builds by default, but with no cookie jar and
    # offering only the encodings httpx decodes.
    connector = aiohttp.TCPConnector(
        limit=LIMITS.max_connections or 0,
        keepalive_timeout=LIMITS.keepalive_expiry,
        ssl=ssl_context,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"Accept-Encoding": ACCEPT_ENCODING},
    )


def transport_for(provider: str) -> httpx.AsyncBaseTransport:
    """The pooled transport for ``provider`` on the running event loop."""
    transports = _transports.get()
    transport = transports.get(provider)
    if transport is None:
        ssl_context = httpx.create_ssl_context()
        transport = transports[provider] = AiohttpTransport(
            verify=ssl_context, limits=LIMITS, client=functools.partial(_session, ssl_context)
        )
    return transport


async def close_clients() -> None:
    """Close this loop's transports (lifecycle shutdown hook)."""
    for transport in (_transports.pop() or {}).values():
        await transport.aclose()


lifecycle.on_shutdown(close_clients)


def outbound(route: Route, request: ChatRequest, *, max_tokens: int, end_user: str) -> Outbound:
    """The exact upstream body for ``request`` and its input bound (before admission).

    ``end_user`` is the device's opaque id (``devices.tokens.end_user_id``).
    InvalidRequest (400) when the body cannot be encoded.
    """
    adapter = adapter_for(route.provider)
    body = adapter.build_body(route, request, max_tokens=max_tokens, end_user=end_user)
    bound = input_token_bound(
        body,
        messages=len(request.messages),
        tools=len(request.tools or ()),
        images=request.images,
        image_bytes=request.image_bytes,
        tokens_per_image=route.max_tokens_per_image,
    )
    return Outbound(route, request, body, max_tokens, bound)


def _request(
    url: httpx.URL, headers: httpx.Headers, body: bytes, deadline: float | None
) -> httpx.Request:
    # Timeouts are read at call time so settings overrides apply to a pooled
    # transport; the dict is what httpx.Timeout.as_dict() gives the transport.
    connect = float(settings.UPSTREAM_CONNECT_TIMEOUT_SECONDS)
    read = float(settings.UPSTREAM_TIMEOUT_SECONDS)
    if deadline is not None:
        # A retry waits no longer than the request's overall deadline leaves.
        left = max(deadline - time.monotonic(), 0.001)
        connect, read = min(connect, left), min(read, left)
    timeout = {"connect": connect, "read": read, "write": read, "pool": connect}
    # stream=, not content=: httpx would re-build the headers to add Host and
    # Content-Length, which aiohttp adds anyway; read() keeps the body as bytes,
    # so the transport sends it with a Content-Length, not chunked.
    request = httpx.Request(
        "POST",
        url,
        headers=headers,
        stream=httpx.ByteStream(body),
        extensions={"timeout": timeout},
    )
    request.read()
    return request


# --- failures ------------------------------------------------------------------


def _nothing_sent(exc: BaseException) -> bool:
    """The request never reached the provider (connect refused or timed out)."""
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    if isinstance(exc, aiohttp.ClientError):
        return isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def _is_timeout(exc: BaseException) -> bool:
    # httpx-aiohttp maps some aiohttp errors oddly (a server disconnect becomes
    # httpx.ConnectTimeout): judge by the aiohttp exception when there is one.
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError | TimeoutError):
        return isinstance(cause, TimeoutError)
    return isinstance(exc, httpx.TimeoutException | TimeoutError)


def transport_failure(exc: BaseException, meter: Meter, *, is_streamed: bool) -> UpstreamError:
    """The error for a transport exception; what it may cost goes to ``meter``.

    Nothing is charged when the request never reached the provider. After a
    read timeout the provider may still finish and bill up to the output
    bound; so may a non-streamed answer cut off (its output is never seen).
    A stream cut off is charged the output it delivered (SPEC).
    """
    if _nothing_sent(exc):
        meter.is_sent = False
    elif _is_timeout(exc) or not is_streamed:
        meter.is_output_unseen = True
    return UpstreamTimeout() if _is_timeout(exc) else UpstreamError()


def _retry_after(response: httpx.Response) -> int:
    raw = response.headers.get("retry-after", "")
    try:
        seconds = int(float(raw))
    except ValueError:
        return DEFAULT_RETRY_AFTER
    return min(max(seconds, 1), MAX_RETRY_AFTER)


def status_failure(
    response: httpx.Response, key: ProviderKey, meter: Meter, salvage: Salvage
) -> UpstreamError:
    """The error for a non-2xx answer; never the provider's body, at most its message.

    The provider says it did not process the request: it costs nothing, unless
    a server error still reports usage.
    """
    meter.is_refused = True
    status = response.status_code
    if status >= 500:
        meter.salvaged = salvage(response.content)
    if status in (401, 403):
        return UpstreamAuthRejected()
    # A 503 that says when to come back is the provider shedding load (OpenAI
    # answers "overloaded" so): the client should retry, as for a 429 or 529.
    if status == 429:
        return UpstreamRateLimited(retry_after=_retry_after(response))
    if status == 529 or (status == 503 and "retry-after" in response.headers):
        return UpstreamOverloaded(retry_after=_retry_after(response))
    if 400 <= status < 500:
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = None
        return UpstreamRejected(provider_message(data, key))
    return UpstreamError()


Salvage = Callable[[bytes], Usage | None]


def _start(
    outbound: Outbound, key: ProviderKey, meter: Meter, *, stream: bool, deadline: float | None
) -> httpx.Request:
    url, headers = adapter_for(outbound.route.provider).target(key, stream=stream)
    # From here the provider may receive it; a refusal or a failure to
    # connect says otherwise (a retry starts afresh).
    meter.is_sent, meter.is_refused = True, False
    return _request(url, headers, outbound.body, deadline)


# --- requests ------------------------------------------------------------------


async def _answer(
    route: Route, sent: httpx.Request, key: ProviderKey, meter: Meter, salvage: Salvage
) -> Any:
    """A non-streamed answer's JSON; UpstreamError for a transport failure, a non-2xx
    status or a body that does not parse (whose usage ``salvage`` may still find)."""
    try:
        response = await transport_for(route.provider).handle_async_request(sent)
        try:
            content = await response.aread()
        finally:
            await response.aclose()
    except TRANSPORT_ERRORS as exc:
        raise transport_failure(exc, meter, is_streamed=False) from None
    if response.status_code != 200:
        raise status_failure(response, key, meter, salvage)
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        # An answer we cannot read: it may hold anything; its usage may still be there.
        meter.salvaged = salvage(content)
        meter.is_output_unseen = True
        raise UpstreamError() from None


async def complete(
    outbound: Outbound, *, key: ProviderKey, meter: Meter, deadline: float | None = None
) -> Completion:
    """A non-streamed chat completion in OpenAI's shape, or an UpstreamError; no
    timeout runs past ``deadline`` (``time.monotonic()``), when given."""
    route, request = outbound.route, outbound.request
    adapter = adapter_for(route.provider)
    sent = _start(outbound, key, meter, stream=False, deadline=deadline)
    data = await _answer(route, sent, key, meter, adapter.salvage)
    try:
        return adapter.parse_response(route, request, data, meter)
    except SHAPE_ERRORS:
        meter.is_output_unseen = True
        raise UpstreamError() from None


async def stream(
    outbound: Outbound, *, key: ProviderKey, meter: Meter, deadline: float | None = None
) -> AsyncGenerator[StreamEvent, None]:
    """OpenAI chunk dicts, then one ``StreamDone``; an UpstreamError at any point.

    Usage and the output seen go to ``meter`` as they arrive. Closing the
    iterator early closes the upstream response, which cancels the
    provider's work.
    """
    route, request = outbound.route, outbound.request
    adapter = adapter_for(route.provider)
    translator = adapter.stream_translator(route, request, meter)
    decoder = SSEDecoder()
    has_events = False
    sent = _start(outbound, key, meter, stream=True, deadline=deadline)
    try:
        response = await transport_for(route.provider).handle_async_request(sent)
        try:
            if response.status_code != 200:
                await response.aread()
                raise status_failure(response, key, meter, adapter.salvage)
            async for raw in response.aiter_bytes():
                # Events after the end (a trailing [DONE]) are read so the
                # connection goes back to the pool, and ignored.
                for event in decoder.feed(raw):
                    has_events = True
                    try:
                        chunks = translator.feed(event)
                    except SHAPE_ERRORS:
                        meter.is_output_unseen = True  # an event we cannot read
                        raise UpstreamError() from None
                    for chunk in chunks:
                        yield chunk
        finally:
            # Unread (closed early, failed), the connection is dropped, not pooled.
            await response.aclose()
    except TRANSPORT_ERRORS as exc:
        raise transport_failure(exc, meter, is_streamed=True) from None
    if not translator.finished and translator.finish_reason is None:
        # The provider closed the stream without finishing it, or sent no
        # stream at all (an answer we cannot read).
        meter.is_output_unseen = meter.is_output_unseen or not has_events
        raise UpstreamError()
    yield translator.done()


# --- embeddings ------------------------------------------------------------------
# One JSON request, one JSON answer: the same transport, failures and key
# retry as a non-streamed chat completion, with the provider's /embeddings.


def _embeddings_adapter(route: Route) -> EmbeddingsAdapter:
    adapter = embeddings_adapter_for(route.provider)
    if adapter is None:  # a route the admin's validation would have refused
        raise InvalidRequest(
            f"The model '{route.public_name}' cannot serve embeddings: "
            f"its provider has no embeddings API",
            param="model",
        )
    return adapter


def embeddings_outbound(
    route: Route, request: EmbeddingsRequest, *, end_user: str
) -> EmbeddingsOutbound:
    """The exact upstream body for ``request`` and its input bound (before admission).

    InvalidRequest (400) when the route's provider has no embeddings API or the
    body cannot be encoded.
    """
    body = _embeddings_adapter(route).build_embeddings_body(route, request, end_user=end_user)
    return EmbeddingsOutbound(route, request, body, embedding_input_bound(request.texts))


def _no_salvage(content: bytes) -> Usage | None:
    """An embeddings answer that does not parse is charged its input bound."""
    return None


async def embed(
    outbound: EmbeddingsOutbound, *, key: ProviderKey, meter: Meter, deadline: float | None = None
) -> dict[str, Any]:
    """OpenAI's embeddings list under the public model name, or an UpstreamError."""
    route = outbound.route
    adapter = _embeddings_adapter(route)
    url, headers = adapter.embeddings_target(key)
    meter.is_sent, meter.is_refused = True, False
    sent = _request(url, headers, outbound.body, deadline)
    data = await _answer(route, sent, key, meter, _no_salvage)
    try:
        return adapter.parse_embeddings(route, data, meter)
    except SHAPE_ERRORS:
        meter.is_output_unseen = True
        raise UpstreamError() from None
