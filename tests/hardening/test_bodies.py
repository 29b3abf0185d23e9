"""Request bodies on every path (issue 15; SPEC section 2, "Hardening that holds on
every path"): a body over ``MAX_REQUEST_BYTES`` gets 413 without being read past the
limit, declared or chunked, and a body that does not arrive in time gets 408, on the
lean hot path and on Django's pages alike. Each attack runs on a raw socket against a
running gateway; "not read" is shown by the server answering while the body is still
unsent, and by it hanging up on the rest."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.proxy import conftest as proxy
from tests.proxy.conftest import Gateway
from tests.support.raw_http import RawClient

LIMIT = 65536
DEADLINE = 2  # REQUEST_BODY_TIMEOUT_SECONDS in these gateways
BOUNDED = {"MAX_REQUEST_BYTES": str(LIMIT), "REQUEST_BODY_TIMEOUT_SECONDS": str(DEADLINE)}
# A probe and the public API (Django), the admin (Django, a form), the hot path (lean).
PATHS = ["/health", "/v1/devices/register", "/admin/login/", "/v1/chat/completions"]
# What a chunked upload offers: far more than the server's and the kernel's
# buffers together hold, so sending it all means the server read it.
UPLOAD = 64 * 1024 * 1024
CHUNK = 64 * 1024


# The proxy tests' fixture (no conftest here: the other hardening files share the directory).
start_gateway = proxy.start_gateway


@pytest.fixture
def bounded(start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway(**BOUNDED)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = json.loads(self.body)["error"]
        return error


def head(path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(client: RawClient, timeout: float) -> Answer:
    """The response on ``client``'s connection (the server may hang up right after it)."""
    received = client.read_until(b"\r\n\r\n", timeout)
    head_end = received.index(b"\r\n\r\n") + 4
    status_line, *header_lines = received[: head_end - 4].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    headers = {name.lower(): value for name, value in headers.items()}
    length = int(headers.get("content-length", "0"))
    client.sock.settimeout(timeout)
    while len(client.received) < head_end + length:
        chunk = client.sock.recv(65536)
        if not chunk:
            break
        client.received += chunk
    return Answer(int(status_line.split()[1]), headers, client.received[head_end:])


def assert_refused(refused: Answer, status: int, code: str) -> None:
    assert refused.status == status, refused
    assert refused.error()["type"] == "invalid_request_error"
    assert refused.error()["code"] == code
    assert refused.headers["x-request-id"].startswith("req_")
    assert refused.headers["connection"] == "close"  # the rest of the body is not read


def push_chunks(client: RawClient, total: int) -> tuple[int, BaseException | None]:
    """Send up to ``total`` bytes of chunked body, never its end; stop when the server
    hangs up. Returns what was sent and why it stopped."""
    frame = b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"
    client.sock.settimeout(10)  # a server that neither reads nor hangs up fails the test
    sent = 0
    try:
        while sent < total:
            client.sock.sendall(frame)
            sent += CHUNK
    except (BrokenPipeError, ConnectionResetError) as error:
        return sent, error
    return sent, None


@pytest.mark.parametrize("path", PATHS)
def test_a_declared_body_over_the_limit_gets_413_before_a_byte_of_it_is_sent(
    bounded: Gateway, path: str
) -> None:
    client = RawClient(bounded.url)
    client.send(head(path, Content_Length=str(10**9)))  # and nothing of the gigabyte
    assert_refused(answer(client, timeout=5), 413, "request_too_large")
    assert "Traceback" not in bounded.logs()


@pytest.mark.parametrize("path", PATHS)
def test_a_chunked_body_gets_413_once_past_the_limit_and_the_rest_is_never_read(
    bounded: Gateway, path: str
) -> None:
    client = RawClient(bounded.url)
    client.send(head(path, Transfer_Encoding="chunked"))
    sent, stopped_by = push_chunks(client, UPLOAD)
    assert stopped_by is not None, f"the server took all {sent} bytes"
    assert sent < UPLOAD // 4
    assert_refused(answer(client, timeout=5), 413, "request_too_large")
    assert "Traceback" not in bounded.logs()


@pytest.mark.parametrize("path", PATHS)
def test_a_body_at_the_limit_is_read_declared_or_chunked(bounded: Gateway, path: str) -> None:
    body = b'{"pad": "' + b"x" * (LIMIT - 11) + b'"}'
    assert len(body) == LIMIT
    declared = RawClient(bounded.url)
    declared.send(head(path, Content_Length=str(LIMIT)) + body)
    chunked = RawClient(bounded.url)
    chunked.send(head(path, Transfer_Encoding="chunked"))
    chunked.send(b"%x\r\n" % 100 + body[:100] + b"\r\n")
    chunked.send(b"%x\r\n" % (LIMIT - 100) + body[100:] + b"\r\n0\r\n\r\n")
    for client in (declared, chunked):
        # Whatever the path answers a body it read (401, 400, 403 CSRF, 405), not a refusal.
        assert answer(client, timeout=5).status not in (408, 413)


@pytest.mark.parametrize("path", PATHS)
def test_a_body_trickling_in_gets_408_at_the_deadline(bounded: Gateway, path: str) -> None:
    client = RawClient(bounded.url)
    started = time.monotonic()
    client.send(head(path, Content_Length="100"))
    client.sock.settimeout(0.5)
    # A byte every half second: the body would take 50 s. Wait up to 10 s for an answer.
    while b"\r\n\r\n" not in client.received and time.monotonic() - started < DEADLINE + 8:
        try:
            client.sock.sendall(b"x")
            chunk = client.sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if not chunk:
            break
        client.received += chunk
    elapsed = time.monotonic() - started
    assert_refused(answer(client, timeout=1), 408, "request_timeout")
    assert DEADLINE - 0.2 <= elapsed <= DEADLINE + 3
    assert "Traceback" not in bounded.logs()


def test_a_body_that_arrives_in_parts_within_the_deadline_is_served(bounded: Gateway) -> None:
    body = json.dumps({"deviceName": "slow but honest", "platform": "linux", "version": "1"})
    client = RawClient(bounded.url)
    client.send(head("/v1/devices/register", Content_Length=str(len(body))) + body[:10].encode())
    time.sleep(DEADLINE / 4)
    client.send(body[10:].encode())
    registered = answer(client, timeout=5)
    assert registered.status == 201, registered
    assert json.loads(registered.body)["status"] == "pending_approval"
