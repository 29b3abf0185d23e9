"""The load generators, run on the load core: wrk (non-streamed) and
``bench_client`` (streams, and non-streamed when wrk cannot be had)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from bench.bench_processes import ROOT, pinned

LOAD_CORE = 0
WRK_SCRIPT = ROOT / "bench" / "bench_wrk.lua"


@dataclass(frozen=True)
class Sample:
    """One load run: throughput, latencies in microseconds, failures."""

    rps: float
    p50_us: float
    p99_us: float
    ttfb_p50_us: float | None
    requests: int
    errors: int


def ensure_wrk() -> str | None:
    """wrk's path, installing the Debian package when we can (root + apt-get)."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    print("bench: installing wrk (apt-get install -y wrk)", flush=True)
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, **quiet).returncode:
        subprocess.run(["apt-get", "update"], check=False, **quiet)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, **quiet)
    return shutil.which("wrk")


def _summary(output: str, command: list[str]) -> dict[str, float]:
    for line in output.splitlines():
        if line.startswith("BENCH_JSON "):
            return dict(json.loads(line.removeprefix("BENCH_JSON ")))
    raise RuntimeError(f"no summary from {' '.join(command[:4])}...:\n{output[-2000:]}")


def run_wrk(
    wrk: str, url: str, body: str, authorization: str, concurrency: int, seconds: float
) -> Sample:
    command = pinned(
        [
            wrk,
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",  # wrk takes whole seconds
            "--timeout",
            "10s",
            "-s",
            str(WRK_SCRIPT),
            url,
        ],
        LOAD_CORE,
    )
    env = {**os.environ, "BENCH_BODY": body, "BENCH_AUTHORIZATION": authorization}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    summary = _summary(done.stdout + done.stderr, command)
    errors = sum(int(value) for key, value in summary.items() if key.startswith("errors_"))
    requests = int(summary["requests"])
    good = max(requests - int(summary["errors_status"]), 0)
    return Sample(
        rps=good / (summary["duration_us"] / 1e6),
        p50_us=summary["p50_us"],
        p99_us=summary["p99_us"],
        ttfb_p50_us=None,
        requests=requests,
        errors=errors,
    )


def run_client(
    url: str, body: str, authorization: str, concurrency: int, seconds: float, *, stream: bool
) -> Sample:
    command = [
        sys.executable,
        "-m",
        "bench.bench_client",
        "--url",
        url,
        "--body",
        body,
        "--authorization",
        authorization,
        "--concurrency",
        str(concurrency),
        "--seconds",
        str(seconds),
    ]
    if stream:
        command.append("--stream")
    command = pinned(command, LOAD_CORE)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    summary = _summary(done.stdout + done.stderr, command)
    return Sample(
        rps=summary["rps"],
        p50_us=summary["p50_us"],
        p99_us=summary["p99_us"],
        ttfb_p50_us=summary["ttfb_p50_us"],
        requests=int(summary["requests"]),
        errors=int(summary["errors"]),
    )
