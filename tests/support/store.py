"""Test helpers for the shared store."""

from __future__ import annotations

from django.conf import settings

from usage.backends import reset_memory_backend


def forget_store_counters() -> None:
    """Empty the store as a Redis restart would: counters are rebuilt from the ledger."""
    if settings.REDIS_URL:
        from gateway.core.store import sync_redis

        sync_redis().flushdb()
    else:
        reset_memory_backend()
