from __future__ import annotations

from django.apps import AppConfig


class DevicesConfig(AppConfig):
    name = "devices"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from devices import housekeeping, metrics
        from gateway.core import lifecycle
        from gateway.core import metrics as gateway_metrics

        lifecycle.on_startup(housekeeping.start)
        lifecycle.on_shutdown(housekeeping.stop)
        # Devices by status, computed when /metrics is scraped.
        gateway_metrics.add_scrape_source(metrics.device_gauges)
