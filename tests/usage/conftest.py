"""Fixtures for the admission tests: both backends through one contract suite.

``backend`` runs a test once per backend. The Redis one uses the run's Redis
on the production profile, and a private ``redis-server`` on the embedded
profile (skipped only when none is installed), so both profiles exercise the
Lua scripts.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.db import connections
from pytest_django import Settings

from gateway.core import store
from tests.support.processes import PrivateRedis
from usage import guard, rebuild
from usage.backends import get_backend, reset_memory_backend
from usage.backends.base import Backend, Reservation
from usage.limits import Admission


@pytest.fixture(autouse=True)
async def _fresh_admission_state() -> AsyncIterator[None]:
    reset_memory_backend()
    guard.forget_cached_blocklist()
    billing_pause_source = rebuild._pause_source
    rebuild.set_pause_source(None)
    rebuild._followed_epoch.clear()
    yield
    # Redis clients belong to this test's event loop, which closes with it.
    await store.close_async_clients()
    # ORM calls made through sync_to_async ran in asgiref's worker thread:
    # hand its connection back, or the test database cannot be dropped.
    await sync_to_async(connections.close_all)()
    reset_memory_backend()
    rebuild.set_pause_source(billing_pause_source)


@pytest.fixture(autouse=True)
def _concurrency_out_of_the_way(settings: Settings) -> None:
    """Requests here are admitted and never settled: the in-flight layer has tests
    of its own (``test_concurrency_*``), which lower it."""
    settings.MAX_CONCURRENT_REQUESTS = {"free": 10_000, "paid": 10_000}


@pytest.fixture(scope="session")
def _private_redis() -> Iterator[PrivateRedis | None]:
    if django_settings.REDIS_URL or shutil.which("redis-server") is None:
        yield None
        return
    server = PrivateRedis().start()
    yield server
    server.stop()


def redis_settings(settings: Settings, url: str) -> None:
    """Point the store (asyncio client and django-redis) at ``url``."""
    settings.REDIS_URL = url
    settings.GATEWAY_STORE = "redis"
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": "hz",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }


@pytest.fixture
def private_redis(settings: Settings) -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, with this process's settings pointing at it."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis().start()
    redis_settings(settings, server.url)
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
def backend(
    request: pytest.FixtureRequest, settings: Settings, _private_redis: PrivateRedis | None
) -> Backend:
    """The admission backend under test (``settings.GATEWAY_STORE`` follows it)."""
    if request.param == "memory":
        settings.GATEWAY_STORE = "memory"
    elif django_settings.REDIS_URL:
        settings.GATEWAY_STORE = "redis"
    elif _private_redis is not None:
        redis_settings(settings, _private_redis.url)
        store.sync_redis().flushdb()
    else:
        pytest.skip("no Redis configured and no redis-server installed")
    return get_backend()


@pytest.fixture
def shared_redis_url(_private_redis: PrivateRedis | None) -> str:
    """A Redis the test and its worker processes share (flushed by the fixtures)."""
    if django_settings.REDIS_URL:
        return django_settings.REDIS_URL
    if _private_redis is None:
        pytest.skip("no Redis configured and no redis-server installed")
    import redis

    redis.Redis.from_url(_private_redis.url).flushdb()
    return _private_redis.url


# A moment aligned on a day bucket (1_800_000_000 / 720 is whole), on a
# budget day in UTC: 2027-01-15 08:00:00Z.
START = 1_800_000_000.0


def reservation(admission: Admission) -> Reservation:
    """The reservation of an admitted request."""
    assert admission.reservation is not None
    return admission.reservation


class FrozenClock:
    """The gateway clock, stopped: it moves only when the test moves it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: float) -> None:
        from types import SimpleNamespace

        from gateway.core import clock as gateway_clock

        self._now = start
        monkeypatch.setattr(gateway_clock, "time", SimpleNamespace(time=lambda: self._now))

    def now(self) -> float:
        return self._now

    def set(self, moment: float) -> None:
        self._now = moment

    def advance(self, seconds: float) -> None:
        self._now += seconds


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    return FrozenClock(monkeypatch, START)


@pytest.fixture
def limits_config(settings: Settings) -> Callable[..., None]:
    """``limits_config(device=20, burst=1000, ...)``: the free tier's request limits."""

    def configure(
        *,
        device: int = 100,
        ip: int = 500,
        user: int = 1000,
        burst: int = 100,
        global_: int = 10000,
        tier: str = "free",
    ) -> None:
        settings.RATE_LIMITS = {
            **django_settings.RATE_LIMITS,
            tier: {
                "device_per_day": device,
                "ip_per_day": ip,
                "user_per_day": user,
                "device_per_minute": burst,
            },
        }
        settings.RATE_LIMIT_GLOBAL_PER_DAY = global_

    configure()
    return configure
