"""The production server: gunicorn with two uvicorn workers and gunicorn.conf.py's hooks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import gateway_environment
from tests.devices.support import Registered
from tests.ops.test_metrics_live import samples, value
from tests.support.processes import ARTIFACTS, ROOT, free_port, wait_until_healthy

pytestmark = pytest.mark.production_only


def start_gunicorn(
    env: dict[str, str], *, worker_class: str = "gateway.workers.GatewayWorker", workers: int = 2
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = (ARTIFACTS / f"gunicorn-{port}.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "gateway.asgi:application",
            "--worker-class",
            worker_class,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--graceful-timeout",
            "5",
            "--no-control-socket",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(process, url, what="gunicorn")
    return process, url


def test_gunicorn_empties_the_metrics_directory_at_start_and_its_workers_report_one_sum(
    transactional_db: None, make_device: Callable[..., Registered], tmp_path: Path
) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    stale = directory / "counter_999999.db"
    stale.write_bytes(b"left over from a previous run")
    token = make_device("approved").token
    env = gateway_environment(PROMETHEUS_MULTIPROC_DIR=str(directory), WEB_CONCURRENCY="2")
    process, url = start_gunicorn(env)
    try:
        assert not stale.exists()
        for _ in range(10):  # a new connection each: either worker may take it
            response = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200
        metrics = samples(httpx.get(f"{url}/metrics").text)
    finally:
        process.terminate()
        process.wait(30)
    labels = {"route": "models", "model": "", "provider": "", "status": "200"}
    assert value(metrics, "hanzo_requests_total", **labels) == 10
    assert list(directory.glob("counter_*.db"))  # the workers' own files
