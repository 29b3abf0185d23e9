"""Who may use the admin, the dashboard and the admin JSON API, and do what there.

Two rules, the same on all three surfaces:

* getting in: an active staff user who, when ``ADMIN_REQUIRE_2FA`` is on,
  has also passed the TOTP second factor in this session (the setting is
  read on every call: tests and operators may flip it);
* acting: each ``Ability`` below needs one of its Django permissions
  (superusers hold them all). The Django admin checks the same permissions
  through its ModelAdmins; the dashboard, the admin JSON API and the
  IP-block page check them here, and the dashboard and the admin pages hide
  the controls of abilities the user lacks (``abilities_of``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

if TYPE_CHECKING:
    # Not at run time: DRF's views import the default permission (this module).
    from django.http import HttpRequest, HttpResponse
    from rest_framework.request import Request
    from rest_framework.views import APIView


@dataclass(frozen=True)
class Ability:
    """Something staff may do, and the Django permissions granting it (any one of them)."""

    name: str
    permissions: tuple[str, ...]
    description: str


VIEW_DEVICES = Ability(
    "view_devices", ("devices.view_device", "devices.change_device"), "see devices"
)
CHANGE_DEVICES = Ability(
    "change_devices",
    ("devices.change_device",),
    "approve, reject, suspend or revoke devices",
)
PAUSE_SERVICE = Ability("pause_service", ("billing.pause_service",), "pause or resume the service")
VIEW_IP_BLOCKS = Ability(
    "view_ip_blocks",
    ("usage.view_blockednetwork", "usage.change_blockednetwork"),
    "see blocked IP addresses",
)
LIFT_IP_BLOCKS = Ability("lift_ip_blocks", ("usage.change_blockednetwork",), "lift IP blocks")
ABILITIES = (VIEW_DEVICES, CHANGE_DEVICES, PAUSE_SERVICE, VIEW_IP_BLOCKS, LIFT_IP_BLOCKS)


def is_verified_staff(user: Any) -> bool:
    if user is None or not user.is_authenticated:
        return False
    if not (user.is_active and user.is_staff):
        return False
    if not settings.ADMIN_REQUIRE_2FA:
        return True
    # OTPMiddleware installs is_verified(); without it nobody is verified.
    is_verified = getattr(user, "is_verified", None)
    return bool(is_verified is not None and is_verified())


def staff_may(user: Any, ability: Ability) -> bool:
    """Verified staff holding one of ``ability``'s permissions (superusers hold all)."""
    return is_verified_staff(user) and any(user.has_perm(name) for name in ability.permissions)


def abilities_of(user: Any) -> dict[str, bool]:
    """``{"change_devices": True, ...}``: what templates ask before showing a control."""
    return {ability.name: staff_may(user, ability) for ability in ABILITIES}


def ensure_staff_may(user: Any, ability: Ability) -> None:
    """Raise Django's PermissionDenied (a 403) unless ``staff_may(user, ability)``."""
    if not staff_may(user, ability):
        raise PermissionDenied(f"Your account may not {ability.description}.")


View = Callable[..., "HttpResponse"]


def requires(ability: Ability) -> Callable[[View], View]:
    """Django view decorator: 403 unless the user may ``ability``.

    Goes inside the login decorator, so that anonymous callers are still
    sent to the login page rather than refused.
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            ensure_staff_may(request.user, ability)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


class IsVerifiedStaff(BasePermission):
    """DRF permission for /api/admin/: staff, plus the second factor when required.

    A view naming a ``required_ability`` also needs that ability (403 with
    the reason otherwise), checked before the view reads anything.
    """

    message = "Staff login (with two-factor authentication when required) is needed"

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not is_verified_staff(request.user):
            return False
        ability: Ability | None = getattr(view, "required_ability", None)
        if ability is not None and not staff_may(request.user, ability):
            self.message = f"Your account may not {ability.description}"
            return False
        return True
