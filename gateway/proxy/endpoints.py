"""The hot path: ``POST /v1/chat/completions``, ``POST /v1/embeddings`` and ``GET /v1/models``
as lean ASGI endpoints.

Every check runs in SPEC's order (IP guard, size cap, authentication,
validation, route and tier rules, the exact upstream body and its input
bound, then one atomic admission with the budget reservation), the request
is forwarded with the provider's key, and its ``Settlement`` (opened at
admission, closed exactly once on every path) replaces the reservation with
what it cost and writes the one usage record. No ORM call and no thread hop
on a warm request before the upstream call, and one Redis round trip
(``_admit_from_caches``).

Embeddings take the same pipeline (the same guard, authentication, admission
with its limits and budget reservation, key retry and ``Settlement``) with
their own parsing, route kind, input bound and upstream call; no stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from django.conf import settings

from devices.auth import AuthenticatedDevice, authenticate, cached_device, record_use
from devices.auth import prefetch_keys as auth_prefetch_keys
from devices.tokens import end_user_id
from gateway.core import store
from gateway.core.client_ip import client_ip_from_scope, limit_key
from gateway.core.errors import GatewayError, RequestTooLarge
from gateway.core.lifecycle import spawn
from gateway.proxy import attempts, keys
from gateway.proxy import messages as messages_api
from gateway.proxy.lean import (
    LeanRequest,
    Response,
    StreamResponse,
    encode_headers,
    json_response,
    lean_endpoint,
)
from gateway.proxy.messages_stream import MessageEvents, error_event
from gateway.proxy.providers import adapter_for, embeddings_adapter_for
from gateway.proxy.providers.base import (
    Billable,
    Completion,
    EmbeddingsOutbound,
    Outbound,
    StreamDone,
    UpstreamError,
    usage_payload,
)
from gateway.proxy.routes import Route, fallbacks_for, models_for_tier, models_payload
from gateway.proxy.settlement import Settlement, ledger_status, record_auto_pause
from gateway.proxy.upstream import complete, embed, embeddings_outbound, outbound, stream
from gateway.proxy.validation import ChatRequest, prepare_chat, prepare_embeddings
from usage import guard, limits
from usage.http import rate_limit_headers, refusal_error

logger = logging.getLogger(__name__)
T = TypeVar("T")
OutboundT = TypeVar("OutboundT", bound=Billable)

DONE = b"data: [DONE]\n\n"


async def _guard(ip: str, headers: Mapping[str, str]) -> None:
    """The IP guard; its and authentication's store reads are made here in one
    round trip (gateway.core.store.prefetch)."""
    await store.prefetch([*guard.prefetch_keys(ip), *auth_prefetch_keys(headers)])
    await guard.check_ip(ip)


async def _caller(request: LeanRequest) -> tuple[str, AuthenticatedDevice, int]:
    """IP guard then authentication; returns (client ip, device, store epoch)."""
    ip = client_ip_from_scope(request.scope)
    request.log["client_ip"] = ip
    await _guard(ip, request.headers)
    device = await authenticate(request.headers, ip=ip)
    request.log["device_id"] = device.id
    return ip, device, store.last_read_epoch()


@lean_endpoint("GET")
async def models(request: LeanRequest) -> Response:
    _ip, device, epoch = await _caller(request)
    routes = await models_for_tier(device.tier, epoch=epoch)
    return json_response(
        models_payload(
            routes, is_available=lambda route: keys.is_configured(route.provider, epoch=epoch)
        )
    )


@lean_endpoint("POST")
async def chat_completions(request: LeanRequest) -> Response | StreamResponse:
    ip = client_ip_from_scope(request.scope)
    request.log["client_ip"] = ip
    cached = await _admit_from_caches(request, ip)
    if cached.admitted is not None:
        return await _forward(request, cached.admitted, cached.epoch)
    await _guard(ip, request.headers)
    if cached.body is None:
        device, body = await _authenticated_body(request, ip)
    else:
        body = cached.body
        device = await authenticate(request.headers, ip=ip)
    epoch = store.last_read_epoch()
    prepared = await _prepare(request, device, body, epoch)
    admitted = await _admit(request, device, ip, prepared)
    return await _forward(request, admitted, epoch)


async def _authenticated_body(request: LeanRequest, ip: str) -> tuple[AuthenticatedDevice, bytes]:
    """Authentication, then the body, which may carry images up to
    MAX_IMAGE_REQUEST_BYTES for an authenticated caller. SPEC's order holds:
    a caller that fails authentication has its body read at the usual limit
    first, so a body too large (413) or too slow (408) answers before the 401."""
    try:
        device = await authenticate(request.headers, ip=ip)
    except GatewayError:
        await request.body()
        raise
    request.allow_body(settings.MAX_IMAGE_REQUEST_BYTES)
    return device, await request.body()


def _too_large() -> RequestTooLarge:
    return RequestTooLarge(
        f"Request body exceeds {settings.MAX_REQUEST_BYTES} bytes "
        f"({settings.MAX_IMAGE_REQUEST_BYTES} with images)"
    )


# --- Admission from the caches -------------------------------------------------
# A warm caller (device and blocklist cached) is admitted with one round trip:
# the admission script confirms the store values the caches were built from
# (usage.limits.Expectation) instead of a read before it. When anything moved
# it takes nothing, and the request goes the usual way, in SPEC's order.


@dataclass(frozen=True, slots=True)
class _FromCaches:
    """What trying the caches left: an admission, or the body if it was read."""

    admitted: tuple[Settlement[Outbound], limits.Admission] | None = None
    epoch: int = 0
    body: bytes | None = None


_NOT_CACHED = _FromCaches()
_CACHED_VIEW_LOG_FIELDS = ("device_id", "model", "provider", "is_streamed")


async def _admit_from_caches(request: LeanRequest, ip: str) -> _FromCaches:
    view = _cached_view(request, ip)
    if view is None:
        return _NOT_CACHED
    # Any error before the admission is answered the usual way (a body
    # refused here is refused again when read there).
    body: bytes | None = None
    request.allow_body(settings.MAX_IMAGE_REQUEST_BYTES)  # a cached device is approved
    try:
        body = await request.body()
        prepared = await _prepare(request, view.device, body, view.epoch)
    except GatewayError:
        prepared = None
    if prepared is not None:
        try:
            admitted = await _admit(request, view.device, ip, prepared, view.expect)
        except limits.StaleView:
            pass  # something changed since the caches were filled
        except GatewayError:
            record_use(view.device.id, ip)  # refused by a limit, the view confirmed
            raise
        else:
            record_use(view.device.id, ip)
            return _FromCaches(admitted, view.epoch)
    for field in _CACHED_VIEW_LOG_FIELDS:
        request.log.pop(field, None)  # the usual path says again what it finds
    return _FromCaches(body=body)


@dataclass(frozen=True, slots=True)
class _CachedView:
    device: AuthenticatedDevice
    epoch: int
    expect: limits.Expectation


def _cached_view(request: LeanRequest, ip: str) -> _CachedView | None:
    """The caller as this process's caches see it, if they can say (Redis only)."""
    if not settings.REDIS_URL:
        return None
    cached = cached_device(request.headers)
    blocklist = guard.cached_view(ip)
    if cached is None or blocklist is None:
        return None
    device, epoch, device_values = cached
    blocklist_epoch, blocklist_values = blocklist
    if blocklist_epoch != epoch:
        return None
    values = dict(device_values) | dict(blocklist_values)  # both name the epoch
    return _CachedView(device, epoch, limits.Expectation(tuple(values.items())))


# --- The chat pipeline ---------------------------------------------------------


async def _prepare(
    request: LeanRequest, device: AuthenticatedDevice, body: bytes, epoch: int
) -> Planned[Outbound]:
    request.log["device_id"] = device.id
    # Only a request with images may pass MAX_REQUEST_BYTES: refused before
    # parsing when it cannot hold one, after it when it holds none.
    is_large = len(body) > settings.MAX_REQUEST_BYTES
    if is_large and b'"image_url"' not in body:
        raise _too_large()
    prepared = await prepare_chat(body, device.tier, epoch=epoch)
    if is_large and not prepared.request.images:
        raise _too_large()
    route, chat = prepared.route, prepared.request
    # What only this provider refuses is refused here too, before it costs a request.
    adapter_for(route.provider).check_request(chat, route)
    request.log.update(model=route.public_name, provider=route.provider, is_streamed=chat.stream)
    routes = [route]
    if route.fallbacks:
        routes += await _chat_fallbacks(route, chat, device, epoch)
    routes = _reachable(routes, epoch)
    # The exact bytes each provider would get: the budget's input bounds are theirs.
    end_user = end_user_id(device.id)
    return Planned(
        route.public_name,
        tuple(
            outbound(each, chat, max_tokens=prepared.max_tokens, end_user=end_user)
            for each in routes
        ),
    )


def _reachable(routes: list[Route], epoch: int) -> list[Route]:
    """The routes whose provider has a key, in order: 503 ``provider_not_configured``
    (naming the first, the model asked for) when none has, 503 ``upstream_overloaded``
    when every one's breaker is open. Both before admission: no quota, no record."""
    usable = [each for each in routes if keys.is_configured(each.provider, epoch=epoch)]
    if not usable:
        raise keys.ProviderNotConfigured(routes[0].public_name)
    attempts.check_reachable(usable)
    return usable


async def _chat_fallbacks(
    route: Route, chat: ChatRequest, device: AuthenticatedDevice, epoch: int
) -> list[Route]:
    """``route``'s fallbacks that can take this very request (its images, ``n``,
    parameters); the others are skipped, not an error."""
    usable = []
    for fallback in await fallbacks_for(route, device.tier, epoch=epoch):
        if chat.images and not fallback.accepts_images:
            continue
        try:
            adapter_for(fallback.provider).check_request(chat, fallback)
        except GatewayError:
            continue
        usable.append(fallback)
    return usable


@dataclass(frozen=True, slots=True)
class Planned(Generic[OutboundT]):
    """What an admitted request may send: its own route's request, then those of the
    fallbacks it may reach (gateway.proxy.attempts), each built before admission."""

    requested: str  # the model the client asked for
    outbounds: tuple[OutboundT, ...]  # never empty; the first is the requested route's

    def worst_case(self) -> int:
        """The reservation: the most any route the request may reach can cost."""
        if len(self.outbounds) == 1:
            only = self.outbounds[0]
            return only.route.cost_micro_usd(only.input_bound, only.output_bound)
        return max(
            each.route.cost_micro_usd(each.input_bound, each.output_bound)
            for each in self.outbounds
        )


async def _admit(
    request: LeanRequest,
    device: AuthenticatedDevice,
    ip: str,
    planned: Planned[OutboundT],
    expect: limits.Expectation | None = None,
) -> tuple[Settlement[OutboundT], limits.Admission]:
    # The reservation: the request's bounds priced on every route it may reach,
    # never below what it can cost.
    worst_case = planned.worst_case()
    admission = await limits.admit(
        limits.AdmissionRequest(
            request_id=request.request_id,
            device_id=device.id,
            ip=limit_key(ip),
            user_id=device.owner_id,
            tier=device.tier,
            reserve_micro_usd=worst_case,
            expect=expect,
        )
    )
    if not admission.admitted or admission.reservation is None:
        request.log["layer"] = admission.refused_by
        if admission.auto_paused:
            spawn(record_auto_pause())
        raise refusal_error(admission)
    settlement = Settlement(
        request_id=request.request_id,
        device=device,
        ip=ip,
        outbound=planned.outbounds[0],
        reservation=admission.reservation,
        started=request.started,
        log=request.log,
        fallbacks=planned.outbounds[1:],
        requested=planned.requested,
    )
    # Closed on every path the code below does not close it on.
    request.defer(lambda end: settlement.close(_END_STATUS.get(end, "interrupted")))
    return settlement, admission


# How a request the proxy did not settle itself ended (LeanRequest.defer).
_END_STATUS = {"client_disconnected": "client_disconnected"}


async def _forward(
    request: LeanRequest,
    admitted: tuple[Settlement[Outbound], limits.Admission],
    epoch: int,
) -> Response | StreamResponse:
    settlement, admission = admitted
    headers = rate_limit_headers(admission=admission)
    if settlement.outbound.request.stream:
        return await _stream(request, settlement, headers, epoch)
    return await _complete(request, settlement, headers, epoch)


async def _fail(settlement: Settlement[Any], error: GatewayError, headers: dict[str, str]) -> None:
    """Settle a request that failed before any output; its error response is still an
    admitted one: it carries the rate-limit headers and what it cost."""
    await settlement.close(ledger_status(error))
    error.extra_headers.update(_answer_headers(settlement, headers))


async def _answered(
    request: LeanRequest,
    settlement: Settlement[Any],
    headers: dict[str, str],
    call: Coroutine[Any, Any, T],
) -> T:
    """A non-streamed upstream call, timed and settled: a failure is settled and raised
    (it carries the admitted headers), a success settled ``ok``."""
    upstream_started = time.monotonic()
    try:
        answer = await call
    except GatewayError as error:
        _upstream_time(request, upstream_started)
        await _fail(settlement, error, headers)
        raise
    except BaseException:
        # Cancelled (shutdown) or a bug with the answer still to come: the
        # provider may finish it and bill output never seen here.
        settlement.meter.is_output_unseen = True
        raise
    _upstream_time(request, upstream_started)
    await settlement.close("ok")
    return answer


async def _complete(
    request: LeanRequest, settlement: Settlement[Outbound], headers: dict[str, str], epoch: int
) -> Response:
    completion = await _answered(request, settlement, headers, _completion(settlement, epoch))
    body = completion.body
    body["usage"] = usage_payload(settlement.billed_usage())
    return json_response(body, headers=_answer_headers(settlement, headers))


async def _completion(settlement: Settlement[Outbound], epoch: int) -> Completion:
    """The answer of the first route and key that gives one (gateway.proxy.attempts),
    under the model name the client asked for."""
    completion = await attempts.run(
        settlement,
        lambda each, key, meter, deadline: complete(each, key=key, meter=meter, deadline=deadline),
        epoch=epoch,
    )
    completion.body["model"] = settlement.requested
    return completion


def _answer_headers(settlement: Settlement[Any], headers: dict[str, str]) -> dict[str, str]:
    """An answer's (or an admitted error's) headers: the rate limits', its cost and the
    route target."""
    return _with_route_target(settlement, {**headers, "X-Request-Cost-USD": settlement.cost_text})


def _with_route_target(settlement: Settlement[Any], headers: dict[str, str]) -> dict[str, str]:
    """``headers`` and, on a model that could have fallen back, the model that answered."""
    if settlement.fallbacks:
        return {**headers, "X-Route-Target": settlement.route.public_name}
    return headers


def _upstream_time(request: LeanRequest, started: float) -> None:
    request.log["upstream_ms"] = round((time.monotonic() - started) * 1000, 1)


StreamRenderer = Callable[
    [Settlement[Outbound], Any, AsyncGenerator[Any, None]], AsyncIterator[bytes]
]


async def _stream(
    request: LeanRequest,
    settlement: Settlement[Outbound],
    headers: dict[str, str],
    epoch: int,
    render: StreamRenderer | None = None,
) -> StreamResponse:
    events = attempts.stream(
        settlement,
        lambda each, key, meter, deadline: stream(each, key=key, meter=meter, deadline=deadline),
        epoch=epoch,
    )
    # Closing the upstream stream cancels the provider's work; it runs before
    # the settlement (deferred earlier), so the meter is final when it closes.
    request.defer(lambda end: events.aclose())
    upstream_started = time.monotonic()
    try:
        # The first event decides the HTTP status: a provider that fails
        # before any output is a plain error response, not a broken stream.
        first = await anext(events)
    except GatewayError as error:
        await events.aclose()
        _upstream_time(request, upstream_started)
        await _fail(settlement, error, headers)
        raise
    _upstream_time(request, upstream_started)
    body = (render or _stream_body)(settlement, first, events)
    return StreamResponse(body, headers=encode_headers(_with_route_target(settlement, headers)))


async def _stream_body(
    settlement: Settlement[Outbound], first: Any, events: AsyncGenerator[Any, None]
) -> AsyncIterator[bytes]:
    """The events as SSE, then the usage chunk and ``[DONE]``. A client that leaves
    (or stops reading) closes this early; the deferred close settles it then."""
    event = first
    try:
        while not isinstance(event, StreamDone):
            yield b"data: " + orjson.dumps(event) + b"\n\n"
            event = await anext(events)
    except UpstreamError as error:
        await events.aclose()
        await settlement.close(ledger_status(error))
        yield b"data: " + orjson.dumps(error.payload()) + b"\n\n" + DONE
        return
    await settlement.close("ok")
    if settlement.outbound.request.include_usage:
        chunk = event.usage_chunk(settlement.billed_usage(), cost_usd=float(settlement.cost_text))
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    yield DONE


# --- Embeddings ------------------------------------------------------------------


@lean_endpoint("POST")
async def embeddings(request: LeanRequest) -> Response:
    """``POST /v1/embeddings``: chat's checks in chat's order, one admission, one call."""
    ip = client_ip_from_scope(request.scope)
    request.log["client_ip"] = ip
    await _guard(ip, request.headers)
    body = await request.body()  # 413 or 408 here (gateway.proxy.bodies)
    device = await authenticate(request.headers, ip=ip)
    epoch = store.last_read_epoch()
    upstream = await _prepare_embeddings(request, device, body, epoch)
    settlement, admission = await _admit(request, device, ip, upstream)
    return await _embed(request, settlement, rate_limit_headers(admission=admission), epoch)


async def _prepare_embeddings(
    request: LeanRequest, device: AuthenticatedDevice, body: bytes, epoch: int
) -> Planned[EmbeddingsOutbound]:
    request.log["device_id"] = device.id
    prepared = await prepare_embeddings(body, device.tier, epoch=epoch)
    route = prepared.route
    end_user = end_user_id(device.id)
    # The exact upstream body, and the input bound of its texts (400 for a
    # route whose provider has no embeddings).
    upstream = embeddings_outbound(route, prepared.request, end_user=end_user)
    request.log.update(model=route.public_name, provider=route.provider, is_streamed=False)
    fallbacks = [
        fallback
        for fallback in await fallbacks_for(route, device.tier, epoch=epoch)
        if embeddings_adapter_for(fallback.provider) is not None  # others are skipped
    ]
    routes = _reachable([route, *fallbacks], epoch)
    return Planned(
        route.public_name,
        tuple(
            upstream
            if each is route
            else embeddings_outbound(each, prepared.request, end_user=end_user)
            for each in routes
        ),
    )


async def _embed(
    request: LeanRequest,
    settlement: Settlement[EmbeddingsOutbound],
    headers: dict[str, str],
    epoch: int,
) -> Response:
    call = attempts.run(
        settlement,
        lambda each, key, meter, deadline: embed(each, key=key, meter=meter, deadline=deadline),
        epoch=epoch,
    )
    answer = await _answered(request, settlement, headers, call)
    answer["model"] = settlement.requested
    tokens = settlement.billed_usage().tokens_in
    answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return json_response(answer, headers=_answer_headers(settlement, headers))


# --- Anthropic's Messages API ----------------------------------------------------


def _anthropic_error(error: GatewayError) -> Response:
    payload = messages_api.error_payload(error)
    return Response(error.status, orjson.dumps(payload), encode_headers(error.headers()))


@lean_endpoint("POST", errors=_anthropic_error)
async def messages(request: LeanRequest) -> Response | StreamResponse:
    """``POST /v1/messages``: an Anthropic Messages body as the equivalent chat
    request (gateway.proxy.messages), through chat's checks in chat's order, its
    admission, upstream call and settlement; the answer and errors in Anthropic's shape."""
    ip = client_ip_from_scope(request.scope)
    request.log["client_ip"] = ip
    _api_key_as_bearer(request.headers)
    await _guard(ip, request.headers)
    device, body = await _authenticated_body(request, ip)
    epoch = store.last_read_epoch()
    # Only a request with images may pass MAX_REQUEST_BYTES (as in _prepare).
    is_large = len(body) > settings.MAX_REQUEST_BYTES
    if is_large and b'"image"' not in body:
        raise _too_large()
    prepared = await _prepare(request, device, messages_api.to_chat_body(body), epoch)
    if is_large and not prepared.outbounds[0].request.images:
        raise _too_large()
    settlement, admission = await _admit(request, device, ip, prepared)
    headers = rate_limit_headers(admission=admission)
    if settlement.outbound.request.stream:
        return await _stream(request, settlement, headers, epoch, _message_events)
    completion = await _answered(request, settlement, headers, _completion(settlement, epoch))
    completion.body["usage"] = usage_payload(settlement.billed_usage())
    return json_response(
        messages_api.to_message(completion.body), headers=_answer_headers(settlement, headers)
    )


def _api_key_as_bearer(headers: dict[str, str]) -> None:
    """Anthropic's ``x-api-key`` carries the device token, as ``Authorization: Bearer``
    may; both, naming different tokens, are unusable credentials (401)."""
    key = headers.get("x-api-key")
    if key is None:
        return
    key = key.strip()
    authorization = headers.get("authorization")
    if authorization is None:
        headers["authorization"] = f"Bearer {key}"
    elif authorization.strip().partition(" ")[2].strip() != key:
        headers["authorization"] = "Conflicting x-api-key"


async def _message_events(
    settlement: Settlement[Outbound], first: Any, events: AsyncGenerator[Any, None]
) -> AsyncIterator[bytes]:
    """``_stream_body`` in Anthropic's events: settled the same way on every path."""
    translator = MessageEvents()
    event = first
    try:
        while not isinstance(event, StreamDone):
            out = translator.chunk(event, input_tokens=settlement.meter.reported_input or 0)
            if out:
                yield out
            event = await anext(events)
    except UpstreamError as error:
        await events.aclose()
        await settlement.close(ledger_status(error))
        yield error_event(error)
        return
    await settlement.close("ok")
    yield translator.end(event, settlement.billed_usage())
