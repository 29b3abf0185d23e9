"""The HTTP face of an admission: the refusal to raise, the headers to send."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from gateway.core.errors import GatewayError
from usage.errors import (
    LAYER_ERRORS,
    BudgetExceeded,
    ConcurrencyLimited,
    DeviceBudgetExceeded,
    ServicePaused,
)
from usage.limits import Admission


def iso8601(moment: float) -> str:
    """``2026-11-27T10:00:00Z``; rounded up, so retrying at that second is never early."""
    return datetime.fromtimestamp(math.ceil(moment), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rate_limit_headers(admission: Admission) -> dict[str, str]:
    """SPEC's ``X-RateLimit-*`` headers (remaining counts after this request)."""
    device = admission.layers["device"]
    ip = admission.layers["ip"]
    return {
        "X-RateLimit-Limit-Device": str(device.limit),
        "X-RateLimit-Remaining-Device": str(device.remaining),
        "X-RateLimit-Reset-Device": iso8601(device.reset_at),
        "X-RateLimit-Limit-IP": str(ip.limit),
        "X-RateLimit-Remaining-IP": str(ip.remaining),
    }


def refusal_error(admission: Admission) -> GatewayError:
    """The error a refused admission answers with (429 or 503, with Retry-After)."""
    if admission.admitted or admission.refused_by is None:
        raise ValueError("an admitted request has no refusal")
    refused_by = admission.refused_by
    retry_after = admission.retry_after
    if refused_by == "paused":
        return ServicePaused(retry_after=retry_after)
    if refused_by == "budget":
        return BudgetExceeded(retry_after=retry_after)
    if refused_by == "device_budget":
        return DeviceBudgetExceeded(retry_after=retry_after)
    if refused_by == "concurrency":
        return ConcurrencyLimited(retry_after=retry_after)
    layer = admission.layers[refused_by]
    return LAYER_ERRORS[refused_by](
        retry_after=retry_after,
        headers=rate_limit_headers(admission),
        limit=layer.limit,
        window=layer.window,
        resetAt=iso8601(layer.reset_at),
    )
