from __future__ import annotations

from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from billing import alerts
        from gateway import lifecycle

        # Alerts queued before shutdown are delivered (or logged) before exit.
        lifecycle.on_shutdown(alerts.shutdown)
