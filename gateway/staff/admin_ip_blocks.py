"""Admin page: IPs blocked for repeated failed authentications, each with a "lift" button.

The blocks live in the shared store (``usage.guard``): this page lists them
with ``list_ip_blocks()`` and lifts one with ``lift_ip_block(ip)``. Networks
blocked by hand are ``usage.BlockedNetwork`` rows, edited in their own admin.
Seeing the page needs the view or change permission of that model, lifting
a block its change permission (``gateway.core.permissions``), as editing one of
its rows does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from gateway.core import clock
from gateway.core.permissions import LIFT_IP_BLOCKS, VIEW_IP_BLOCKS, ensure_staff_may
from usage import guard


def ip_blocks_view(request: HttpRequest, *, context: dict[str, Any]) -> HttpResponse:
    if request.method == "POST":
        ensure_staff_may(request.user, LIFT_IP_BLOCKS)
        ip = request.POST.get("ip", "").strip()
        if ip and guard.lift_ip_block(ip):
            messages.success(request, f"Lifted the block on {ip}.")
        else:
            messages.warning(request, f"{ip or 'That address'} was not blocked.")
        return redirect("admin:ip_blocks")
    ensure_staff_may(request.user, VIEW_IP_BLOCKS)
    now = clock.now()
    blocks = [
        {
            "ip": block.ip,
            "until": datetime.fromtimestamp(block.until, tz=UTC),
            "minutes_left": max(1, round((block.until - now) / 60)),
        }
        for block in guard.list_ip_blocks()
        if block.until > now
    ]
    return TemplateResponse(
        request, "admin/ip_blocks.html", {**context, "title": "Blocked IPs", "blocks": blocks}
    )
