from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class GatewayConfig(AppConfig):
    name = "gateway"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from gateway import checks
        from gateway.core import clock, files

        # Python warnings go through the configured handlers too, so a JSON
        # log stays one JSON object per line and redaction applies to them.
        logging.captureWarnings(True)

        checks.register()
        clock.configure(settings.GATEWAY_TEST_CLOCK_FILE)
        # Before any connection: SQLite would create a missing database with
        # the umask's mode.
        files.protect_local_files(
            var_dir=Path(settings.VAR_DIR),
            sqlite_database=_sqlite_file(settings.DATABASES["default"]),
            spool_dir=Path(settings.USAGE_SPOOL_DIR),
        )


def _sqlite_file(database: dict[str, Any]) -> Path | None:
    """The SQLite database's file, if the database is one and lives in a file."""
    name = str(database.get("NAME") or "")
    if database["ENGINE"] != "django.db.backends.sqlite3" or name in ("", ":memory:"):
        return None
    return None if name.startswith("file:") else Path(name)


class GatewayAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the gateway's site as the default ``admin.site``."""

    default = False  # named in INSTALLED_APPS; "gateway" itself is GatewayConfig

    def ready(self) -> None:
        super().ready()
        from gateway.staff import admin_checks

        admin_checks.register()

    default_site = "gateway.staff.admin_site.GatewayAdminSite"
