from __future__ import annotations

from django.apps import AppConfig


class DevicesConfig(AppConfig):
    name = "devices"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from devices import housekeeping
        from gateway import lifecycle

        lifecycle.on_startup(housekeeping.start)
        lifecycle.on_shutdown(housekeeping.stop)
