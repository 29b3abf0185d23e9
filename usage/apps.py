from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig

logger = logging.getLogger(__name__)


def _blocklist_changed(**kwargs: Any) -> None:
    from django.db import transaction

    transaction.on_commit(_bump_epoch)


def _bump_epoch() -> None:
    from redis.exceptions import RedisError

    from gateway.core.store import bump_epoch

    try:
        bump_epoch()
    except RedisError:
        # The row is saved; processes pick it up at the next epoch bump.
        logger.warning("blocklist changed but the store epoch could not be bumped")


class UsageConfig(AppConfig):
    name = "usage"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from gateway.core import lifecycle, metrics
        from usage import breakers, services, spool  # noqa: F401 (services names the spool's sink)
        from usage.models import BlockedNetwork

        # Served processes replay what earlier ones left in the spool and
        # flush usage records in the background; shutdown flushes the rest.
        lifecycle.on_startup(spool.start_flusher)
        lifecycle.on_shutdown(spool.stop_flusher)
        # Each served process syncs its circuit breakers with the store.
        lifecycle.on_startup(breakers.start)
        lifecycle.on_shutdown(breakers.stop)
        metrics.add_scrape_source(breakers.state_gauges)

        # Every process caches the blocklist until the store's epoch moves.
        post_save.connect(_blocklist_changed, sender=BlockedNetwork, dispatch_uid="blocklist-save")
        post_delete.connect(
            _blocklist_changed, sender=BlockedNetwork, dispatch_uid="blocklist-delete"
        )
