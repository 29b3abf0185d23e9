from __future__ import annotations

from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from billing import alerts, budget, metrics, receivers
        from devices.signals import device_auto_suspended, device_registered
        from gateway.core import lifecycle
        from gateway.core import metrics as gateway_metrics
        from usage import breakers, rebuild

        # The store asks the database for the pause when it rebuilds its
        # counters, and (embedded profile) when another process changed it.
        rebuild.set_pause_source(budget.stored_pause)
        device_registered.connect(receivers.on_device_registered, dispatch_uid="billing-new-device")
        device_auto_suspended.connect(
            receivers.on_device_auto_suspended, dispatch_uid="billing-suspicious-device"
        )
        # A circuit breaker's opening and closing, once each across processes.
        breakers.on_transition(alerts.alert_breaker)
        # Alerts queued before shutdown are delivered (or logged) before exit.
        lifecycle.on_shutdown(alerts.shutdown)
        # Budget gauges, computed when /metrics is scraped.
        gateway_metrics.add_scrape_source(metrics.budget_gauges)
