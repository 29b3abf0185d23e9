"""Fixtures shared by every test.

The suite runs twice (see the Makefile): on the embedded profile (SQLite,
in-process store) and on the production profile (PostgreSQL, Redis). Tests
that need several gateway processes sharing state are marked
``production_only`` and skipped on the embedded run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from gateway.core import clock as gateway_clock
from tests.support.processes import GatewayServer, base_environment, start_gateway

pytest_plugins = ["tests.fakes.conftest_plugin", "tests.support.personas"]

IS_PRODUCTION = settings.GATEWAY_PROFILE == "production"
CLOCK_FILE = Path(settings.BASE_DIR) / "var" / f"test-clock-{os.getpid()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_PRODUCTION:
        return
    skip = pytest.mark.skip(reason="needs the production profile (PostgreSQL, Redis)")
    for item in items:
        if "production_only" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    database = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    return (
        f"gateway profile: {settings.GATEWAY_PROFILE} ({database}, store={settings.GATEWAY_STORE})"
    )


@pytest.fixture(scope="session", autouse=True)
def _private_spool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This run's usage spool: never replay records left by another run into this database."""
    path = tmp_path_factory.mktemp("spool")
    previous = settings.USAGE_SPOOL_DIR
    settings.USAGE_SPOOL_DIR = str(path)
    yield path
    settings.USAGE_SPOOL_DIR = previous


@pytest.fixture(scope="session", autouse=True)
def _test_clock_file() -> Iterator[Path]:
    CLOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    gateway_clock.configure(CLOCK_FILE)
    gateway_clock.set_offset(0)
    yield CLOCK_FILE
    gateway_clock.configure(None)
    CLOCK_FILE.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def _fresh_shared_state() -> Iterator[None]:
    """Each test starts with an empty shared store and real time."""
    from usage import breakers
    from usage.backends import reset_memory_backend

    reset_memory_backend()
    breakers.reset()
    if settings.REDIS_URL:
        from django_redis import get_redis_connection

        get_redis_connection("default").flushdb()
    else:
        cache.clear()
    gateway_clock.set_offset(0)
    yield
    gateway_clock.set_offset(0)


class TestClock:
    """Moves the gateway's clock in this process and in gateway servers."""

    def now(self) -> float:
        return gateway_clock.now()

    def advance(self, seconds: float) -> None:
        gateway_clock.advance(seconds)

    def set_offset(self, seconds: float) -> None:
        gateway_clock.set_offset(seconds)


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


def _database_url() -> str:
    """The URL of the test database this process is using (after pytest-django set it up)."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def gateway_environment(**overrides: str) -> dict[str, str]:
    """Environment for a gateway process sharing this test run's database and store."""
    env = base_environment()
    env.update(
        {
            "DATABASE_URL": _database_url(),
            "SECRET_KEY": settings.SECRET_KEY,
            "TOKEN_PEPPER": settings.TOKEN_PEPPER,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "GATEWAY_TEST_CLOCK_FILE": str(CLOCK_FILE),
            "USAGE_SPOOL_DIR": settings.USAGE_SPOOL_DIR,
            "ADMIN_REQUIRE_2FA": "true" if settings.ADMIN_REQUIRE_2FA else "false",
            # Many gateways live at once in a run (see GatewayServers): a small
            # pool each keeps them under PostgreSQL's max_connections.
            "DATABASE_POOL_SIZE": "4",
            # Running gateways are reused by later tests with the same environment
            # (GatewayServers): the failures one test provokes must not open a
            # circuit breaker for the next. Breaker tests set their own threshold.
            "BREAKER_FAILURES": "1000",
        }
    )
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    env.update(overrides)
    return env


class GatewayServers:
    """Starts gateway processes; identical requests reuse running ones for the session.

    At most ``MAX_GROUPS`` environments stay running: starting another stops
    the one used longest ago, so a long run does not exhaust PostgreSQL's
    connections with idle gateways.
    """

    MAX_GROUPS = 6

    def __init__(self) -> None:
        self._running: dict[tuple[int, frozenset[tuple[str, str]]], list[GatewayServer]] = {}

    def start(self, count: int = 1, **env: str) -> list[GatewayServer]:
        if count > 1 and not IS_PRODUCTION:
            pytest.skip("several gateway processes share state only on the production profile")
        environment = gateway_environment(**env)
        key = (count, frozenset(environment.items()))
        servers = self._running.pop(key, None)
        if servers is None or not all(server.is_running() for server in servers):
            for server in servers or ():
                server.stop()
            while len(self._running) >= self.MAX_GROUPS:
                for server in self._running.pop(next(iter(self._running))):
                    server.stop()
            servers = [start_gateway(environment) for _ in range(count)]
        self._running[key] = servers  # last: the most recently used
        return servers

    def stop_all(self) -> None:
        for servers in self._running.values():
            for server in servers:
                server.stop()
        self._running.clear()


@pytest.fixture(scope="session")
def _gateway_server_pool() -> Iterator[GatewayServers]:
    pool = GatewayServers()
    yield pool
    pool.stop_all()


@pytest.fixture
def gateway_servers(
    transactional_db: None, _gateway_server_pool: GatewayServers
) -> Callable[..., list[GatewayServer]]:
    """``gateway_servers(count=2, RATE_LIMIT_FREE_DEVICE_PER_DAY="20")`` -> running servers.

    The servers share this test's database (hence ``transactional_db``: data
    must be committed to be seen) and, on the production profile, its Redis.
    """
    return _gateway_server_pool.start
