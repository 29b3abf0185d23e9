"""A fake Slack Web API on 127.0.0.1 for alert tests.

A real HTTP server (``http.server`` in a thread), so slack-sdk's own HTTP
path is exercised: point ``SLACK_API_URL`` at ``fake.api_url``. It answers
``chat.postMessage`` like Slack (``{"ok": true, "channel", "ts",
"message"}``), records every message it accepted, and has fault switches:

* ``fail_with_status(500)`` — answer with that HTTP status;
* ``fail_with_error("channel_not_found")`` — HTTP 200 with ``ok: false``;
* ``hold()`` / ``release()`` — keep requests waiting until released (a slow
  or hung Slack), with ``wait_for_held(n)`` to know they arrived;
* ``heal()`` — back to normal.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest


@dataclass
class SlackMessage:
    channel: str
    text: str
    authorization: str


@dataclass
class FakeSlack:
    server: ThreadingHTTPServer
    messages: list[SlackMessage] = field(default_factory=list)
    requests: int = 0
    status: int = 200
    error: str | None = None
    gate: threading.Event = field(default_factory=threading.Event)
    held: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.gate.set()

    @property
    def api_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/api/"

    def texts(self) -> list[str]:
        with self.lock:
            return [message.text for message in self.messages]

    def fail_with_status(self, status: int) -> None:
        self.status = status

    def fail_with_error(self, error: str) -> None:
        self.error = error

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def heal(self) -> None:
        self.status, self.error = 200, None
        self.release()

    def stop(self) -> None:
        """Let held requests go, and close the server."""
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def wait_for_held(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.held >= count:
                    return
            time.sleep(0.01)
        raise TimeoutError(f"fewer than {count} requests reached the fake Slack")

    def wait_for_messages(self, count: int, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            texts = self.texts()
            if len(texts) >= count:
                return texts
            time.sleep(0.01)
        raise TimeoutError(f"expected {count} Slack messages, got {self.texts()}")


def _handler(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _payload(self) -> dict[str, Any]:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if "json" in (self.headers.get("Content-Type") or ""):
                payload: dict[str, Any] = json.loads(body or b"{}")
                return payload
            return {key: values[0] for key, values in parse_qs(body.decode()).items()}

        def _answer(self, status: int, data: dict[str, Any]) -> None:
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            payload = self._payload()
            with fake.lock:
                fake.requests += 1
                fake.held += 1
            fake.gate.wait(30)
            if not self.path.endswith("/chat.postMessage"):
                self._answer(200, {"ok": False, "error": "unknown_method"})
                return
            if fake.status != 200:
                self._answer(fake.status, {"ok": False, "error": "internal_error"})
                return
            if fake.error:
                self._answer(200, {"ok": False, "error": fake.error})
                return
            message = SlackMessage(
                channel=str(payload.get("channel", "")),
                text=str(payload.get("text", "")),
                authorization=self.headers.get("Authorization", ""),
            )
            with fake.lock:
                fake.messages.append(message)
                ts = f"{time.time():.6f}"
            self._answer(
                200,
                {
                    "ok": True,
                    "channel": message.channel,
                    "ts": ts,
                    "message": {"type": "message", "text": message.text, "ts": ts},
                },
            )

    return Handler


def start_fake_slack() -> FakeSlack:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    fake = FakeSlack(server=server)
    server.RequestHandlerClass = _handler(fake)
    threading.Thread(target=server.serve_forever, name="fake-slack", daemon=True).start()
    return fake


@pytest.fixture
def fake_slack(settings: Any) -> Iterator[FakeSlack]:
    """A running fake Slack, with the gateway's Slack settings pointing at it."""
    fake = start_fake_slack()
    settings.SLACK_API_URL = fake.api_url
    settings.SLACK_BOT_TOKEN = "xoxb-test-only-token-0000000000"
    settings.SLACK_CHANNEL = "#hanzo-test"
    try:
        yield fake
    finally:
        fake.stop()
