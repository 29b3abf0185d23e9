"""Processes for the benchmark: start one pinned to a core, wait for it, stop
it, and read what Linux knows about it (peak RSS, CPU time) and about the
machine (busy CPU time), so the report can say how much else was running."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts" / "bench"
_TICKS = os.sysconf("SC_CLK_TCK")


def pinning_available() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(command: list[str], core: int | None) -> list[str]:
    """``command`` run on one core with taskset, when pinning is possible."""
    if core is None or not pinning_available():
        return command
    return ["taskset", "-c", str(core), *command]


@dataclass
class Process:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, size: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-size:]

    def wait_http(self, url: str, *, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                httpx.get(url, timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not answer {url} within {timeout}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tree(self) -> list[int]:
        return process_tree(self.pid)


def start(name: str, command: list[str], *, env: dict[str, str], core: int | None) -> Process:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            pinned(command, core), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return Process(name, process, log_path)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (read from /proc/<pid>/task/*/children)."""
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                pending.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return pids


def peak_rss_mib(pids: list[int]) -> float:
    """Sum of VmHWM (peak resident set) over ``pids``, in MiB."""
    total_kib = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by ``pids``."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICKS


def busy_seconds(core: int | None = None) -> float:
    """CPU time one core (or, for None, all of them) spent busy (not idle, not
    waiting for I/O) since boot."""
    name = "cpu" if core is None else f"cpu{core}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == name:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
            return (user + nice + system + irq + softirq + steal) / _TICKS
    raise LookupError(f"no {name} line in /proc/stat")


def children_cpu_seconds() -> float:
    """CPU time of this process's reaped children (the load generator runs)."""
    times = os.times()
    return times.children_user + times.children_system
