"""Liveness and readiness probes (SPEC section 2)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from gateway import __version__

logger = logging.getLogger(__name__)


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "healthy", "version": __version__})


def database_status() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        logger.warning("readiness: database unreachable")
        return "down"
    return "ok"


def redis_status() -> str:
    if not settings.REDIS_URL:
        return "not configured"
    from django_redis import get_redis_connection
    from redis.exceptions import RedisError

    try:
        get_redis_connection("default").ping()
    except RedisError:
        logger.warning("readiness: redis unreachable")
        return "down"
    return "ok"


@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    checks = {"database": database_status(), "redis": redis_status()}
    is_ready = all(value in ("ok", "not configured") for value in checks.values())
    return JsonResponse(
        {"status": "ready" if is_ready else "unavailable", "checks": checks},
        status=200 if is_ready else 503,
    )
