"""The hot path: ``POST /v1/chat/completions`` and ``GET /v1/models`` as lean ASGI endpoints.

Every check runs in SPEC's order (IP guard, size cap, authentication,
validation, route and tier rules, then one atomic admission with the budget
reservation), the request is forwarded with the provider's key, and
``settlement.settle`` replaces the reservation with the real cost and
writes the one usage record, shielded from cancellation. No ORM call and no
thread hop on a warm request before the upstream call, and one Redis round
trip: with warm caches (the device, the blocklist) the admission script
confirms them itself (``usage.limits.Expectation``) instead of a read
before it; when anything moved it takes nothing and the request is checked
again the usual way, with the store's values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings

from billing import budget
from billing.alerts import alert_budget_exhausted
from billing.pricing import input_token_upper_bound, micro_to_usd, worst_case_micro_usd
from billing.services import budget_auto_pause
from devices.auth import AuthenticatedDevice, authenticate, cached_device, record_use
from devices.auth import prefetch_keys as auth_prefetch_keys
from gateway import clock, store
from gateway.db import run_sync
from gateway.errors import GatewayError, RequestTooLarge
from gateway.lean import (
    LeanRequest,
    Response,
    StreamResponse,
    encode_headers,
    json_response,
    lean_endpoint,
)
from gateway.lifecycle import finish, spawn
from gateway.providers import adapter_for
from gateway.providers.base import NO_USAGE, StreamDone, UpstreamError, Usage, estimate_tokens
from gateway.routes import models_for_tier, models_payload
from gateway.settlement import Admitted, ledger_status, settle
from gateway.upstream import complete_with_key_retry, stream_with_key_retry
from gateway.validation import PreparedChat, estimate_input_tokens, prepare_chat
from usage import guard, limits
from usage.http import rate_limit_headers, refusal_error
from usage.ipguard import client_ip_from_scope, limit_key

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


async def _guard(ip: str, headers: Mapping[str, str]) -> None:
    """The IP guard; its and authentication's store reads are made here in one
    round trip (gateway.store.prefetch)."""
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
    return json_response(models_payload(await models_for_tier(device.tier, epoch=epoch)))


@lean_endpoint("POST")
async def chat_completions(request: LeanRequest) -> Response | StreamResponse:
    ip = client_ip_from_scope(request.scope)
    request.log["client_ip"] = ip
    body: bytes | None = None
    too_large: RequestTooLarge | None = None
    view = _cached_view(request, ip)
    if view is not None:
        # From the caches, with one round trip before the upstream call: the
        # admission script itself confirms the view (or takes nothing). Any
        # error before it is answered the usual way below, in SPEC's order.
        try:
            body = await request.body()
            prepared = await _prepare(request, view.device, body, view.expect.epoch)
        except RequestTooLarge as error:
            too_large, prepared = error, None
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
                return await _forward(request, admitted, prepared, view.expect.epoch)
        for field in _CACHED_VIEW_LOG_FIELDS:
            request.log.pop(field, None)  # the usual path says again what it finds
    await _guard(ip, request.headers)
    if too_large is not None:
        raise too_large
    if body is None:
        body = await request.body()  # 413 before reading past MAX_REQUEST_BYTES
    device = await authenticate(request.headers, ip=ip)
    epoch = store.last_read_epoch()
    prepared = await _prepare(request, device, body, epoch)
    admitted = await _admit(request, device, ip, prepared)
    return await _forward(request, admitted, prepared, epoch)


_CACHED_VIEW_LOG_FIELDS = ("device_id", "model", "provider", "is_streamed")


@dataclass(frozen=True, slots=True)
class _CachedView:
    device: AuthenticatedDevice
    expect: limits.Expectation


def _cached_view(request: LeanRequest, ip: str) -> _CachedView | None:
    """The caller as this process's caches see it, if they can say (Redis only)."""
    if not settings.REDIS_URL:
        return None
    cached = cached_device(request.headers)
    blocklist = guard.cached_view(ip)
    if cached is None or blocklist is None:
        return None
    device, (device_version, epoch) = cached
    identity, blocklist_epoch, generation = blocklist
    if blocklist_epoch != epoch:
        return None
    return _CachedView(device, limits.Expectation(identity, device_version, epoch, generation))


async def _prepare(
    request: LeanRequest, device: AuthenticatedDevice, body: bytes, epoch: int
) -> PreparedChat:
    request.log["device_id"] = device.id
    prepared = await prepare_chat(body, device.tier, epoch=epoch)
    route = prepared.route
    # What only this provider refuses is refused here too, before it costs a request.
    adapter_for(route.provider).check_request(prepared.request)
    request.log.update(
        model=route.public_name, provider=route.provider, is_streamed=prepared.request.stream
    )
    return prepared


async def _forward(
    request: LeanRequest,
    admitted: tuple[Admitted, limits.Admission],
    prepared: PreparedChat,
    epoch: int,
) -> Response | StreamResponse:
    headers = rate_limit_headers(admission=admitted[1])
    if prepared.request.stream:
        return await _stream(request, admitted[0], prepared, headers, epoch)
    return await _complete(request, admitted[0], prepared, headers, epoch)


async def _admit(
    request: LeanRequest,
    device: AuthenticatedDevice,
    ip: str,
    prepared: PreparedChat,
    expect: limits.Expectation | None = None,
) -> tuple[Admitted, limits.Admission]:
    chat, route = prepared.request, prepared.route
    worst_case = worst_case_micro_usd(
        input_bound_tokens=input_token_upper_bound(chat.messages, tools=chat.tools),
        max_output_tokens=prepared.max_tokens,
        input_price=route.input_price_usd,
        output_price=route.output_price_usd,
    )
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
            spawn(_record_auto_pause())
        raise refusal_error(admission)
    admitted = Admitted(
        request_id=request.request_id,
        device=device,
        ip=ip,
        route=route,
        reservation=admission.reservation,
        admitted_at=clock.now(),
        started=request.started,
        is_streamed=chat.stream,
    )
    return admitted, admission


async def _record_auto_pause() -> None:
    """The budget is spent: keep the pause in the database and alert (off the request path)."""
    state = await run_sync(budget_auto_pause, reason="daily budget exhausted")
    spent, _reserved, _paused = await run_sync(budget.current_spend)
    alert_budget_exhausted(
        day=budget.budget_day(clock.now()),
        spent_micro=spent,
        budget_micro=budget.daily_budget_micro(),
    )
    logger.warning("daily budget exhausted: service paused until %s", state.until)


async def _settle(request: LeanRequest, admitted: Admitted, usage: Usage, status: str) -> int:
    """Settle shielded from cancellation; the cost goes into the access line whatever the end."""
    cost: int = await finish(settle(admitted, usage=usage, status=status))
    request.log["cost_usd"] = _cost_header(cost)
    return cost


def _cost_header(cost_micro: int) -> str:
    return f"{micro_to_usd(cost_micro):.6f}"


async def _complete(
    request: LeanRequest,
    admitted: Admitted,
    prepared: PreparedChat,
    headers: dict[str, str],
    epoch: int,
) -> Response:
    upstream_started = time.monotonic()
    try:
        completion = await complete_with_key_retry(
            prepared.route,
            prepared.request,
            max_tokens=prepared.max_tokens,
            epoch=epoch,
        )
    except GatewayError as error:
        await _settle_failure(request, admitted, error, headers, upstream_started)
        raise
    except BaseException:
        await _settle_interrupted(request, admitted, prepared)
        raise
    _log_usage(request, admitted, completion.usage, upstream_started)
    cost = await _settle(request, admitted, completion.usage, "ok")
    return json_response(
        completion.body, headers={**headers, "X-Request-Cost-USD": _cost_header(cost)}
    )


async def _settle_failure(
    request: LeanRequest,
    admitted: Admitted,
    error: GatewayError,
    headers: dict[str, str],
    upstream_started: float,
) -> None:
    """Settle a request that failed before any output; its error response is still an
    admitted one: it carries the rate-limit headers and what it cost.

    An error of the gateway's own (no provider key) was raised before anything
    reached the provider: it costs nothing.
    """
    usage = error.usage if isinstance(error, UpstreamError) else NO_USAGE
    _log_usage(request, admitted, usage, upstream_started)
    cost = await _settle(request, admitted, usage, ledger_status(error))
    error.extra_headers.update(headers)
    error.extra_headers["X-Request-Cost-USD"] = _cost_header(cost)


async def _settle_interrupted(
    request: LeanRequest, admitted: Admitted, prepared: PreparedChat
) -> None:
    """Cancelled (shutdown) or a bug before any output: the provider may have read the input."""
    usage = Usage(estimate_input_tokens(prepared.request), 0, False)
    await _settle(request, admitted, usage, "upstream_error")


def _log_usage(
    request: LeanRequest, admitted: Admitted, usage: Usage, upstream_started: float
) -> None:
    request.log.update(
        tokens_in=usage.tokens_in,
        tokens_out=usage.tokens_out,
        upstream_ms=round((time.monotonic() - upstream_started) * 1000, 1),
    )


async def _stream(
    request: LeanRequest,
    admitted: Admitted,
    prepared: PreparedChat,
    headers: dict[str, str],
    epoch: int,
) -> StreamResponse:
    events = stream_with_key_retry(
        prepared.route,
        prepared.request,
        max_tokens=prepared.max_tokens,
        epoch=epoch,
    )
    upstream_started = time.monotonic()
    try:
        # The first event decides the HTTP status: a provider that fails
        # before any output is a plain error response, not a broken stream.
        first = await anext(events)
    except GatewayError as error:
        await events.aclose()
        await _settle_failure(request, admitted, error, headers, upstream_started)
        raise
    except BaseException:
        await events.aclose()
        await _settle_interrupted(request, admitted, prepared)
        raise
    body = _stream_body(request, admitted, prepared, first, events, upstream_started)
    return StreamResponse(body, headers=encode_headers(headers))


class _Progress:
    """What the client has received so far, to charge an abandoned stream."""

    def __init__(self, input_tokens: int) -> None:
        self.input_tokens = input_tokens
        self.text_chars = 0
        self.pieces = 0

    def saw(self, chunk: dict[str, Any]) -> None:
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.text_chars += len(content)
                self.pieces += 1
            for call in delta.get("tool_calls") or ():
                arguments = (call.get("function") or {}).get("arguments")
                if isinstance(arguments, str) and arguments:
                    self.text_chars += len(arguments)
                    self.pieces += 1

    def usage(self, reported: Usage | None = None) -> Usage:
        """Input plus the output streamed so far (never zero), estimated."""
        estimated_out = estimate_tokens(self.text_chars, self.pieces)
        if reported is not None:
            return Usage(
                max(reported.tokens_in, self.input_tokens),
                max(reported.tokens_out, estimated_out),
                False,
            )
        return Usage(self.input_tokens, estimated_out, False)


async def _keep_reserved(admitted: Admitted) -> None:
    """Hold a long stream's reservation; a store outage must not cut the stream.

    If the store is down the reservation may lapse; the stream is still
    settled (or, if the store stays down, counted from its usage record).
    """
    try:
        await limits.extend_reservation(admitted.reservation)
    except GatewayError:
        logger.warning("could not extend the reservation of %s", admitted.request_id)


async def _stream_body(
    request: LeanRequest,
    admitted: Admitted,
    prepared: PreparedChat,
    first: Any,
    events: AsyncGenerator[Any, None],
    upstream_started: float,
) -> AsyncIterator[bytes]:
    progress = _Progress(estimate_input_tokens(prepared.request))
    usage: Usage | None = None
    status = "client_disconnected"
    extend_every = limits.reservation_seconds() / 2
    extended_at = time.monotonic()
    try:
        event = first
        while True:
            if isinstance(event, StreamDone):
                usage, status = event.usage, "ok"
                break
            progress.saw(event)
            yield b"data: " + orjson.dumps(event) + b"\n\n"
            if time.monotonic() - extended_at > extend_every:
                await _keep_reserved(admitted)
                extended_at = time.monotonic()
            event = await anext(events)
        cost = await _settle(request, admitted, usage, status)
        _log_usage(request, admitted, usage, upstream_started)
        if prepared.request.include_usage:
            chunk = event.usage_chunk(cost_usd=float(micro_to_usd(cost)))
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        yield DONE
    except UpstreamError as error:
        usage, status = progress.usage(error.usage), ledger_status(error)
        yield b"data: " + orjson.dumps(error.payload()) + b"\n\n" + DONE
    finally:
        await events.aclose()  # cancels the upstream request if it is still running
        if status != "ok":
            final = usage if usage is not None else progress.usage()
            _log_usage(request, admitted, final, upstream_started)
            await _settle(request, admitted, final, status)
