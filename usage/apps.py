from __future__ import annotations

from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from gateway import lifecycle
        from usage import spool

        # Served processes replay what earlier ones left in the spool and
        # flush usage records in the background; shutdown flushes the rest.
        lifecycle.on_startup(spool.start_flusher)
        lifecycle.on_shutdown(spool.stop_flusher)
