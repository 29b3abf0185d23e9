"""After the provider answered: the real cost replaces the reservation, and
the request leaves exactly one usage record (the ledger of record).

Both start in ``settle``, which the proxy runs shielded from cancellation
(``gateway.lifecycle.finish``), so a client disconnect or a shutdown still
settles. The record is spooled first (a local append: durable before the
response); the store's settlement starts once the response is sent. If the
store cannot take it, the reservation expires by itself and the counters are
rebuilt from the ledger on the next store restart, while the money is
already in the record.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime

from billing.pricing import cost_micro_usd, micro_to_usd
from devices.auth import AuthenticatedDevice
from gateway import metrics
from gateway.errors import GatewayError
from gateway.lifecycle import after_response
from gateway.providers.base import Usage
from gateway.routes import Route
from usage import limits
from usage.backends.base import Reservation
from usage.services import UsageRecordData, usage_record_write

logger = logging.getLogger(__name__)

# The ledger's status for each way a request can end (UsageRecord.Status).
STATUS_BY_CODE = {
    "upstream_timeout": "upstream_timeout",
    "upstream_overloaded": "upstream_overloaded",
    "upstream_rejected": "upstream_rejected",
}


def ledger_status(error: GatewayError) -> str:
    return STATUS_BY_CODE.get(error.code, "upstream_error")


@dataclass(frozen=True, slots=True)
class Admitted:
    """What is known about an admitted request before it is forwarded."""

    request_id: str
    device: AuthenticatedDevice
    ip: str
    route: Route
    reservation: Reservation
    admitted_at: float  # gateway clock, epoch seconds
    started: float  # time.monotonic() when the request arrived
    is_streamed: bool


def cost_of(route: Route, usage: Usage) -> int:
    return cost_micro_usd(
        tokens_in=usage.tokens_in,
        tokens_out=usage.tokens_out,
        input_price=route.input_price_usd,
        output_price=route.output_price_usd,
    )


async def settle(admitted: Admitted, *, usage: Usage, status: str) -> int:
    """Record and settle one admitted request; returns its cost in micro-dollars."""
    route = admitted.route
    cost = cost_of(route, usage)
    await usage_record_write(
        UsageRecordData(
            request_id=admitted.request_id,
            device_id=admitted.device.id,
            owner=admitted.device.owner_id or "",
            ip=admitted.ip,
            model=route.public_name,
            provider=route.provider,
            tier=admitted.device.tier,
            tokens_in=usage.tokens_in,
            tokens_out=usage.tokens_out,
            cost_usd=micro_to_usd(cost),
            is_estimated=not usage.is_reported,
            status=status,
            is_streamed=admitted.is_streamed,
            duration_ms=round((time.monotonic() - admitted.started) * 1000),
            budget_day=date.fromisoformat(admitted.reservation.budget_day),
            created_at=datetime.fromtimestamp(admitted.admitted_at, tz=UTC),
        )
    )
    # The store's settlement is a round trip the client need not wait for:
    # until it lands the reservation (the worst case) still counts, so the
    # budget errs on the safe side. It starts once the response is sent, is
    # held by reference and drained at shutdown (gateway.lifecycle).
    after_response(_settle_in_store(admitted, cost))
    metrics.count_usage(route.public_name, usage.tokens_in, usage.tokens_out, cost)
    return cost


async def _settle_in_store(admitted: Admitted, cost: int) -> None:
    try:
        await limits.settle(admitted.reservation, actual_micro_usd=cost)
    except GatewayError:
        # The store is down: the reservation expires by itself; the record
        # is the truth the counters are rebuilt from.
        logger.error("could not settle %s in the store; its record is kept", admitted.request_id)
