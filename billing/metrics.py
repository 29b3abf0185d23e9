"""Budget gauges for ``/metrics``, read from the shared store when scraped.

Spent, reserved and the pause are shared state: every worker would report
the same figures, so they are not recorded per process but computed by the
worker that answers the scrape (one store round trip, the same figures
``budget_status`` prints).
"""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

from gateway.core.errors import GatewayError
from gateway.core.metrics import gauge
from gateway.core.money import usd_float
from usage import limits


async def budget_gauges() -> list[GaugeMetricFamily]:
    try:
        state = await limits.budget_state()
    except GatewayError:  # StoreUnavailable: the scrape still answers, and says so
        return [gauge("hanzo_store_up", "1 when the shared store (Redis) answers.", 0)]
    paused = state.pause
    return [
        gauge("hanzo_store_up", "1 when the shared store (Redis) answers.", 1),
        gauge(
            "hanzo_budget_usd", "The daily budget (DAILY_BUDGET_USD).", _usd(state.budget_micro_usd)
        ),
        gauge(
            "hanzo_budget_spent_usd",
            "Settled spend of the current budget day.",
            _usd(state.spent_micro_usd),
        ),
        gauge(
            "hanzo_budget_reserved_usd",
            "Worst-case cost reserved by requests in flight.",
            _usd(state.reserved_micro_usd),
        ),
        gauge(
            "hanzo_budget_remaining_usd",
            "Budget minus spent minus reserved (what new requests may still reserve).",
            _usd(state.remaining_micro_usd),
        ),
        gauge(
            "hanzo_service_paused",
            "1 while the service is paused (budget spent, or by an operator).",
            1 if paused is not None else 0,
        ),
        gauge(
            "hanzo_service_auto_paused",
            "1 while the service is paused because the daily budget is spent.",
            1 if paused is not None and paused.is_automatic else 0,
        ),
    ]


def _usd(micro: int) -> float:
    return usd_float(micro)
