"""What a failing component does to clients (README, "Scaling and failure").

PostgreSQL down: warm requests are served and their usage records wait in
the spool until it is back. Redis down: chat completions fail closed (503).
The database outage is a TCP proxy between the gateway and PostgreSQL that
the test cuts and restores, so the shared test database stays up.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from contextlib import suppress

import httpx
import pytest
from django.db import connection

from tests.devices.support import Registered
from tests.proxy.conftest import Gateway, ledger
from tests.support.processes import free_port
from usage.models import UsageRecord

pytestmark = pytest.mark.production_only

REGISTRATION = {"deviceName": "Ada's laptop", "platform": "macos", "version": "1.4.2"}


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut()`` drops every connection and refuses new."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            with suppress(OSError):  # wakes the accepting thread (close alone would not)
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_with_the_database_down_warm_requests_are_served_and_their_records_wait(
    start_gateway: Callable[..., Gateway], make_device: Callable[..., Registered]
) -> None:
    db = connection.settings_dict
    proxy = TcpProxy((db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))).start()
    url = f"postgres://{db['USER'] or 'postgres'}@127.0.0.1:{proxy.port}/{db['NAME']}"
    gateway = start_gateway(DATABASE_URL=url)
    token = make_device("approved", tier="paid").token
    try:
        for _ in range(2):  # a bearer token is trusted from its second request on
            assert gateway.chat(token).status_code == 200
        ledger(2)
        assert httpx.get(f"{gateway.url}/health/ready").json()["checks"]["database"] == "ok"

        proxy.cut()
        assert httpx.get(f"{gateway.url}/health/ready", timeout=30).status_code == 503
        served = gateway.chat(token)
        assert served.status_code == 200
        assert UsageRecord.objects.count() == 2  # the third record waits in the spool
        stranger = gateway.chat(make_device("approved").token)  # not cached: needs the database
        register = f"{gateway.url}/v1/devices/register"
        registration = httpx.post(register, json=REGISTRATION, timeout=30)
        stats = httpx.get(f"{gateway.url}/v1/usage/stats", headers=bearer(token), timeout=30)
        for refused in (stranger, registration, stats):
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "service_unavailable"

        proxy.start()
        (record,) = [
            r for r in ledger(3, timeout=60) if r.request_id == served.headers["x-request-id"]
        ]
        assert f"{record.cost_usd:.6f}" == served.headers["x-request-cost-usd"]
    finally:
        proxy.cut()
        for server in gateway.servers:
            server.stop()


def test_with_redis_down_the_client_api_fails_closed(
    start_gateway: Callable[..., Gateway], make_device: Callable[..., Registered]
) -> None:
    gateway = start_gateway(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    token = make_device("approved").token
    answers = [
        gateway.chat(token),
        httpx.get(f"{gateway.url}/v1/models", headers=bearer(token), timeout=30),
        httpx.get(f"{gateway.url}/v1/usage/stats", headers=bearer(token), timeout=30),
    ]
    for response in answers:
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "service_unavailable"
        assert int(response.headers["retry-after"]) > 0
    assert httpx.get(f"{gateway.url}/health").status_code == 200


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
