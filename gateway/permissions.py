"""Who may use the admin, the dashboard and the admin JSON API.

One rule for all three: an active staff user who, when ``ADMIN_REQUIRE_2FA``
is on, has also passed the TOTP second factor in this session. The setting
is read on every call (tests and operators may flip it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from rest_framework.permissions import BasePermission

if TYPE_CHECKING:
    # Not at run time: DRF's views import the default permission (this module).
    from rest_framework.request import Request
    from rest_framework.views import APIView


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


class IsVerifiedStaff(BasePermission):
    """DRF permission for /api/admin/: staff, plus the second factor when required."""

    message = "Staff login (with two-factor authentication when required) is needed"

    def has_permission(self, request: Request, view: APIView) -> bool:
        return is_verified_staff(request.user)
