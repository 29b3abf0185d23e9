from __future__ import annotations

import logging

from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from gateway import checks, clock

        # Python warnings go through the configured handlers too, so a JSON
        # log stays one JSON object per line and redaction applies to them.
        logging.captureWarnings(True)

        checks.register()
        clock.configure(settings.GATEWAY_TEST_CLOCK_FILE)
