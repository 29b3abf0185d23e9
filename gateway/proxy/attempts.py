"""Retries and fallbacks before any output: a provider that fails should not reach the client.

A request may try, in order, its own route and then the fallbacks admission
reserved for (``Settlement.fallbacks``); on each route, the provider's keys
in turn (``gateway.proxy.keys``), skipping any whose circuit breaker is open
(``usage.breakers``). It moves on only when the attempt that failed **costs
nothing** under the cost-truth rules: the request never reached the provider
(connect failure), or the provider refused it without doing the work (429,
529, a 503 that sheds load, another 5xx, 401/403) and reported no usage. So
a retry is never billed twice, and what the attempts cost never exceeds the
reservation (the worst case over every route the request may reach).

Never retried: a read timeout (the provider may still finish and bill it),
a provider 4xx that is the client's fault (context too long, a bad
parameter), an answer cut off or unreadable (it may have been billed), and
anything once output has reached the client: a stream is retried only until
its first event. Every attempt runs inside one deadline
(``UPSTREAM_TOTAL_TIMEOUT_SECONDS``), at most ``UPSTREAM_MAX_ATTEMPTS`` of
them, with full-jitter backoff between them.

Which route failed and which key: a 401/403 and a 429 are the key's (it is
refetched, or benched for the Retry-After, and counts toward the key's
breaker); every other failure is the route's provider's (its breaker).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from django.conf import settings

from gateway.core.errors import GatewayError
from gateway.proxy import keys
from gateway.proxy.keys import ProviderKey, ProviderKeyUnavailable
from gateway.proxy.providers.base import (
    Billable,
    Meter,
    StreamDone,
    StreamEvent,
    UpstreamAuthRejected,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from gateway.proxy.routes import Route
from gateway.proxy.settlement import Settlement
from usage import breakers
from usage.types import AttemptOutcome

T = TypeVar("T")
OutboundT = TypeVar("OutboundT", bound=Billable)
# An attempt: (its route's request, the key, its meter, the deadline no timeout passes
# or None: the usual timeouts).
Attempt = Callable[[OutboundT, ProviderKey, Meter, float | None], Awaitable[T]]

# Full-jitter backoff before the n-th retry: uniform(0, min(cap, first * 2**(n-1))).
BACKOFF_FIRST_SECONDS = 0.05
BACKOFF_MAX_SECONDS = 1.0


class NoRouteAvailable(UpstreamOverloaded):
    """Every route the request may reach is skipped (breaker open, every key benched or
    missing): nothing was sent, nothing is charged."""

    message = "The model provider is unavailable, retry later"


def check_reachable(routes: Iterable[Route]) -> None:
    """NoRouteAvailable when every route's breaker is open and none may be probed yet:
    refused before admission, so an outage costs no client a request of its quota."""
    waits = []
    for route in routes:
        wait = breakers.skipped_for(breakers.route_target(route.public_name))
        if not wait:
            return
        waits.append(wait)
    raise NoRouteAvailable(retry_after=max(1, math.ceil(min(waits))))


def _costs_nothing(meter: Meter) -> bool:
    return not meter.is_sent or (meter.is_refused and meter.salvaged is None)


def _outcome(error: UpstreamError) -> AttemptOutcome:
    if isinstance(error, UpstreamTimeout):
        return "timeout"
    if isinstance(error, UpstreamRejected):
        return "rejected"
    return "failure"


async def run(
    settlement: Settlement[OutboundT],
    attempt: Attempt[OutboundT, T],
    *,
    epoch: int,
    reports_success: bool = True,
) -> T:
    """``attempt(outbound, key, meter, deadline)`` on the request's routes and keys until one
    answers; the last error when none does (see the module docstring)."""
    deadline = time.monotonic() + float(settings.UPSTREAM_TOTAL_TIMEOUT_SECONDS)
    routes = (settlement.outbound, *settlement.fallbacks)
    last_error: GatewayError | None = None
    for outbound in routes:
        route = outbound.route
        route_target = breakers.route_target(route.public_name)
        if not await breakers.allow(route_target):
            continue
        try:
            pool = await keys.pool(route.provider, epoch=epoch)
        except ProviderKeyUnavailable as error:
            last_error = last_error or error
            continue
        tried: set[ProviderKey] = set()
        while True:
            key = await _next_key(route.provider, pool, tried)
            if key is None:
                breakers.release(route_target)  # a probe it won goes unused
                break
            key_target = breakers.key_target(route.provider, key.key_id)
            if settlement.attempts and not await _may_retry(settlement.attempts, deadline):
                breakers.release(route_target)
                breakers.release(key_target)
                raise last_error or NoRouteAvailable(retry_after=1)
            tried.add(key)
            settlement.begin_attempt(outbound)
            try:
                # The first attempt has the usual timeouts; a retry, what the deadline leaves.
                limit = deadline if settlement.attempts > 1 else None
                result = await attempt(outbound, key, settlement.meter, limit)
            except UpstreamError as error:
                # A refused key is the key's failure; any other, its route's provider's.
                # The other breaker learns nothing (a probe it let through is given back).
                is_keys_fault = isinstance(error, UpstreamAuthRejected | UpstreamRateLimited)
                breakers.report(key_target if is_keys_fault else route_target, _outcome(error))
                if not is_keys_fault:
                    breakers.release(key_target)
                if isinstance(error, UpstreamRejected | UpstreamTimeout) or not _costs_nothing(
                    settlement.meter
                ):
                    raise
                last_error = error
                if isinstance(error, UpstreamAuthRejected):
                    await keys.rejected(key, epoch=epoch)  # refetched; benched if still there
                    pool = await keys.pool(route.provider, epoch=epoch)
                elif isinstance(error, UpstreamRateLimited):
                    keys.bench(key, float(error.retry_after or 1))
                continue  # the next key, then the next route
            except BaseException:
                # Cancelled (the client left, a shutdown): no outcome to report.
                breakers.release(route_target)
                breakers.release(key_target)
                raise
            if reports_success:  # (a stream reports its outcome when it ends)
                breakers.report(route_target, "ok")
                breakers.report(key_target, "ok")
            return result
    if last_error is not None:
        raise last_error
    raise NoRouteAvailable(retry_after=_retry_after(routes))


async def _next_key(
    provider: str, pool: tuple[ProviderKey, ...], tried: set[ProviderKey]
) -> ProviderKey | None:
    """The next key in turn not tried yet and whose breaker lets it through."""
    for key in keys.in_turn(provider, pool):
        if key not in tried and await breakers.allow(breakers.key_target(provider, key.key_id)):
            return key
    return None


async def _may_retry(retry: int, deadline: float) -> bool:
    """Sleep before the ``retry``-th retry; False past UPSTREAM_MAX_ATTEMPTS or when the
    deadline leaves no time."""
    if retry >= int(settings.UPSTREAM_MAX_ATTEMPTS):
        return False
    delay = random.uniform(0, min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (retry - 1)))
    if time.monotonic() + delay >= deadline:
        return False
    await asyncio.sleep(delay)
    return True


def _retry_after(routes: Iterable[Billable]) -> int:
    """When a route may be back: the soonest benched key, else a breaker's cool-down."""
    soonest = [
        wait
        for outbound in routes
        if (wait := keys.soonest_free(outbound.route.provider)) is not None
    ]
    if soonest:
        return max(1, round(min(soonest)))
    return int(settings.BREAKER_COOLDOWN_SECONDS)


# --- streams ---------------------------------------------------------------------


async def stream(
    settlement: Settlement[Any],
    open_stream: Callable[
        [Any, ProviderKey, Meter, float | None], AsyncGenerator[StreamEvent, None]
    ],
    *,
    epoch: int,
) -> AsyncGenerator[StreamEvent, None]:
    """``open_stream``'s events, retried like ``run`` until the first event (none after).

    Events of a fallback route name the model the client asked for. The breakers
    learn the stream's outcome when it ends: one that breaks mid-way is its
    route's failure (though never retried); one the client leaves, nothing.
    """
    keys_used: list[ProviderKey] = []

    async def first_event(
        outbound: Any, key: ProviderKey, meter: Meter, deadline: float | None
    ) -> tuple[StreamEvent, AsyncGenerator[StreamEvent, None]]:
        keys_used.append(key)
        events = open_stream(outbound, key, meter, deadline)
        try:
            return await anext(events), events
        except BaseException:
            await events.aclose()
            raise

    first, events = await run(settlement, first_event, epoch=epoch, reports_success=False)
    route, key = settlement.route, keys_used[-1]
    route_target = breakers.route_target(route.public_name)
    key_target = breakers.key_target(route.provider, key.key_id)
    requested = settlement.requested
    renamed = route.public_name != requested
    outcome: AttemptOutcome | None = None
    try:
        event = first
        while True:
            if isinstance(event, StreamDone):
                outcome = "ok"
            yield _as_requested(event, requested) if renamed else event
            if outcome is not None:
                return
            event = await anext(events)
    except UpstreamError as error:
        outcome = _outcome(error)
        raise
    finally:
        await events.aclose()
        if outcome is None:  # the client left (or a shutdown): nothing learned
            breakers.release(route_target)
            breakers.release(key_target)
        else:
            breakers.report(route_target, outcome)
            breakers.report(key_target, "ok")


def _as_requested(event: StreamEvent, model: str) -> StreamEvent:
    if isinstance(event, StreamDone):
        return StreamDone(event.id, event.created, model, event.finish_reason)
    event["model"] = model
    return event
