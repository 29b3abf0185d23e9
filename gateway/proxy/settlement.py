"""The money of one admitted request: opened at admission, closed exactly once.

Admission hands the proxy a ``Settlement``. Whatever ends the request (its
answer, a provider error, a timeout, a client that leaves before or after
the response started, a pipelined request never started, cancellation, a
worker shutting down, a bug), ``close`` runs once: the first call decides
the status, later calls get the same cost. The lean layer closes whatever
the proxy did not (``LeanRequest.defer``), so no settlement depends on a
generator's ``finally`` or on the client reading.

Closing computes the cost from the request's ``Meter`` (SPEC's rule: the
provider's usage, else never less than it may bill) at the prices of the
route that answered, plus what any earlier attempt may cost (another key or a
fallback route: ``begin_attempt``; nothing, by ``gateway.proxy.attempts``'
rules, unless a provider reported usage with its refusal), spools the one usage
record (durable before the response) and, once the response is sent,
settles the store: retried until the store takes it, while this process's
heartbeat keeps the reservation, and the money with it (``usage.liveness``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, date, datetime
from typing import Any, Generic, TypeVar

from billing import budget
from billing.alerts import alert_budget_exhausted
from billing.pricing import micro_to_usd
from billing.services import budget_auto_pause
from devices.auth import AuthenticatedDevice
from gateway.core import clock, metrics
from gateway.core.db import run_sync
from gateway.core.errors import GatewayError
from gateway.core.lifecycle import after_response, spawn
from gateway.proxy.providers.base import Billable, Meter, Usage
from gateway.proxy.routes import Route
from usage import limits, liveness
from usage.backends.base import Reservation
from usage.days import budget_day
from usage.services import UsageRecordData, usage_record_write

logger = logging.getLogger(__name__)

# The ledger's status for each way a request can end (UsageRecord.Status).
STATUS_BY_CODE = {
    "upstream_timeout": "upstream_timeout",
    "upstream_overloaded": "upstream_overloaded",
    "upstream_rejected": "upstream_rejected",
}
# Store settlement retries: from this delay, doubling up to the cap.
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 5.0


def ledger_status(error: GatewayError) -> str:
    return STATUS_BY_CODE.get(error.code, "upstream_error")


# The request as sent upstream: a chat completion's Outbound or an EmbeddingsOutbound.
OutboundT = TypeVar("OutboundT", bound=Billable)


class Settlement(Generic[OutboundT]):
    """One admitted request's money (see the module docstring)."""

    def __init__(
        self,
        *,
        request_id: str,
        device: AuthenticatedDevice,
        ip: str,
        outbound: OutboundT,
        reservation: Reservation,
        started: float,
        log: dict[str, Any],
        fallbacks: tuple[OutboundT, ...] = (),
        requested: str = "",
    ) -> None:
        self.request_id = request_id
        self.device = device
        self.ip = ip
        self.outbound = outbound
        self.reservation = reservation
        self.admitted_at = clock.now()
        self.started = started  # time.monotonic() when the request arrived
        self.log = log  # the request's access-line fields: tokens and cost go there
        self.meter = Meter()  # the current attempt's
        # The model the client asked for (``route`` is the one answering).
        self.requested = requested or outbound.route.public_name
        # The routes it may fall back to, their bounds inside the reservation.
        self.fallbacks = fallbacks
        # Upstream attempts made (0: none, e.g. every route's breaker open), and what
        # the providers may bill for those before the current one (other keys,
        # fallback routes): nothing, unless one reported usage with its error.
        self.attempts = 0
        self.prior_cost = 0
        self.prior_tokens_in = 0
        self.prior_tokens_out = 0
        self.usage: Usage | None = None  # what was billed, once closed
        self.cost_text = ""  # its cost in USD with six places, once closed
        self._closing: asyncio.Task[int] | None = None
        liveness.hold()

    @property
    def route(self) -> Route:
        return self.outbound.route

    @property
    def is_closed(self) -> bool:
        return self._closing is not None

    async def close(self, status: str) -> int:
        """Settle once (the first call's status wins); the cost in micro-dollars.

        Shielded: a caller cancelled while waiting does not stop it.
        """
        if self._closing is None:
            self._closing = spawn(self._record(status))
        return await asyncio.shield(self._closing)

    def begin_attempt(self, outbound: OutboundT) -> None:
        """An upstream attempt starts (the first, another key, a fallback route): what an
        earlier one may cost is kept, and ``outbound`` (its route, body, bounds) is current."""
        if self._closing is not None:
            raise RuntimeError("a closed settlement takes no more attempts")
        if self.attempts:
            usage = self.billed_usage()
            self.prior_cost += self.route.cost_micro_usd(usage.tokens_in, usage.tokens_out)
            self.prior_tokens_in += usage.tokens_in
            self.prior_tokens_out += usage.tokens_out
            self.meter = Meter()
        self.outbound = outbound
        self.attempts += 1

    def billed_usage(self) -> Usage:
        outbound = self.outbound
        return self.meter.usage(
            input_bound=outbound.input_bound,
            output_bound=outbound.output_bound,
            hides_reasoning=outbound.route.has_hidden_reasoning,
        )

    async def _record(self, status: str) -> int:
        route = self.route
        usage = self.usage = self.billed_usage()
        cost = route.cost_micro_usd(usage.tokens_in, usage.tokens_out) + self.prior_cost
        tokens_in = usage.tokens_in + self.prior_tokens_in
        tokens_out = usage.tokens_out + self.prior_tokens_out
        cost_usd = micro_to_usd(cost)
        self.cost_text = f"{cost_usd:.6f}"
        self.log.update(tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=self.cost_text)
        if self.attempts > 1:
            self.log.update(attempts=self.attempts, route_target=route.public_name)
        try:
            await usage_record_write(
                UsageRecordData(
                    request_id=self.request_id,
                    device_id=self.device.id,
                    owner=self.device.owner_id or "",
                    ip=self.ip,
                    model=route.public_name,
                    provider=route.provider,
                    tier=self.device.tier,
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    cost_usd=cost_usd,
                    is_estimated=not usage.is_reported,
                    status=status,
                    is_streamed=self.outbound.is_streamed,
                    duration_ms=round((time.monotonic() - self.started) * 1000),
                    budget_day=date.fromisoformat(self.reservation.budget_day),
                    created_at=datetime.fromtimestamp(self.admitted_at, tz=UTC),
                    requested_model=self.requested,
                    attempts=self.attempts,
                )
            )
        finally:
            # The store's settlement is a round trip the client need not wait
            # for: until it lands the reservation (the worst case) still
            # counts, so the budget errs on the safe side. It starts once the
            # response is sent, is held by reference and drained at shutdown.
            after_response(self._settle_in_store(cost))
        metrics.count_usage(route.public_name, tokens_in, tokens_out, cost)
        return cost

    async def _settle_in_store(self, cost: int) -> None:
        delay = RETRY_FIRST_SECONDS
        try:
            while True:
                try:
                    settled = await limits.settle(self.reservation, actual_micro_usd=cost)
                except GatewayError:
                    # The store is down: the reservation holds the money (this
                    # process's heartbeat keeps it, or it expires at its worst
                    # case if the process dies), and the record is spooled.
                    logger.warning("could not settle %s in the store; retrying", self.request_id)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_SECONDS)
                    continue
                if settled.auto_paused:
                    spawn(record_auto_pause())
                return
        finally:
            liveness.release()


async def record_auto_pause() -> None:
    """Settled spend left less than the floor: keep the pause in the database and
    alert (off the request path)."""
    state = await run_sync(budget_auto_pause, reason="daily budget exhausted")
    spent, _reserved, _paused = await run_sync(budget.current_spend)
    alert_budget_exhausted(
        day=budget_day(clock.now()),
        spent_micro=spent,
        budget_micro=budget.daily_budget_micro(),
    )
    logger.warning("daily budget exhausted: service paused until %s", state.until)
