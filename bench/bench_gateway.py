"""The gateway as a benchmark target: a fresh PostgreSQL database and Redis db,
one pinned uvicorn worker on the production profile, a registered and
approved paid device; and the round-trip count of one admitted request.

Everything goes through the gateway's public surface (HTTP and
``manage.py``), so this module needs no change as the gateway grows; when a
step is not there yet, ``GatewayUnavailable`` says which one.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import redis

from bench.bench_processes import ARTIFACTS, Process, start
from bench.bench_upstream import OPENAI_KEY
from tests.support.processes import manage_py

UNLIMITED = "100000000"
CHAT_PATH = "/v1/chat/completions"


class GatewayUnavailable(Exception):
    """The gateway cannot serve the benchmark yet; the message says why."""


def gateway_env(upstream_url: str, database_url: str, redis_url: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="gateway.settings",
        PYTHONUNBUFFERED="1",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SECRET_KEY="bench-only-secret-key-not-for-production-0123456789",
        TOKEN_PEPPER="bench-only-pepper",
        ADMIN_REQUIRE_2FA="false",
        OPENAI_BASE_URL=f"{upstream_url}/openai/v1",
        OPENAI_API_KEY=OPENAI_KEY,
        ANTHROPIC_BASE_URL=f"{upstream_url}/anthropic",
        ANTHROPIC_API_KEY="sk-ant-fake-0123456789abcdef",
        DIGITALOCEAN_BASE_URL=f"{upstream_url}/do/v1",
        DIGITALOCEAN_API_KEY="dop_v1_fake0123456789abcdef",
        RATE_LIMIT_GLOBAL_PER_DAY=UNLIMITED,
        REGISTRATIONS_PER_IP_PER_HOUR="1000",
        DAILY_BUDGET_USD="1000000",
        DEVICE_DAILY_BUDGET_USD_FREE="0",
        DEVICE_DAILY_BUDGET_USD_PAID="0",
        USAGE_SPOOL_DIR=str(ARTIFACTS / "spool"),
    )
    for tier in ("FREE", "PAID"):
        for layer in ("DEVICE_PER_DAY", "IP_PER_DAY", "USER_PER_DAY", "DEVICE_PER_MINUTE"):
            env[f"RATE_LIMIT_{tier}_{layer}"] = UNLIMITED
        # The load comes from one device at up to 64 connections.
        env[f"MAX_CONCURRENT_REQUESTS_{tier}"] = UNLIMITED
    return env


def _maintenance_conninfo(database_url: str) -> tuple[str, str]:
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    return urlunsplit(parts._replace(path="/postgres")), name


def recreate_database(env: dict[str, str]) -> None:
    """Drop and create the benchmark database, then migrate it (seeds the routes);
    flush the Redis db and empty the usage spool, so nothing of an earlier run
    is replayed into this one."""
    shutil.rmtree(env["USAGE_SPOOL_DIR"], ignore_errors=True)
    maintenance, name = _maintenance_conninfo(env["DATABASE_URL"])
    with psycopg.connect(maintenance, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    manage(env, "migrate", "--noinput")


def manage(env: dict[str, str], *args: str) -> str:
    done = manage_py(*args, env=env, timeout=None)
    if done.returncode:
        raise GatewayUnavailable(f"manage.py {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def start_gateway(name: str, command: list[str], env: dict[str, str], core: int | None) -> Process:
    process = start(name, [sys.executable, *command], env=env, core=core)
    url = f"http://127.0.0.1:{command[command.index('--port') + 1]}"
    process.wait_http(f"{url}/health", timeout=60)
    return process


def serve_wrapped_main(doc: str, wrap: Any, prepare: Callable[[], None] | None = None) -> None:
    """The command line of a wrapped gateway process: ``--host``, ``--port``.

    ``doc`` is that module's docstring (its first line is the help);
    ``prepare`` runs once the settings module is set, before the gateway loads.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    if prepare is not None:
        prepare()
    serve_wrapped(wrap, args.host, args.port)


def serve_wrapped(wrap: Any, host: str, port: int) -> None:
    """Serve the gateway in this process with its ASGI app wrapped (probe, profile)."""
    import uvicorn

    from gateway.asgi import application

    uvicorn.run(
        wrap(application),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,
    )


def uvicorn_command(port: int, app: str = "gateway.asgi:application") -> list[str]:
    """uvicorn as the benchmark runs every target: one worker, uvloop, httptools."""
    return [
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--no-proxy-headers",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--lifespan",
        "on",
    ]


def register_paid_device(url: str, env: dict[str, str]) -> str:
    """A new device, approved on the paid tier; returns its session token."""
    response = httpx.post(
        f"{url}/v1/devices/register",
        json={"deviceName": "bench", "platform": "linux", "version": "1.0"},
        timeout=10,
    )
    if response.status_code != 201:
        raise GatewayUnavailable(
            f"POST /v1/devices/register answered {response.status_code}: {response.text[:200]}"
        )
    registered = response.json()
    manage(env, "approve_device", str(registered["deviceId"]), "--tier", "paid")
    return str(registered["sessionToken"])


def check_chat(url: str, token: str, body: str, stream_body: str) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    answer = httpx.post(f"{url}{CHAT_PATH}", content=body, headers=headers, timeout=10)
    if answer.status_code != 200 or "choices" not in answer.text:
        raise GatewayUnavailable(
            f"POST {CHAT_PATH} answered {answer.status_code}: {answer.text[:200]}"
        )
    streamed = httpx.post(f"{url}{CHAT_PATH}", content=stream_body, headers=headers, timeout=10)
    if streamed.status_code != 200 or "data: [DONE]" not in streamed.text:
        raise GatewayUnavailable(
            f"POST {CHAT_PATH} (stream) answered {streamed.status_code}: {streamed.text[:200]}"
        )


PHASES = ("before", "after", "background")


@dataclass
class PhaseCount:
    """Round trips of the counted requests: made for a request before its
    upstream call, after it, or by no request (background work)."""

    requests: int = 0
    upstream_calls: int = 0
    redis: dict[str, Counter[str]] = field(
        default_factory=lambda: {phase: Counter() for phase in PHASES}
    )
    db: dict[str, Counter[str]] = field(
        default_factory=lambda: {phase: Counter() for phase in PHASES}
    )
    usage_records: int | None = None
    monitor: dict[str, Counter[str]] = field(default_factory=dict)  # Redis MONITOR's view

    def per_request(self, kind: str, phase: str) -> float:
        counter = self.redis[phase] if kind == "redis" else self.db[phase]
        return sum(counter.values()) / max(self.requests, 1)

    def probe_commands(self) -> int:
        """Commands (not round trips) the probe saw: a pipeline counts each."""
        return sum(
            len(detail.split("+")) * times
            for counter in self.redis.values()
            for detail, times in counter.items()
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "upstream_calls": self.upstream_calls,
            "redis": {phase: dict(counter) for phase, counter in self.redis.items()},
            "db": {phase: dict(counter) for phase, counter in self.db.items()},
            "usage_records": self.usage_records,
            "monitor": {name: dict(counter) for name, counter in self.monitor.items()},
        }


def split_events(events: list[list[Any]]) -> PhaseCount:
    """Attribute each event to the request it ran for: before that request's
    first upstream marker, or after it; events of no request are background."""
    count, phases = PhaseCount(), {}
    for _, kind, detail, request in sorted(events, key=lambda event: event[0]):
        if kind == "request":
            count.requests += 1
            phases[request] = "before"
        elif kind == "upstream" and phases.get(request) == "before":
            count.upstream_calls += 1
            phases[request] = "after"
        elif kind in ("redis", "db"):
            phase = phases.get(request, "background") if request else "background"
            (count.redis if kind == "redis" else count.db)[phase][detail] += 1
    return count


class RedisMonitor:
    """Redis's own view, as a cross-check of the probe: every command the
    server runs on the benchmark's db (``MONITOR``, filtered by db number, as
    the server is shared), with commands run inside Lua scripts apart."""

    _LINE = re.compile(rb'^\+?\d+\.\d+ \[(\d+) ([^\]]+)\] "([^"]+)"')

    def __init__(self, redis_url: str) -> None:
        parts = urlsplit(redis_url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.db = int(parts.path.lstrip("/") or 0)
        self.commands: Counter[str] = Counter()
        self.in_scripts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RedisMonitor:
        self._socket = socket.create_connection(self.address, timeout=5)
        self._socket.sendall(b"MONITOR\r\n")
        self._socket.settimeout(0.1)
        self._thread.start()
        time.sleep(0.2)  # MONITOR is live once its +OK is read
        return self

    def __exit__(self, *exc_info: object) -> None:
        time.sleep(0.2)
        self._stop.set()
        self._thread.join()
        self._socket.close()

    def _run(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = self._socket.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            *lines, buffer = (buffer + chunk).split(b"\r\n")
            for line in lines:
                match = self._LINE.match(line)
                if match and int(match.group(1)) == self.db:
                    name = match.group(3).decode().upper()
                    (self.in_scripts if b"lua" in match.group(2) else self.commands)[name] += 1


def _usage_records(database_url: str, request_ids: list[str]) -> int | None:
    try:
        with psycopg.connect(database_url, autocommit=True) as connection:
            row = connection.execute(
                "SELECT count(*) FROM usage_usagerecord WHERE request_id = ANY(%s)", [request_ids]
            ).fetchone()
    except psycopg.Error:
        return None
    return int(row[0]) if row else None


def count_round_trips(
    url: str,
    token: str,
    body: str,
    database_url: str,
    redis_url: str,
    *,
    requests: int,
    settle: float,
) -> PhaseCount:
    """Send ``requests`` admitted requests one at a time to a probe gateway
    (``bench_probe``) on a warm cache and count their round trips."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        for _ in range(5):  # warm: caches filled, connections open, scripts loaded
            client.post(CHAT_PATH, content=body).raise_for_status()
        time.sleep(settle)
        client.get("/_bench/probe")
        request_ids = []
        with RedisMonitor(redis_url) as monitor:
            for _ in range(requests):
                response = client.post(CHAT_PATH, content=body)
                response.raise_for_status()
                request_ids.append(response.headers.get("x-request-id", ""))
                time.sleep(settle)  # lets work after the response finish inside this window
        events = client.get("/_bench/probe").json()["events"]
    count = split_events(events)
    count.monitor = {"commands": monitor.commands, "in_scripts": monitor.in_scripts}
    if all(request_ids):  # SPEC: every admitted response names its request id
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            count.usage_records = _usage_records(database_url, request_ids)
            if count.usage_records is None or count.usage_records >= requests:
                break
            time.sleep(0.2)
    return count
