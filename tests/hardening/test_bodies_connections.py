"""A cap on connections per server process in the commands the project ships (issue 15):
past it the server answers 503 at once instead of taking on more, so slow clients cannot
pile up in one worker without bound. Checked on the real commands: ``make serve``'s
uvicorn line, and gunicorn with the production worker class and ``gunicorn.conf.py``."""

from __future__ import annotations

import runpy
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.conftest import gateway_environment
from tests.support.processes import ARTIFACTS, ROOT, free_port, wait_for, wait_until_healthy

CAP = 4  # a small cap, given on each command line, so a test can reach it


@contextmanager
def serving(command: list[str], port: int) -> Iterator[str]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = (ARTIFACTS / f"capped-{port}.log").open("wb")
    process = subprocess.Popen(
        command, cwd=ROOT, env=gateway_environment(), stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, url, what=" ".join(command[:4]))
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def health(url: str) -> int:
    return httpx.get(f"{url}/health", timeout=5).status_code


def assert_capped(url: str, cap: int) -> None:
    """With ``cap - 1`` idle connections open the next request gets 503; one fewer, 200."""
    idle = [
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) for _ in range(cap - 1)
    ]
    try:
        wait_for(lambda: health(url) == 503, timeout=10, what="a 503 past the cap")
        idle.pop().close()
        wait_for(lambda: health(url) == 200, timeout=10, what="a 200 under the cap")
    finally:
        for connection in idle:
            connection.close()


def test_make_serve_caps_connections_at_1000_and_its_command_holds_to_a_cap(
    transactional_db: None,
) -> None:
    def serve_command(**variables: str) -> list[str]:
        dry_run = subprocess.run(
            [
                "make",
                "-s",
                "-n",
                "serve",
                *(f"{name}={value}" for name, value in variables.items()),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        line = next(line for line in dry_run.stdout.splitlines() if "-m uvicorn" in line)
        return shlex.split(line)

    assert "--limit-concurrency" in (shipped := serve_command())
    assert shipped[shipped.index("--limit-concurrency") + 1] == "1000"
    port = free_port()
    with serving(serve_command(PORT=str(port), LIMIT_CONCURRENCY=str(CAP)), port) as url:
        assert_capped(url, CAP)


def test_gunicorn_workers_cap_connections_at_gunicorn_conf_worker_connections(
    transactional_db: None,
) -> None:
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["worker_connections"] == 1000
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "gateway.asgi:application",
        "--worker-class",
        "gateway.workers.GatewayWorker",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--worker-connections",  # overrides gunicorn.conf.py's, as an operator would
        str(CAP),
        "--no-control-socket",
    ]
    with serving(command, port) as url:
        assert_capped(url, CAP)
