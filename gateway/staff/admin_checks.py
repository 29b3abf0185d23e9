"""A deployment check for the admin's own security settings."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning
from django.core.checks import register as register_check


def two_factor_off_in_production(**kwargs: Any) -> list[Warning]:
    if settings.GATEWAY_PROFILE == "production" and not settings.ADMIN_REQUIRE_2FA:
        return [
            Warning(
                "Staff sign in to /admin/, /dashboard/ and /api/admin/ with a password only.",
                hint="Unset ADMIN_REQUIRE_2FA (true is the production default) and enrol "
                "each staff user with `manage.py enroll_totp NAME`.",
                id="hanzo.W070",
            )
        ]
    return []


def register() -> None:
    register_check(two_factor_off_in_production, Tags.security, deploy=True)
