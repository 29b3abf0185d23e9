"""``make demo`` (scripts/demo.sh): a first run that works without keys, as a newcomer runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ARTIFACTS, ROOT, base_environment, free_port, wait_until_healthy


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The demo serving on free ports, its data in a directory of this test's own."""
    env = {
        **base_environment(),
        "PY": sys.executable,
        "PORT": str(free_port()),
        "DEMO_PROVIDER_PORT": str(free_port()),
        "VAR_DIR": str(tmp_path / "demo"),
    }
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DIGITALOCEAN_API_KEY"):
        env.pop(name, None)  # a newcomer has none
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = (ARTIFACTS / f"demo-{env['PORT']}.log").open("wb")
    process = subprocess.Popen(
        ["bash", "scripts/demo.sh"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the script, the fake and uvicorn stop together
    )
    url = f"http://127.0.0.1:{env['PORT']}"
    try:
        wait_until_healthy(process, url, what="the demo")
        yield url, env
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_the_demo_registers_approves_and_chats_without_a_provider_key(
    demo: tuple[str, dict[str, str]],
) -> None:
    url, env = demo
    registered = httpx.post(
        f"{url}/v1/devices/register",
        json={"deviceName": "Ana laptop", "platform": "macos", "version": "1.0.0"},
        timeout=30,
    ).json()
    approved = subprocess.run(
        ["bash", "scripts/demo.sh", "manage", "approve_device", registered["deviceId"]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert approved.returncode == 0, approved.stderr
    assert "hanzo.W006" not in approved.stdout + approved.stderr  # the demo has its keys
    headers = {"Authorization": f"Bearer {registered['sessionToken']}"}
    body = {"model": "llama3-8b-instruct", "messages": [{"role": "user", "content": "Hello"}]}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, headers=headers
    ) as streamed:
        lines = [line for line in streamed.iter_lines() if line.startswith("data: ")]
    assert streamed.status_code == 200
    assert lines[-1] == "data: [DONE]" and len(lines) > 2
