"""Real server processes for tests: gateway workers, a private redis-server, local AWS."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"


def _die_with_parent() -> None:
    """Runs in the child before exec: if the test run is killed, its servers go too.

    Otherwise a killed run leaves gateway processes holding connections to
    the test database, and the next run cannot recreate it.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unreachable_database_url() -> str:
    """A DATABASE_URL of this profile's kind that nothing answers."""
    from django.conf import settings

    if settings.REDIS_URL:
        return f"postgres://postgres@127.0.0.1:{free_port()}/nothing"
    return "sqlite:////nonexistent-dir/nothing.sqlite3"


def manage_py(
    *args: str, env: dict[str, str], stdin: str | None = None, timeout: float | None = 60
) -> subprocess.CompletedProcess[str]:
    """``python manage.py *args`` from the project's root with ``env``, run to its end;
    its output captured, as text."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def python_child(
    *args: str, env: dict[str, str], stdin: int | None = None
) -> subprocess.Popen[str]:
    """``python *args`` from the project's root with ``env``; its output piped, as text."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def local_aws() -> Iterator[str]:
    """moto's server (Secrets Manager and the rest) on a free local port; yields its URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def wait_for(predicate, *, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def wait_until_healthy(process: subprocess.Popen[bytes], url: str, *, what: str) -> None:
    """Wait (30 s at most) for ``url``'s /health to answer 200; fail if ``process`` exits."""

    def healthy() -> bool:
        assert process.poll() is None, f"{what} exited early"
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=30, what=what)


@dataclass
class GatewayServer:
    """One ``uvicorn gateway.asgi:application`` process on a free port."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_gateway(
    env: dict[str, str], *, startup_timeout: float = 30, proxy_headers: bool = False
) -> GatewayServer:
    """``uvicorn gateway.asgi:application`` as `make serve` runs it; ``proxy_headers``:
    as a careless operator would (uvicorn's default, trusting loopback's X-Forwarded-For)."""
    port = free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / f"gateway-{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "gateway.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            # As `make serve` and the gunicorn worker run it: uvicorn would
            # otherwise believe X-Forwarded-For from loopback peers (every test
            # client) and hide the socket peer that TRUSTED_PROXIES judges.
            *([] if proxy_headers else ["--no-proxy-headers"]),
            "--lifespan",
            "on",
            "--timeout-graceful-shutdown",
            "5",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    server = GatewayServer(port=port, process=process, log_path=log_path, env=env)

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited early:\n{server.log_text()[-3000:]}")
        try:
            return httpx.get(f"{server.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout=startup_timeout, what=f"gateway on port {port}")
    except BaseException:
        server.stop()
        raise
    return server


@dataclass
class PrivateRedis:
    """A redis-server of the test's own, so a test may stop and restart it."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_for(answers, timeout=10, what=f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


def base_environment() -> dict[str, str]:
    """The test process's environment without profile-selecting names."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
        and not key.startswith("PYTEST_")
    }
    env["DJANGO_SETTINGS_MODULE"] = "gateway.settings"
    env["PYTHONUNBUFFERED"] = "1"
    return env
