from __future__ import annotations

from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from gateway import checks, clock

        checks.register()
        clock.configure(settings.GATEWAY_TEST_CLOCK_FILE)
