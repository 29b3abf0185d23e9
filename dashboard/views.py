"""The staff dashboard (SPEC section 3): one page, and the forms it posts.

Every view needs ``gateway.core.permissions.is_verified_staff`` (staff, plus the
TOTP second factor when ADMIN_REQUIRE_2FA is on); anyone else is sent to the
admin login. Each form also needs its ability (``gateway.core.permissions``:
403 without it), and the page shows only the forms the user may send.
Writes go through the devices and billing services with the staff user as
actor and the client IP, so each leaves its audit record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import user_passes_test
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from billing.services import budget_pause, budget_resume
from dashboard import charts
from dashboard.selectors import dashboard_overview
from devices import services
from devices.models import Device
from devices.selectors import device_get
from gateway.core.client_ip import client_ip_from_request
from gateway.core.errors import GatewayError
from gateway.core.permissions import (
    CHANGE_DEVICES,
    PAUSE_SERVICE,
    abilities_of,
    is_verified_staff,
    requires,
)

View = Callable[..., HttpResponse]


def staff_only(view: View) -> View:
    return never_cache(user_passes_test(is_verified_staff, login_url="admin:login")(view))


@staff_only
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    may = abilities_of(request.user)
    data = dashboard_overview()
    context = {
        "may": may,
        "overview": data,
        "gauge": charts.gauge(data.spend),
        "by_day": charts.column_chart(data.by_day),
        "by_model": charts.bar_list(data.by_model),
        "tiers": Device.Tier.choices,
    }
    return render(request, "dashboard/overview.html", context)


def _act(request: HttpRequest, action: Callable[[], Any], done: str) -> HttpResponse:
    try:
        action()
    except GatewayError as error:
        messages.error(request, error.detail)
    except ValueError as error:  # billing's services refuse bad input with ValueError
        messages.error(request, str(error))
    else:
        messages.success(request, done)
    return redirect("dashboard:overview")


def _act_on_device(
    request: HttpRequest, device_id: str, service: Callable[..., Any], done: str, **fields: Any
) -> HttpResponse:
    return _act(
        request,
        lambda: service(
            device=device_get(device_id),
            actor=request.user,
            ip=client_ip_from_request(request),
            **fields,
        ),
        f"Device {device_id} {done}.",
    )


@staff_only
@requires(CHANGE_DEVICES)
@require_POST
def approve(request: HttpRequest, device_id: str) -> HttpResponse:
    tier = request.POST.get("tier") or None
    return _act_on_device(request, device_id, services.device_approve, "approved", tier=tier)


@staff_only
@requires(CHANGE_DEVICES)
@require_POST
def reject(request: HttpRequest, device_id: str) -> HttpResponse:
    return _act_on_device(request, device_id, services.device_reject, "rejected")


@staff_only
@requires(PAUSE_SERVICE)
@require_POST
def pause(request: HttpRequest) -> HttpResponse:
    reason = request.POST.get("reason", "").strip()[:500]
    return _act(
        request,
        lambda: budget_pause(
            reason=reason,
            actor=request.user.get_username(),
            ip=client_ip_from_request(request),
        ),
        "Service paused: every client request now gets 503 service_paused.",
    )


@staff_only
@requires(PAUSE_SERVICE)
@require_POST
def resume(request: HttpRequest) -> HttpResponse:
    return _act(
        request,
        lambda: budget_resume(
            actor=request.user.get_username(), ip=client_ip_from_request(request)
        ),
        "Service resumed.",
    )
