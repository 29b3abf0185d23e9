"""Low-volume /v1 endpoints served by Django (the hot path is gateway.proxy.endpoints)."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse
from django.views.decorators.http import require_GET

from billing.selectors import usage_stats
from devices.auth import DeviceRequest, device_required
from gateway.core import clock
from gateway.core.client_ip import client_ip_from_request, limit_key
from gateway.core.db import run_sync
from usage import limits
from usage.http import iso8601


def _layer(layer: limits.Layer | None) -> dict[str, Any] | None:
    if layer is None:
        return None
    return {"limit": layer.limit, "remaining": layer.remaining, "resetAt": iso8601(layer.reset_at)}


@require_GET
@device_required
async def usage_stats_view(request: DeviceRequest) -> JsonResponse:
    """``GET /v1/usage/stats``: the caller's own figures (SPEC section 2)."""
    device = request.device
    layers = await limits.layer_state(
        device_id=device.id,
        ip=limit_key(client_ip_from_request(request)),
        user_id=device.owner_id,
        tier=device.tier,
    )
    figures = await run_sync(usage_stats, device_id=device.id, now=clock.now())
    return JsonResponse(
        {
            "device": {"id": device.id, "status": device.status, "tier": device.tier},
            "today": figures["today"],
            "month": figures["month"],
            "limits": {
                "device": _layer(layers.get("device")),
                "ip": _layer(layers.get("ip")),
                "user": _layer(layers.get("user")) if device.owner_id else None,
                "burst": _layer(layers.get("burst")),
            },
            "byModel": figures["byModel"],
        }
    )
