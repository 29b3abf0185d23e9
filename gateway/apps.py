from __future__ import annotations

import logging

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class GatewayConfig(AppConfig):
    name = "gateway"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from gateway import checks, clock, login_guard  # noqa: F401 (connects its receiver)

        # Python warnings go through the configured handlers too, so a JSON
        # log stays one JSON object per line and redaction applies to them.
        logging.captureWarnings(True)

        checks.register()
        clock.configure(settings.GATEWAY_TEST_CLOCK_FILE)


class GatewayAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the gateway's site as the default ``admin.site``."""

    default = False  # named in INSTALLED_APPS; "gateway" itself is GatewayConfig

    def ready(self) -> None:
        super().ready()
        from gateway import admin_checks

        admin_checks.register()

    default_site = "gateway.admin_site.GatewayAdminSite"
