"""Run the Redis half of the admission contract suite against fakeredis (an experiment).

Not part of the test suite and not imported by it: a pytest plugin named on
the command line, with a virtualenv that has ``fakeredis[lua]`` (see
docs/benchmarks.md, *Libraries considered*)::

    env -u DATABASE_URL -u REDIS_URL /tmp/libs-venv/bin/python -m pytest \\
        -p bench.fakeredis_plugin tests/usage -k redis

On the embedded profile the suite starts a private ``redis-server`` for the
Redis backend (``tests.support.processes.PrivateRedis``); this plugin puts a
fakeredis ``TcpFakeServer`` (Lua 5.1 through lupa) in its place before the
conftest files import it, so ``usage/backends/redis.py`` runs the very same
Lua scripts, unmodified, over the same client, against fakeredis instead.
Without fakeredis the plugin stops the run at once with a clear message.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support import processes

try:
    import lupa  # noqa: F401  (fakeredis runs Lua only with it)
    from fakeredis import TcpFakeServer
except ImportError:  # pragma: no cover - depends on the experiment's venv
    TcpFakeServer = None
else:

    class _CountingServer(TcpFakeServer):  # type: ignore[misc]
        def process_request(self, request: Any, client_address: Any) -> None:
            _accepted.append(client_address)
            super().process_request(request, client_address)


_accepted: list[Any] = []  # every connection a fakeredis server accepted


@dataclass
class FakeRedisServer:
    """``PrivateRedis``'s interface over a fakeredis TCP server in a thread of this process."""

    port: int = field(default_factory=processes.free_port)
    server: Any = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> FakeRedisServer:
        self.server = _CountingServer(("127.0.0.1", self.port), server_type="redis")
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def pytest_configure(config: pytest.Config) -> None:
    if TcpFakeServer is None:
        raise pytest.UsageError(
            "bench.fakeredis_plugin needs fakeredis with Lua: pip install 'fakeredis[lua]'"
        )


# Now, as pytest imports this plugin: the conftest files import ``PrivateRedis``
# by name, and pytest loads the first of them before ``pytest_configure``.
if TcpFakeServer is not None:
    processes.PrivateRedis = FakeRedisServer  # type: ignore[misc,assignment]


def pytest_report_header(config: pytest.Config) -> str:
    return "redis backend: fakeredis TcpFakeServer (bench.fakeredis_plugin), not redis-server"


def pytest_unconfigure(config: pytest.Config) -> None:
    # After every fixture's teardown: proof that the Redis backend talked to fakeredis.
    if TcpFakeServer is not None:
        print(f"\nfakeredis accepted {len(_accepted)} connections")
