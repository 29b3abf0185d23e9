"""System checks that catch production mistakes, with stable ids."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning
from django.core.checks import register as register_check


def _warning_if(condition: bool, message: str, *, hint: str, id: str) -> list[Warning]:
    return [Warning(message, hint=hint, id=id)] if condition else []


def in_process_store_with_several_workers(**kwargs: Any) -> list[Warning]:
    return _warning_if(
        settings.GATEWAY_STORE == "memory" and settings.WEB_CONCURRENCY > 1,
        "Several workers share no state with the in-process store: each would "
        "enforce its own rate limits and budget, multiplying them.",
        hint="Set REDIS_URL (production profile) or run a single worker.",
        id="hanzo.W001",
    )


def sqlite_without_debug(**kwargs: Any) -> list[Warning]:
    engine = settings.DATABASES["default"]["ENGINE"]
    return _warning_if(
        engine == "django.db.backends.sqlite3" and not settings.DEBUG,
        "SQLite is the embedded profile's database; it serialises writes and lives on one host.",
        hint="Set DATABASE_URL to PostgreSQL for a production deployment.",
        id="hanzo.W002",
    )


def pepper_derived_from_secret_key(**kwargs: Any) -> list[Warning]:
    return _warning_if(
        settings.GATEWAY_PROFILE == "production" and not settings.TOKEN_PEPPER_IS_EXPLICIT,
        "TOKEN_PEPPER is derived from SECRET_KEY: rotating SECRET_KEY would "
        "invalidate every device token.",
        hint="Set TOKEN_PEPPER explicitly.",
        id="hanzo.W003",
    )


def metrics_of_one_worker_only(**kwargs: Any) -> list[Warning]:
    return _warning_if(
        settings.WEB_CONCURRENCY > 1 and not settings.PROMETHEUS_MULTIPROC_DIR,
        "Several workers without PROMETHEUS_MULTIPROC_DIR: each scrape of /metrics "
        "reports the counters of whichever worker answered it.",
        hint="Set PROMETHEUS_MULTIPROC_DIR to an empty directory (a tmpfs) shared by "
        "the workers; gunicorn.conf.py empties it at start.",
        id="hanzo.W004",
    )


def server_trusting_forwarded_headers(**kwargs: Any) -> list[Warning]:
    return _warning_if(
        settings.SERVER_FORWARDED_ALLOW_IPS and not settings.TRUSTED_PROXIES,
        "FORWARDED_ALLOW_IPS tells uvicorn and gunicorn to rewrite the client "
        "address from X-Forwarded-For, while TRUSTED_PROXIES is empty: clients "
        "could pick their own address (per-IP limits, blocks, the admin lockout).",
        hint="Unset FORWARDED_ALLOW_IPS and start uvicorn with --no-proxy-headers "
        "(gunicorn.conf.py sets forwarded_allow_ips to nothing); the gateway reads "
        "the forwarded header itself from TRUSTED_PROXIES. A server that rewrites "
        "anyway is disarmed at start-up (gateway.serving).",
        id="hanzo.W005",
    )


def providers_without_keys(databases: Any = None, **kwargs: Any) -> list[Warning]:
    """Enabled models whose provider has no key in its pool (``env`` backend: the ``aws`` one is
    only asked by the first request): they answer 503 ``provider_not_configured``.

    A database check, as Django asks of checks that read one: it runs when a
    database is named, with ``check --database default`` and with ``migrate``
    (which ``make serve`` runs), and not before every management command.
    """
    if settings.SECRETS_BACKEND != "env" or not databases:
        return []
    from django.db import DatabaseError

    from gateway.models import ModelRoute
    from gateway.proxy.keys import PROVIDERS, env_pool

    missing = sorted(provider for provider in PROVIDERS if not env_pool(provider))

    try:
        routes = list(
            ModelRoute.objects.filter(is_enabled=True, provider__in=missing)
            .order_by("public_name")
            .values_list("public_name", flat=True)
        )
    except DatabaseError:  # not migrated yet: nothing to say about routes
        return []
    return _warning_if(
        bool(routes),
        f"No API key for {', '.join(missing)}: these models answer 503 "
        f"provider_not_configured and GET /v1/models marks them unavailable: {', '.join(routes)}.",
        hint="Set the provider's *_API_KEY or *_API_KEYS (see .env.example), or disable its "
        "routes in the admin.",
        id="hanzo.W006",
    )


def register() -> None:
    register_check(in_process_store_with_several_workers)
    # A deployment check: the embedded profile is SQLite with DEBUG off by design.
    register_check(sqlite_without_debug, deploy=True)
    register_check(pepper_derived_from_secret_key, Tags.security, deploy=True)
    register_check(metrics_of_one_worker_only, deploy=True)
    register_check(server_trusting_forwarded_headers, Tags.security, deploy=True)
    register_check(providers_without_keys)
